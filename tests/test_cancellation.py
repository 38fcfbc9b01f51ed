"""Cancellation: a cancelled await never leaves a query running on the server.

Every test checks the server (through the emulator's inspection API and through
QUERY_HISTORY in SQL), and runs on asyncio and trio.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import anyio
import anyio.to_thread
import pytest
from snowflake.connector.errors import ProgrammingError

from asyncsession import AsyncSession, QueryCancelledError, Session, SessionClosedError
from asyncsession._session import core_of
from asyncsession.testing import LocalSnowflake
from tests.helpers import both_backends, running_in_session, session_for, until, wait_running

pytestmark = [pytest.mark.anyio, both_backends]

LONG = "select system$wait(30)"


async def collect_until_cancelled(session: AsyncSession, sql: str = LONG) -> None:
    with pytest.raises(QueryCancelledError):
        await session.sql(sql).collect()


async def collect_recording(session: AsyncSession, errors: list[BaseException]) -> None:
    """Collect a long query; record the QueryCancelledError it ends with."""
    try:
        await session.sql(LONG).collect()
    except QueryCancelledError as e:
        errors.append(e)


async def test_timeout_aborts_on_server_and_reraises(local_snowflake: LocalSnowflake) -> None:
    async with await session_for(local_snowflake) as session:
        with anyio.move_on_after(0.3) as scope:
            await session.sql(LONG).collect()
        assert scope.cancelled_caught
        assert session.running_queries == ()
        mine = [
            q
            for q in local_snowflake.queries()
            if q["session_id"] == session.session_id and q["sql_text"] == LONG
        ]
        assert [q["status"] for q in mine] == ["ABORTED"]
        assert running_in_session(local_snowflake.connection_parameters, session.session_id) == []
        # The session is still usable.
        assert (await session.sql("select 1").collect())[0][0] == 1


async def test_fail_after_raises_timeout_and_aborts(
    snowflake_connection_parameters: dict[str, Any],
) -> None:
    params = snowflake_connection_parameters  # live mode too: asserts through SQL only
    async with Session.builder.configs(params).create() as session:
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.3):
                await session.sql(LONG).collect()
        assert running_in_session(params, session.session_id) == []


async def test_cancelling_a_task_aborts_its_query(local_snowflake: LocalSnowflake) -> None:
    async with await session_for(local_snowflake) as session:
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.sql(LONG).collect)
            await wait_running(local_snowflake, session, 1)
            assert len(session.running_queries) == 1
            tg.cancel_scope.cancel()
        assert session.running_queries == ()
        assert running_in_session(local_snowflake.connection_parameters, session.session_id) == []


async def test_task_group_failure_aborts_siblings(local_snowflake: LocalSnowflake) -> None:
    async with await session_for(local_snowflake) as session:
        with pytest.raises(ProgrammingError) as info:
            await session.collect_many([LONG, LONG, LONG, "select no_such_function()"])
        assert info.value.errno == 2003
        assert session.running_queries == ()
        assert running_in_session(local_snowflake.connection_parameters, session.session_id) == []


async def test_cancel_all_gives_query_cancelled_error(local_snowflake: LocalSnowflake) -> None:
    async with await session_for(local_snowflake) as session:
        errors: list[BaseException] = []
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(collect_recording, session, errors)
            await wait_running(local_snowflake, session, 3)
            await session.cancel_all()
        assert len(errors) == 3
        assert all(isinstance(e, ProgrammingError) and e.errno == 604 for e in errors)
        assert all(e.reason == "cancel_all()" for e in errors if isinstance(e, QueryCancelledError))
        assert running_in_session(local_snowflake.connection_parameters, session.session_id) == []


async def test_cancel_all_ends_the_queries_of_a_fan_out_still_waiting_their_turn(
    local_snowflake: LocalSnowflake,
) -> None:
    # A fan-out starts over several loop turns (the executor's turnstile): those still
    # waiting their turn when cancel_all() comes end with it, and never start after.
    async with await session_for(local_snowflake) as session:
        turnstile = core_of(session).runner.turnstile
        errors: list[BaseException] = []
        parked = 0

        async def one() -> None:
            try:
                await session.sql("select system$wait(2)").collect()
            except QueryCancelledError as e:
                errors.append(e)

        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(one)
            with anyio.fail_after(10):
                while not (len(core_of(session).runner.registry) and turnstile.waiting):
                    await anyio.lowlevel.checkpoint()
            parked = turnstile.waiting  # cancel_all() turns these away before its first await
            await session.cancel_all()
        # Those parked and those in flight; a query between its turn and its first
        # request when cancel_all() came may have run (as before the turnstile existed).
        assert len(errors) >= parked > 0
        assert all(isinstance(e, QueryCancelledError) for e in errors)
        assert all(e.reason == "cancel_all()" for e in errors if isinstance(e, QueryCancelledError))
        assert turnstile.waiting == 0
        assert running_in_session(local_snowflake.connection_parameters, session.session_id) == []


async def test_job_cancel_gives_query_cancelled_error(local_snowflake: LocalSnowflake) -> None:
    async with await session_for(local_snowflake) as session:
        job = await session.sql(LONG).collect_nowait()
        assert [q.query_id for q in session.running_queries] == [job.query_id]
        await job.cancel()
        assert local_snowflake.query(job.query_id)["status"] == "ABORTED"
        with pytest.raises(QueryCancelledError) as info:
            await job.result()
        assert info.value.reason == "job.cancel()"
        assert await job.status() == "ABORTED"
        assert session.running_queries == ()


async def test_cancelled_job_result_aborts_the_job(local_snowflake: LocalSnowflake) -> None:
    async with await session_for(local_snowflake) as session:
        job = await session.sql(LONG).collect_nowait()
        with anyio.move_on_after(0.2):
            await job.result()
        assert local_snowflake.query(job.query_id)["status"] == "ABORTED"


async def test_aclose_aborts_everything_and_logs_out(local_snowflake: LocalSnowflake) -> None:
    session = await session_for(local_snowflake)  # plain create(), no context manager
    session_id = session.session_id
    outcomes: list[BaseException] = []
    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(collect_recording, session, outcomes)
        job = await session.sql(LONG).collect_nowait()
        await wait_running(local_snowflake, session, 11)
        await session.aclose()
    assert len(outcomes) == 10
    assert session.is_closed
    assert local_snowflake.query(job.query_id)["status"] == "ABORTED"
    assert running_in_session(local_snowflake.connection_parameters, session_id) == []
    assert session_id not in [s["session_id"] for s in local_snowflake.sessions()]


async def test_aclose_logs_out_even_with_an_async_query_it_does_not_know(
    local_snowflake: LocalSnowflake,
) -> None:
    # Connector 4.x alone keeps a session logged in while any query it submitted with
    # asyncExec runs; aclose() promises a logout.
    session = await session_for(local_snowflake)
    session_id = session.session_id
    cursor = session.connection.cursor()
    cursor.execute_async("select system$wait(1)")  # behind asyncsession's back
    query_id = cursor.sfqid
    await session.aclose()
    assert session_id not in [s["session_id"] for s in local_snowflake.sessions()]
    # (On Snowflake a logged-out session's queries run on; let it end.)
    await until(lambda: local_snowflake.query(query_id)["status"] != "RUNNING", 10)


async def test_open_and_closed_sessions_leave_nothing_behind_in_the_connector(
    local_snowflake: LocalSnowflake,
) -> None:
    def session_managers() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o).__name__ == "SessionManager")

    async with await session_for(local_snowflake):
        pass  # warm-up: whatever the connector creates once
    before = session_managers()
    for _ in range(10):
        async with await session_for(local_snowflake) as session:
            await session.sql("select 1").collect()
    # Connector 4.x's detect_platforms cache kept one per login (asyncsession empties it);
    # allow for a stray one still referenced by an earlier test's abandoned thread.
    assert session_managers() - before < 3


async def test_aclose_waits_for_an_abort_already_in_flight_before_logging_out(
    local_snowflake: LocalSnowflake,
) -> None:
    # job.cancel() posts its abort; an aclose() right after must not log out under it
    # (the abort would then fail with "must login again" and the query run on).
    sf = local_snowflake
    session = await session_for(sf, cancel_timeout=10)
    session_id = session.session_id
    job = await session.sql(LONG).collect_nowait()
    query = session.running_queries[0]
    try:
        sf.blackhole("query-request")  # where a job's abort (system$cancel_query) goes
        async with anyio.create_task_group() as tg:
            tg.start_soon(job.cancel)
            await until(lambda: query.abort_answered is not None)
            tg.start_soon(session.aclose)
            await until(lambda: session.is_closed)
            sf.clear_faults()  # the held abort gets a 503, and the connector retries it
    finally:
        sf.clear_faults()
    assert sf.query(job.query_id)["status"] == "ABORTED"
    assert sf.query(job.query_id)["abort_requests"] == 1  # aclose() posted none of its own
    assert session_id not in [s["session_id"] for s in sf.sessions()]


async def test_aclose_is_idempotent_concurrent_and_works_when_cancelled(
    local_snowflake: LocalSnowflake,
) -> None:
    session = await session_for(local_snowflake)
    session_id = session.session_id
    async with anyio.create_task_group() as tg:
        tg.start_soon(collect_until_cancelled, session)
        await wait_running(local_snowflake, session, 1)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await session.aclose()  # shielded: completes inside a cancelled scope
        tg.start_soon(session.aclose)
        tg.start_soon(session.close)
    await session.aclose()
    assert session_id not in [s["session_id"] for s in local_snowflake.sessions()]
    assert running_in_session(local_snowflake.connection_parameters, session_id) == []


async def test_closed_session_errors_name_the_operation(local_snowflake: LocalSnowflake) -> None:
    session = await session_for(local_snowflake)
    await session.aclose()
    with pytest.raises(SessionClosedError, match="collect a query"):
        await session.sql("select 1").collect()
    with pytest.raises(SessionClosedError, match="submit a query"):
        await session.sql("select 1").collect_nowait()
    with pytest.raises(SessionClosedError, match="stream a query"):
        async for _ in session.sql("select 1").to_local_iterator():
            pass


async def test_jobs_and_streams_overtaken_by_aclose_say_so(local_snowflake: LocalSnowflake) -> None:
    session = await session_for(local_snowflake)
    job = await session.sql("select 1").collect_nowait()
    stream = session.sql("select range as n from range(200000)").to_pandas_batches()
    first = await stream.__anext__()  # the query has run; batches come from its cursor
    assert len(first) > 0
    await session.aclose()
    for poll in (job.status, job.is_done):
        with pytest.raises(SessionClosedError, match="poll a job"):
            await poll()
    # 4.x goes on fetching the rest; 5.x refuses once its connection is closed.
    outcome: BaseException | None = None
    try:
        async for _ in stream:
            pass
    except Exception as e:
        outcome = e
    assert outcome is None or (
        isinstance(outcome, SessionClosedError) and "stream a query" in str(outcome)
    ), repr(outcome)


async def test_aclose_is_bounded_when_aborts_are_blackholed(
    shared_emulator: LocalSnowflake, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = shared_emulator
    session = await session_for(emulator, cancel_timeout=1.0)
    async with anyio.create_task_group() as tg:
        # Short, so that the abandoned worker ends soon after the test has shown the bound.
        tg.start_soon(collect_until_cancelled, session, "select system$wait(4)")
        await wait_running(emulator, session, 1)
        (running,) = session.running_queries
        emulator.blackhole("abort-request")
        caplog.set_level(logging.WARNING, logger="asyncsession")
        with anyio.fail_after(8):  # cancel_timeout for the aborts + for the logout, plus margin
            await session.aclose()
    assert any("could not confirm" in r.getMessage() for r in caplog.records)
    # Let the held abort through, and wait for the abandoned worker to end: a thread left
    # blocked on a server that then disappears would retry forever.
    emulator.clear_faults()
    assert running.call is not None
    await until(lambda: running.call is not None and running.call.is_finished, deadline=40)


@pytest.mark.parametrize("kind", ["collect", "job"])
async def test_one_abort_request_per_query_however_many_aborters(
    local_snowflake: LocalSnowflake, kind: str
) -> None:
    """Guarantee: an abort already in flight is not posted twice. A query's own cancelled
    await (or ``job.cancel()``), ``cancel_all()`` and ``aclose()`` all at once: the server
    receives exactly one abort request per query, and each statement really stops."""
    sf = local_snowflake
    session = await session_for(sf, cancel_timeout=10)
    session_id = session.session_id
    errors: list[BaseException] = []
    jobs: list[Any] = []

    async def cancel_job(job: Any) -> None:
        try:
            await job.cancel()
        except SessionClosedError:
            pass  # aclose() came first (trio may run it first): it aborts the job instead

    try:
        async with anyio.create_task_group() as tg:
            own = anyio.CancelScope()
            if kind == "collect":
                for _ in range(2):
                    tg.start_soon(collect_recording, session, errors)

                async def cancelled_by_its_task() -> None:
                    with own:
                        await session.sql(LONG).collect()

                tg.start_soon(cancelled_by_its_task)
                await wait_running(sf, session, 3)
            else:
                jobs = [await session.sql(LONG).collect_nowait() for _ in range(3)]
            # Every abort takes a while to arrive, so the aborters all overlap.
            sf.set_latency(300)
            own.cancel()
            for job in jobs:
                tg.start_soon(cancel_job, job)
            tg.start_soon(session.cancel_all)
            tg.start_soon(session.aclose)
    finally:
        sf.clear_faults()
        await session.aclose()
    mine = [q for q in sf.queries() if q["session_id"] == session_id and q["sql_text"] == LONG]
    assert len(mine) == 3
    # One abort per query at most: its own, or the one SYSTEM$CANCEL_ALL_QUERIES that
    # cancel_all() sends when several are running (which counts as no request of the
    # query's own); never a second one from a later aborter.
    bulk = [
        q
        for q in sf.queries()
        if q["session_id"] == session_id and "cancel_all_queries" in q["sql_text"].lower()
    ]
    assert len(bulk) <= 1, bulk
    assert all(q["abort_requests"] <= 1 for q in mine), mine
    if not bulk:
        assert [q["abort_requests"] for q in mine] == [1, 1, 1], mine
    assert all(q["status"] == "ABORTED" for q in mine), mine
    await until(lambda: all(sf.worker_stopped(q["query_id"]) for q in mine))
    if kind == "collect":
        assert len(errors) == 2
        by_request = sf.abort_requests()["by_request_id"]
        assert all(by_request.get(q["request_id"], 0) <= 1 for q in mine), by_request


async def test_a_cancelled_await_is_bounded_by_cancel_timeout_when_the_abort_is_lost(
    local_snowflake: LocalSnowflake, caplog: pytest.LogCaptureFixture
) -> None:
    """Guarantee: the cancelled await returns within ``cancel_timeout`` even when the server
    never answers its abort, and a WARNING names the query it could not confirm."""
    emulator = local_snowflake  # faults cleared below, whatever happens
    session = await session_for(emulator, cancel_timeout=1.0)
    caplog.set_level(logging.WARNING, logger="asyncsession")
    try:
        emulator.clear_faults()  # counts from here
        emulator.blackhole("abort-request")
        with anyio.fail_after(0.2 + 1.0 + 3.0):  # the cancel, cancel_timeout, a margin
            with anyio.move_on_after(0.2) as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(session.sql("select system$wait(3)").collect)
                    (query,) = await wait_running(emulator, session, 1)
                    running = session.running_queries[0]
        assert scope.cancelled_caught
        assert session.running_queries == ()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        # Named by its request id (4.x learns the query id only from the response).
        assert any("could not confirm" in w and str(running) in w for w in warnings), warnings
        assert str(running) in (query["query_id"], f"(request {query['request_id']})")
        assert emulator.fault_counts()["fired_by_route"] == {"abort-request": 1}
    finally:
        emulator.clear_faults()
        # The abandoned worker ends with its 3 s query.
        await until(lambda: running.call is not None and running.call.is_finished, 15)
        await session.aclose()


async def test_job_cancel_is_bounded_by_cancel_timeout_when_the_abort_is_lost(
    local_snowflake: LocalSnowflake, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = local_snowflake  # faults cleared below, whatever happens
    session = await session_for(emulator, cancel_timeout=1.0)
    caplog.set_level(logging.WARNING, logger="asyncsession")
    try:
        job = await session.sql("select system$wait(3)").collect_nowait()
        emulator.blackhole("query-request")  # where a job's abort (system$cancel_query) goes
        with anyio.fail_after(1.0 + 3.0):
            await job.cancel()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("could not confirm" in w and job.query_id in w for w in warnings), warnings
        # Unconfirmed, the job stays tracked: a later cancel_all()/aclose() still sees it.
        assert [q.query_id for q in session.running_queries] == [job.query_id]
    finally:
        emulator.clear_faults()  # the held abort gets a 503; the connector retries it
    await session.aclose()
    assert session.running_queries == ()
    await until(lambda: emulator.query(job.query_id)["status"] != "RUNNING", 15)


async def test_logout_that_hangs_or_fails_is_a_warning_not_a_hang(
    shared_emulator: LocalSnowflake,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emulator = shared_emulator
    caplog.set_level(logging.WARNING, logger="asyncsession")
    # A logout the server never answers: aclose() returns after cancel_timeout.
    hung = await session_for(emulator, cancel_timeout=1.0)
    emulator.blackhole("/session")
    try:
        with anyio.fail_after(1.0 + 3.0):
            await hung.aclose()
        assert hung.is_closed
    finally:
        emulator.clear_faults()
    # A logout that raises (a narrow fake of the driver's logout: our handling of it).
    failing = await session_for(emulator, cancel_timeout=1.0)
    connection, driver = failing.connection, failing._driver

    def boom(conn: Any) -> None:
        raise RuntimeError("logout refused")

    monkeypatch.setattr(failing, "_driver", type("Failing", (), {"logout": staticmethod(boom)}))
    await failing.aclose()
    assert failing.is_closed
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        f"logging out of session {hung.session_id} did not finish within cancel_timeout=1s"
        in warnings
    ), warnings
    assert f"logging out of session {failing.session_id} failed: logout refused" in warnings
    # Log the second one out for real; the first one's logout went on after the warning.
    await anyio.to_thread.run_sync(driver.logout, connection)
    assert failing.session_id not in [s["session_id"] for s in emulator.sessions()]
