"""SessionPool: the return path with transactions, and dead or idle sessions replaced.

Through the real connector against the emulator; "rolled back", "replaced" and "kept
alive" are checked on the server (its transactions, sessions, heartbeats and tokens).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from snowflake.connector.errors import DatabaseError

from asyncsession import SessionBuilder, SessionExpiredError, SessionPool
from asyncsession._session import core_of
from asyncsession.testing import LocalSnowflake
from tests.helpers import both_backends, until
from tests.pool_support import builder_for, queries_of, server_session_ids

LONG = "select system$wait(30)"


@asynccontextmanager
async def pool_of_one(
    sf: LocalSnowflake, builder: SessionBuilder | None = None, **options: Any
) -> AsyncIterator[tuple[SessionPool, int]]:
    """A pool of one session, and that session's id (leased once, returned idle)."""
    async with (builder or builder_for(sf)).create_pool(min_size=1, max_size=1, **options) as pool:
        async with pool.session() as session:
            first = session.session_id
        yield pool, first


# ---- dead sessions, health checks, lifetimes -------------------------------------------


@pytest.mark.anyio
@both_backends
async def test_health_check_replaces_a_session_killed_on_the_server(
    local_snowflake: LocalSnowflake,
) -> None:
    async with pool_of_one(local_snowflake, health_check_after=0) as (pool, first):
        local_snowflake.delete_session(first)
        async with pool.session() as session:
            assert (await session.sql("select 7").collect())[0][0] == 7
            assert session.session_id != first
        stats = pool.stats()
        assert stats["replaced"] == 1
        assert stats["health_checks"] >= 1


@pytest.mark.anyio
@both_backends
async def test_first_statement_on_a_session_killed_just_now_is_retried(
    local_snowflake: LocalSnowflake, query_path: str
) -> None:
    """No health check (used a moment ago): the refused first statement is retried, on
    either path (5.x answers a refused ``asyncExec`` without the server's code)."""
    async with pool_of_one(local_snowflake, health_check_after=None) as (pool, first):
        local_snowflake.delete_session(first)
        async with pool.session() as session:
            rows = await session.collect_many(["select 1", "select 2", "select 3"])
            assert [r[0][0] for r in rows] == [1, 2, 3]
            assert session.session_id != first
        stats = pool.stats()
        assert stats["replaced"] == 1
        assert stats["retried_statements"] == 1
        async with pool.session() as again:
            assert again.session_id == session.session_id


@pytest.mark.anyio
async def test_a_refusal_after_the_lease_did_work_is_raised_not_retried(
    local_snowflake: LocalSnowflake,
) -> None:
    async with builder_for(local_snowflake).create_pool(
        min_size=1, max_size=1, health_check_after=None
    ) as pool:
        async with pool.session() as session:
            first = session.session_id
            await session.use_schema("PUBLIC")
            local_snowflake.delete_session(first)
            # Not retried: the lease's session state would be lost with the session.
            with pytest.raises(DatabaseError, match=r"390104|390112|390114|login again"):
                await session.sql("select 1").collect()
        async with pool.session() as session:  # discarded on return, replaced
            assert session.session_id != first
            assert (await session.sql("select 1").collect())[0][0] == 1


@pytest.mark.anyio
@both_backends
async def test_first_collect_nowait_on_a_session_killed_just_now_is_retried(
    local_snowflake: LocalSnowflake,
) -> None:
    """The job path has the rule of the awaited one: refused (never ran), submitted again."""
    async with pool_of_one(local_snowflake, health_check_after=None) as (pool, first):
        local_snowflake.delete_session(first)
        async with pool.session() as session:
            job = await session.sql("select 7").collect_nowait()
            assert session.session_id != first
            assert job.session is session
            assert await job.result() == [(7,)]
            assert (await session.sql("select 8").collect())[0][0] == 8
            fresh = session.session_id
        stats = pool.stats()
        assert (stats["replaced"], stats["retried_statements"]) == (1, 1)
        assert queries_of(local_snowflake, first) == []  # the refused submission made none
        assert [q["sql_text"] for q in queries_of(local_snowflake, fresh)] == [
            "select 7",
            "select 8",
        ]
        assert local_snowflake.running_queries() == []


@pytest.mark.anyio
@both_backends
async def test_a_collect_nowait_refused_after_the_lease_did_work_is_raised_not_retried(
    local_snowflake: LocalSnowflake,
) -> None:
    async with pool_of_one(local_snowflake, health_check_after=None) as (pool, first):
        async with pool.session() as session:
            await session.use_schema("PUBLIC")
            local_snowflake.delete_session(first)
            with pytest.raises(SessionExpiredError) as caught:
                await session.sql("select 1").collect_nowait()
            assert caught.value.errno == 390104
            assert session.session_id == first
        async with pool.session() as session:  # discarded on return, replaced
            assert session.session_id != first
        stats = pool.stats()
        assert (stats["replaced"], stats["retried_statements"]) == (1, 0)


@pytest.mark.anyio
@both_backends
async def test_collect_nowait_cancelled_during_its_retry_leaves_nothing_running(
    local_snowflake: LocalSnowflake,
) -> None:
    """Cancelled while the retried submission is in flight: its query is aborted, and
    nothing of the lease runs on either session."""
    async with pool_of_one(local_snowflake, health_check_after=None) as (pool, first):
        local_snowflake.delete_session(first)
        local_snowflake.set_latency(300)  # every request: the submission stays in flight
        submitted: list[object] = []
        try:
            async with pool.session() as session:
                core = core_of(session)
                dead = core.connection

                async def submit() -> None:
                    submitted.append(await session.sql(LONG).collect_nowait())

                def resubmitting() -> bool:
                    # The fresh connection is swapped in, and a thread sends its submission.
                    calls = [q.call for q in core.registry.snapshot()]
                    sent = any(c is not None and c.is_started for c in calls)
                    return core.connection is not dead and sent

                async with anyio.create_task_group() as tg:
                    tg.start_soon(submit)
                    await until(resubmitting)
                    tg.cancel_scope.cancel()
                fresh = session.session_id
                assert submitted == []
                assert session.running_queries == ()
        finally:
            local_snowflake.set_latency(0)
        # The abort waited for the submission to return, then went by its query id.
        mine = [q for q in queries_of(local_snowflake, fresh) if q["sql_text"] == LONG]
        assert len(mine) == 1
        assert mine[0]["status"] == "ABORTED"
        await until(lambda: local_snowflake.worker_stopped(mine[0]["query_id"]))
        assert local_snowflake.running_queries() == []
        assert pool.stats()["replaced"] == 1


@pytest.mark.anyio
async def test_health_check_only_for_sessions_idle_past_the_threshold(
    local_snowflake: LocalSnowflake,
) -> None:
    async with builder_for(local_snowflake).create_pool(
        min_size=1, max_size=1, health_check_after=3600
    ) as pool:
        for _ in range(3):
            async with pool.session():
                pass
        assert pool.stats()["health_checks"] == 0
    async with builder_for(local_snowflake).create_pool(
        min_size=1, max_size=1, health_check_after=0
    ) as pool:
        async with pool.session() as session:
            session_id = session.session_id
        assert pool.stats()["health_checks"] == 1
        assert [q["sql_text"] for q in queries_of(local_snowflake, session_id)] == ["select 1"]


@pytest.mark.anyio
async def test_max_lifetime_replaces_on_return_and_max_idle_shrinks(
    local_snowflake: LocalSnowflake,
) -> None:
    async with builder_for(local_snowflake).create_pool(
        min_size=1, max_size=1, max_lifetime=0.2
    ) as pool:
        async with pool.session() as session:
            first = session.session_id
            await session.sql("select system$wait(0.3)").collect()  # outlives max_lifetime
        await until(lambda: first not in server_session_ids(local_snowflake))
        async with pool.session() as session:
            assert session.session_id != first
    async with builder_for(local_snowflake).create_pool(
        min_size=0, max_size=2, max_idle=0.2
    ) as pool:
        async with pool.session() as a, pool.session():
            ids = {a.session_id}
        await until(lambda: pool.stats()["size"] == 0)
        assert pool.stats()["closed_idle"] == 2
        await until(lambda: not ids & server_session_ids(local_snowflake))  # logged out


# ---- transactions and idleness (with per-session transactions and token clocks) ---------


@pytest.mark.anyio
@both_backends
async def test_open_transaction_rolled_back_on_return(local_snowflake: LocalSnowflake) -> None:
    table = f"T_{uuid.uuid4().hex[:8]}"
    async with builder_for(local_snowflake).create_pool(min_size=1, max_size=1) as pool:
        async with pool.session() as session:
            first = session.session_id
            await session.sql(f"create table {table} (n int)").collect()
            await session.sql("begin").collect()
            await session.sql(f"insert into {table} values (1)").collect()
            assert session.in_transaction
            assert local_snowflake.session(first)["transaction_id"] is not None
        assert local_snowflake.session(first)["transaction_id"] is None
        async with pool.session() as session:
            assert session.session_id == first  # rolled back, kept
            assert not session.in_transaction
            assert await session.sql(f"select count(*) from {table}").collect() == [(0,)]
        assert "rollback" in [q["sql_text"].lower() for q in queries_of(local_snowflake, first)]


@pytest.mark.anyio
@both_backends
async def test_transaction_cancelled_inside_a_lease(local_snowflake: LocalSnowflake) -> None:
    table = f"T_{uuid.uuid4().hex[:8]}"
    async with builder_for(local_snowflake).create_pool(min_size=1, max_size=1) as pool:
        async with pool.session() as session:
            await session.sql(f"create table {table} (n int)").collect()
        with anyio.move_on_after(0.3):
            async with pool.session() as session, session.transaction():
                await session.sql(f"insert into {table} values (1)").collect()
                await session.sql("select system$wait(30)").collect()
        async with pool.session() as session:
            assert await session.sql(f"select count(*) from {table}").collect() == [(0,)]
            async with session.transaction():
                await session.sql(f"insert into {table} values (2)").collect()
            assert await session.sql(f"select n from {table}").collect() == [(2,)]
        assert pool.stats()["replaced"] == 0
        assert local_snowflake.running_queries() == []


MASTER_SECONDS = 4.0


@pytest.fixture
def short_lived(shared_emulator: LocalSnowflake) -> LocalSnowflake:
    """The shared emulator with short token lifetimes (back to Snowflake's after the test)."""
    shared_emulator.set_token_validity(session=1.0, master=MASTER_SECONDS)
    return shared_emulator


@pytest.mark.anyio
async def test_idle_pooled_session_kept_alive_past_the_idle_limit(
    short_lived: LocalSnowflake,
) -> None:
    async with pool_of_one(short_lived, health_check_after=None) as (pool, first):
        idle_since = anyio.current_time()
        await until(
            lambda: (
                anyio.current_time() - idle_since > MASTER_SECONDS * 1.5
                and short_lived.session(first)["heartbeats"] >= 3
            ),
            MASTER_SECONDS * 10,
        )
        assert not short_lived.session(first)["master_expired"]
        async with pool.session() as session:
            assert session.session_id == first
            assert (await session.sql("select 1").collect())[0][0] == 1
        assert pool.stats()["replaced"] == 0


@pytest.mark.anyio
@both_backends
@pytest.mark.parametrize("first_statement", ["collect", "collect_nowait"])
async def test_idle_session_dead_of_its_master_token_is_replaced_unseen(
    short_lived: LocalSnowflake, first_statement: str
) -> None:
    """Keep-alive off, no health check: the first statement is refused (390114; 5.x:
    ReauthenticationRequest), retried, awaited or submitted as a job."""
    builder = builder_for(short_lived, client_session_keep_alive=False)
    async with pool_of_one(short_lived, builder, health_check_after=None) as (pool, first):
        await until(lambda: short_lived.session(first)["idle"] > MASTER_SECONDS + 0.5, 30)
        async with pool.session() as session:
            query = session.sql("select 1")
            if first_statement == "collect":
                assert (await query.collect())[0][0] == 1
            else:
                assert await (await query.collect_nowait()).result() == [(1,)]
            assert session.session_id != first
            assert session.is_alive
        stats = pool.stats()
        assert (stats["replaced"], stats["retried_statements"]) == (1, 1)
