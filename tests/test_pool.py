"""SessionPool through the real connector against the emulator: leases, return, replacement.

Every "aborted", "logged out" and "which session" is checked on the server.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from snowflake.connector.errors import OperationalError

from asyncsession import (
    AsyncSession,
    ConfigurationError,
    PoolClosedError,
    PoolTimeout,
    SessionClosedError,
    SessionPool,
    TooManyRequests,
)
from asyncsession.testing import LocalSnowflake
from tests.helpers import both_backends, until
from tests.pool_support import (
    builder_for,
    queries_of,
    server_session_ids,
)


async def hold(pool: SessionPool, entered: anyio.Event, release: anyio.Event) -> None:
    async with pool.session():
        entered.set()
        await release.wait()


# ---- creation, leasing, stats ----------------------------------------------------------


@pytest.mark.anyio
@both_backends
async def test_min_size_logged_in_at_creation_and_grows_on_demand(
    local_snowflake: LocalSnowflake,
) -> None:
    before = server_session_ids(local_snowflake)
    async with builder_for(local_snowflake).create_pool(min_size=2, max_size=3) as pool:
        assert isinstance(pool, SessionPool)
        assert pool.stats()["size"] == 2
        assert pool.stats()["idle"] == 2
        assert len(server_session_ids(local_snowflake) - before) == 2
        async with pool.session() as a, pool.session() as b, pool.session() as c:
            assert len({a.session_id, b.session_id, c.session_id}) == 3
            assert isinstance(a, AsyncSession)
            stats = pool.stats()
            assert (stats["size"], stats["leased"], stats["idle"]) == (3, 3, 0)
            rows = await c.sql("select ? + 1", [1]).collect()
            assert rows[0][0] == 2
        stats = pool.stats()
        assert (stats["leased"], stats["idle"], stats["logins"]) == (0, 3, 3)
        mine = server_session_ids(local_snowflake) - before
        assert len(mine) == 3
    assert pool.is_closed
    assert not mine & server_session_ids(local_snowflake)


@pytest.mark.anyio
async def test_awaited_pool_and_close_alias(local_snowflake: LocalSnowflake) -> None:
    pool = await builder_for(local_snowflake).create_pool(min_size=1, max_size=1)
    async with pool.session() as session:
        assert (await session.sql("select 1").collect())[0][0] == 1
    await pool.close()
    await pool.aclose()  # idempotent
    assert pool.stats()["size"] == 0


@pytest.mark.anyio
async def test_stats_names(local_snowflake: LocalSnowflake) -> None:
    async with builder_for(local_snowflake).create_pool(min_size=1, max_size=2) as pool:
        stats = pool.stats()
    assert set(stats) >= {
        "min_size",
        "max_size",
        "size",
        "leased",
        "idle",
        "waiting",
        "connecting",
        "logins",
        "failed_logins",
        "replaced",
        "requests",
        "requests_waited",
        "requests_timed_out",
        "requests_refused",
        "health_checks",
        "last_login_error",
    }


# ---- isolation and the return path -------------------------------------------------------


@pytest.mark.anyio
@both_backends
async def test_use_schema_in_one_lease_is_invisible_to_the_next(
    local_snowflake: LocalSnowflake,
) -> None:
    schema = f"S_{uuid.uuid4().hex[:8]}".upper()
    async with builder_for(local_snowflake).create_pool(min_size=1, max_size=1) as pool:
        async with pool.session() as session:
            first = session.session_id
            await session.sql(f"create schema if not exists {schema}").collect()
            await session.use_schema(schema)
            await session.set_query_tag("lease-one")
            assert await session.get_current_schema() == schema
        async with pool.session() as session:
            assert session.session_id == first  # the same session, reset
            assert await session.get_current_schema() == "PUBLIC"
            assert await session.get_current_database() == "TEST_DB"
            assert session.query_tag is None
        restore = [q["sql_text"] for q in queries_of(local_snowflake, first)]
        assert 'use schema "TEST_DB"."PUBLIC"' in restore
        assert pool.stats()["replaced"] == 0


@pytest.mark.anyio
async def test_no_round_trip_on_a_clean_return(local_snowflake: LocalSnowflake) -> None:
    async with builder_for(local_snowflake).create_pool(
        min_size=1, max_size=1, health_check_after=None
    ) as pool:
        async with pool.session() as session:
            session_id = session.session_id
            before = len(queries_of(local_snowflake, session_id))
            await session.sql("select 1").collect()
        async with pool.session():
            pass
        assert len(queries_of(local_snowflake, session_id)) == before + 1


@pytest.mark.anyio
@both_backends
async def test_lease_exit_aborts_its_running_queries_and_jobs(
    local_snowflake: LocalSnowflake,
) -> None:
    marker = uuid.uuid4().hex
    async with builder_for(local_snowflake).create_pool(min_size=1, max_size=1) as pool:
        async with pool.session() as session:
            session_id = session.session_id
            job = await session.sql(f"select system$wait(30) -- {marker} job").collect_nowait()
        (query,) = [q for q in local_snowflake.queries() if marker in q["sql_text"]]
        assert query["query_id"] == job.query_id
        assert query["status"] == "ABORTED"
        assert not [q for q in local_snowflake.running_queries() if q["session_id"] == session_id]
        async with pool.session() as session:  # the same session, usable
            assert session.session_id == session_id
            assert (await session.sql("select 2").collect())[0][0] == 2
        assert pool.stats()["replaced"] == 0


@pytest.mark.anyio
@both_backends
async def test_cancelled_lessee_aborts_its_query_and_returns_the_session(
    local_snowflake: LocalSnowflake,
) -> None:
    marker = uuid.uuid4().hex
    async with builder_for(local_snowflake).create_pool(min_size=1, max_size=1) as pool:
        with anyio.move_on_after(0.3):
            async with pool.session() as session:
                await session.sql(f"select system$wait(30) -- {marker}").collect()
        (query,) = [q for q in local_snowflake.queries() if marker in q["sql_text"]]
        assert query["status"] == "ABORTED"
        stats = pool.stats()
        assert (stats["size"], stats["idle"], stats["replaced"]) == (1, 1, 0)


@pytest.mark.anyio
async def test_alter_session_parameters_discards_and_replaces(
    local_snowflake: LocalSnowflake,
) -> None:
    async with builder_for(local_snowflake).create_pool(min_size=1, max_size=1) as pool:
        async with pool.session() as session:
            first = session.session_id
            await session.sql("alter session set statement_timeout_in_seconds = 100").collect()
        await until(lambda: first not in server_session_ids(local_snowflake))
        async with pool.session() as session:
            assert session.session_id != first
        assert pool.stats()["replaced"] == 1


@pytest.mark.anyio
async def test_lessee_aclose_discards_that_session(local_snowflake: LocalSnowflake) -> None:
    async with builder_for(local_snowflake).create_pool(min_size=1, max_size=2) as pool:
        async with pool.session() as session:
            first = session.session_id
            await session.aclose()
            with pytest.raises(SessionClosedError):
                await session.sql("select 1").collect()
        assert first not in server_session_ids(local_snowflake)
        async with pool.session() as session:
            assert session.session_id != first
            assert not session.is_closed
        await until(lambda: pool.stats()["size"] == 1)


# ---- exclusivity and waiting -------------------------------------------------------------


@pytest.mark.anyio
@both_backends
async def test_no_session_is_ever_leased_twice_under_200_lessees(
    local_snowflake: LocalSnowflake,
) -> None:
    in_use: set[int] = set()
    overlaps: list[int] = []
    served: list[int] = []

    async def lessee(i: int) -> None:
        async with pool.session(timeout=60) as session:
            sid = session.session_id
            if sid in in_use:
                overlaps.append(sid)
            in_use.add(sid)
            await session.sql(f"select {i}").collect()
            await anyio.lowlevel.checkpoint()
            in_use.discard(sid)
            served.append(sid)

    async with builder_for(local_snowflake).create_pool(min_size=2, max_size=8) as pool:
        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(lessee, i)
        assert overlaps == []
        assert len(served) == 200
        stats = pool.stats()
        assert stats["size"] <= 8
        assert stats["leased"] == 0
        assert stats["waiting"] == 0
        # The server's record: each query ran in one of the pool's sessions, one at a time
        # per session (the emulator refuses two at once on one session: "connection busy").
        sessions = set(served)
    assert len(sessions) <= 8
    assert not [q for q in local_snowflake.queries() if q.get("error") and "busy" in str(q)]


@pytest.mark.anyio
@both_backends
async def test_pool_timeout_when_no_session_frees_up(local_snowflake: LocalSnowflake) -> None:
    async with builder_for(local_snowflake).create_pool(min_size=1, max_size=1) as pool:
        entered, release = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(hold, pool, entered, release)
            await entered.wait()
            with pytest.raises(PoolTimeout, match=r"within 0\.2 s.*1 leased") as caught:
                async with pool.session(timeout=0.2):
                    pass
            assert isinstance(caught.value, OperationalError)
            release.set()
        stats = pool.stats()
        assert stats["requests_timed_out"] == 1
        assert stats["waiting"] == 0
        async with pool.session(timeout=5):
            pass


@pytest.mark.anyio
async def test_max_waiting_refuses_at_once(local_snowflake: LocalSnowflake) -> None:
    async with builder_for(local_snowflake).create_pool(
        min_size=1, max_size=1, max_waiting=1
    ) as pool:
        entered, release = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(hold, pool, entered, release)
            await entered.wait()
            tg.start_soon(hold, pool, anyio.Event(), release)
            await until(lambda: pool.stats()["waiting"] == 1)
            with anyio.fail_after(5), pytest.raises(TooManyRequests, match="max_waiting=1"):
                async with pool.session(timeout=30):
                    pass
            release.set()
        assert pool.stats()["requests_refused"] == 1


@pytest.mark.anyio
@both_backends
async def test_waiters_are_served_first_come_first_served(
    local_snowflake: LocalSnowflake,
) -> None:
    order: list[int] = []

    async def waiter(i: int) -> None:
        async with pool.session(timeout=30):
            order.append(i)

    async with builder_for(local_snowflake).create_pool(min_size=1, max_size=1) as pool:
        entered, release = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(hold, pool, entered, release)
            await entered.wait()
            for i in range(6):
                tg.start_soon(waiter, i)
                await until(lambda i=i: pool.stats()["waiting"] == i + 1)  # type: ignore[misc]
            release.set()
    assert order == list(range(6))


# ---- logins: failures, backoff, SSO -----------------------------------------------------


@pytest.mark.anyio
async def test_first_login_failure_is_raised_and_nothing_stays_logged_in(
    local_snowflake: LocalSnowflake,
) -> None:
    before = server_session_ids(local_snowflake)
    with pytest.raises(Exception, match="Incorrect username or password") as caught:
        await builder_for(local_snowflake, password="wrong-secret").create_pool(min_size=3)
    assert "wrong-secret" not in str(caught.value)
    assert server_session_ids(local_snowflake) == before


@pytest.mark.anyio
@both_backends
async def test_login_storm_against_a_failing_server_backs_off(
    shared_emulator: LocalSnowflake,
) -> None:
    emulator = shared_emulator
    failed_before = sum(emulator.counters()["failed_logins"].values())
    async with builder_for(emulator).create_pool(min_size=0, max_size=5) as pool:
        emulator.fail_next("login-request", status=403, count=10_000)
        errors: list[Exception] = []

        async def lessee() -> None:
            try:
                async with pool.session(timeout=2.5):
                    pass
            except PoolTimeout as e:
                errors.append(e)

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(lessee)
        assert len(errors) == 20
        assert "the last login failed" in str(errors[0])
        assert emulator.connection_parameters["password"] not in str(errors[0])
        failed = pool.stats()["failed_logins"]
        # Backoff (1 s, 2 s, … after the first failures): a handful, not a hot loop.
        assert 1 <= failed <= 10, failed
        # The server's count: each connector login may retry a refused request a few times.
        at_server = sum(emulator.counters()["failed_logins"].values()) - failed_before
        assert failed <= at_server <= failed * 6, (failed, at_server)
        emulator.clear_faults()
        pool._logins.next_at = 0.0  # let the test skip the remaining backoff
        async with pool.session(timeout=30) as session:
            assert (await session.sql("select 1").collect())[0][0] == 1
        assert pool.stats()["last_login_error"] is None


@pytest.mark.anyio
async def test_externalbrowser_logins_are_serialised_one_prompt(
    local_snowflake: LocalSnowflake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fake browser at the connector boundary: a login without a cached ID token prompts."""
    from asyncsession._driver import get_driver

    driver_type = type(get_driver())
    real_connect = driver_type.connect
    prompts: list[int] = []
    token_cache: dict[str, str] = {}
    at_once = 0
    most_at_once = 0

    def fake_connect(self: Any, kwargs: dict[str, Any]) -> Any:
        nonlocal at_once, most_at_once
        assert kwargs.pop("authenticator") == "externalbrowser"
        assert kwargs.get("client_store_temporary_credential") is True
        at_once += 1
        most_at_once = max(most_at_once, at_once)
        try:
            if "id_token" not in token_cache:
                prompts.append(1)  # the browser window
                token_cache["id_token"] = "cached"
            kwargs.pop("client_store_temporary_credential")
            return real_connect(self, kwargs)
        finally:
            at_once -= 1

    monkeypatch.setattr(driver_type, "connect", fake_connect)
    builder = builder_for(local_snowflake, authenticator="externalbrowser")
    async with builder.create_pool(min_size=4, max_size=6) as pool:
        release = anyio.Event()
        async with anyio.create_task_group() as tg:
            for _ in range(6):  # six at once: the pool grows by two more logins
                tg.start_soon(hold, pool, anyio.Event(), release)
            await until(lambda: pool.stats()["leased"] == 6)
            release.set()
        assert pool.stats()["logins"] == 6
    assert prompts == [1]
    assert most_at_once == 1


# ---- options and closing -----------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"min_size": 3, "max_size": 2}, "min_size"),
        ({"max_size": 0}, "max_size"),
        ({"min_size": -1}, "min_size"),
        ({"max_size": True}, "max_size"),
        ({"max_size": 2.5}, "max_size"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1.0}, "timeout"),
        ({"timeout": float("nan")}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"max_lifetime": "1h"}, "max_lifetime"),
        ({"max_idle": 0}, "max_idle"),
        ({"max_waiting": -1}, "max_waiting"),
        ({"health_check_after": -1}, "health_check_after"),
        ({"max_concurrent_logins": 0}, "max_concurrent_logins"),
        ({"max_sise": 3}, "max_sise.*did you mean 'max_size'"),
    ],
)
async def test_bad_options_are_one_configuration_error_before_any_login(
    local_snowflake: LocalSnowflake, options: dict[str, Any], named: str
) -> None:
    before = server_session_ids(local_snowflake)
    with pytest.raises(ConfigurationError, match=named):
        builder_for(local_snowflake).create_pool(**options)
    assert server_session_ids(local_snowflake) == before


@pytest.mark.anyio
async def test_bad_lease_timeout(local_snowflake: LocalSnowflake) -> None:
    async with builder_for(local_snowflake).create_pool(min_size=0, max_size=1) as pool:
        with pytest.raises(ConfigurationError, match="timeout"):
            pool.session(timeout=0)


@pytest.mark.anyio
@both_backends
async def test_closed_pool_refuses_leases_and_wakes_waiters(
    local_snowflake: LocalSnowflake,
) -> None:
    pool = await builder_for(local_snowflake).create_pool(min_size=1, max_size=1)
    entered, release = anyio.Event(), anyio.Event()
    waiter_error: list[BaseException] = []

    async def waiter() -> None:
        try:
            async with pool.session(timeout=30):
                pass
        except PoolClosedError as e:
            waiter_error.append(e)

    async with anyio.create_task_group() as tg:
        tg.start_soon(hold, pool, entered, release)
        await entered.wait()
        tg.start_soon(waiter)
        await until(lambda: pool.stats()["waiting"] == 1)
        await pool.aclose()
        release.set()
    assert len(waiter_error) == 1
    with pytest.raises(PoolClosedError, match="cannot lease a session: the session pool is closed"):
        async with pool.session():
            pass
    assert isinstance(waiter_error[0], SessionClosedError)


@pytest.mark.anyio
@both_backends
async def test_aclose_aborts_leased_queries_and_logs_everything_out(
    local_snowflake: LocalSnowflake,
) -> None:
    marker = uuid.uuid4().hex
    before = server_session_ids(local_snowflake)
    pool = await builder_for(local_snowflake, cancel_timeout=2).create_pool(min_size=3, max_size=3)
    outcome: list[BaseException] = []

    async def long_query() -> None:
        try:
            async with pool.session() as session:
                await session.sql(f"select system$wait(30) -- {marker}").collect()
        except Exception as e:
            outcome.append(e)

    async with anyio.create_task_group() as tg:
        tg.start_soon(long_query)
        await until(
            lambda: [q for q in local_snowflake.running_queries() if marker in q["sql_text"]]
        )
        started = anyio.current_time()
        await pool.aclose()
        elapsed = anyio.current_time() - started
    assert elapsed < 2 * 2 + 5  # abort + logout, each bounded by cancel_timeout (generous)
    (query,) = [q for q in local_snowflake.queries() if marker in q["sql_text"]]
    assert query["status"] == "ABORTED"
    assert len(outcome) == 1
    assert server_session_ids(local_snowflake) == before
    assert local_snowflake.running_queries() == []


@pytest.mark.anyio
@both_backends
async def test_local_testing_pool(anyio_backend: str) -> None:
    from asyncsession import Session

    async with (
        Session.builder.config("local_testing", True).create_pool(min_size=2, max_size=2) as pool,
        pool.session() as a,
        pool.session() as b,
    ):
        assert a.session_id != b.session_id
        assert (await a.sql("select 5").collect())[0][0] == 5
