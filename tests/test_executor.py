"""The executor's paths through the real connector and the emulator, both backends.

Queries beyond the first ``sync_slots`` in flight are submitted with ``asyncExec`` and
waited for by the session's status poller: few threads however many are in flight,
query ids from submission, aborts by query id.
"""

from __future__ import annotations

import threading
from typing import Any

import anyio
import pytest
from snowflake.connector.errors import ProgrammingError

from asyncsession import AsyncSession, QueryCancelledError, Session, SessionClosedError
from asyncsession._executor import CONTROL_THREADS, DEFAULT_IO_THREADS, QueryRunner
from asyncsession._session import core_of
from asyncsession._threads import worker_threads
from asyncsession.testing import LocalSnowflake
from tests.helpers import both_backends, running_in_session, until
from tests.test_abort_logic import FakeDriver

pytestmark = [pytest.mark.anyio, both_backends]

LONG = "select system$wait(30)"


async def session_for(sf: LocalSnowflake, **options: Any) -> AsyncSession:
    return await Session.builder.configs({**sf.connection_parameters, **options}).create()


def mine(sf: LocalSnowflake, session: AsyncSession, status: str = "RUNNING") -> list[Any]:
    return [
        q for q in sf.queries() if q["session_id"] == session.session_id and q["status"] == status
    ]


async def test_fan_out_beyond_the_sync_slots_completes_on_few_threads(
    local_snowflake: LocalSnowflake,
) -> None:
    async with await session_for(local_snowflake) as session:
        n = 120
        peak_threads = peak_known = 0

        async def watch() -> None:
            nonlocal peak_threads, peak_known
            while True:
                peak_threads = max(peak_threads, worker_threads())
                peak_known = max(peak_known, len(session.running_queries.query_ids))
                await anyio.sleep(0.005)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            sqls = [f"select system$wait({400 + i}, 'MILLISECONDS')" for i in range(n)]
            results = await session.collect_many(sqls)
            tg.cancel_scope.cancel()
        assert [rows[0][0] for rows in results] == [
            f"waited {400 + i} milliseconds" for i in range(n)
        ]
        runner = core_of(session).runner
        # Loose bounds (never timings): far fewer threads than queries in flight.
        assert peak_threads <= runner.sync_slots + DEFAULT_IO_THREADS + 8
        assert peak_known > runner.sync_slots  # submitted ones had ids while running
        if runner.native_core() is None:
            assert runner.poller.requests > 0
        else:  # 5.x under asyncio: the connector's core waits, and holds no thread of ours
            assert runner.poller.requests == 0
        assert session.running_queries == ()


async def test_cancelled_await_of_a_submitted_query_is_aborted_by_id(
    local_snowflake: LocalSnowflake, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asyncsession import _executor

    monkeypatch.setattr(_executor, "DEFAULT_SYNC_SLOTS", 0)
    async with await session_for(local_snowflake) as session:
        async with anyio.create_task_group() as tg:
            tg.start_soon(session.sql(LONG).collect)
            (running,) = await until(lambda: session.running_queries.query_ids)
            assert running in session.running_queries
            assert session.running_queries.without_id == ()
            tg.cancel_scope.cancel()
        assert local_snowflake.query(running)["status"] == "ABORTED"
        assert session.running_queries == ()
        assert running_in_session(local_snowflake.connection_parameters, session.session_id) == []
        assert (await session.sql("select 1").collect())[0][0] == 1


async def test_submitted_query_errors_are_the_connectors(
    local_snowflake: LocalSnowflake, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asyncsession import _executor

    monkeypatch.setattr(_executor, "DEFAULT_SYNC_SLOTS", 0)
    async with await session_for(local_snowflake) as session:
        with pytest.raises(ProgrammingError) as info:
            await session.sql("select no_such_function()").collect()
        assert info.value.errno == 2003
        assert (await session.sql("select ?", [7]).collect())[0][0] == 7
        rows = [r async for r in session.sql("select range from range(25)").to_local_iterator()]
        assert [r[0] for r in rows] == list(range(25))


async def test_a_job_whose_turn_comes_as_aclose_begins_is_refused_not_left_tracked(
    local_snowflake: LocalSnowflake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job let through the turnstile just before ``aclose()`` began (not yet resumed when
    the close took its snapshot of what to abort) must not be submitted after it: found
    by the random-cancellation soak (a job tracked forever on a closed session)."""
    session = await session_for(local_snowflake)
    sid = session.session_id
    runner = core_of(session).runner
    let_through = runner._through_turnstile

    async def closing_meanwhile() -> Any:
        passed = await let_through()
        runner.closed = True  # what aclose() does first, before its snapshot
        return passed

    monkeypatch.setattr(runner, "_through_turnstile", closing_meanwhile)
    with pytest.raises(SessionClosedError):
        await session.sql(LONG).collect_nowait()
    assert session.running_queries == ()
    await session.aclose()
    assert [q for q in local_snowflake.queries() if q["session_id"] == sid] == []


@pytest.mark.parametrize("how", ["cancel_all", "aclose"])
async def test_many_running_on_both_paths_leave_nothing_running(
    local_snowflake: LocalSnowflake, how: str
) -> None:
    session = await session_for(local_snowflake, cancel_timeout=10)
    sid = session.session_id
    errors: list[BaseException] = []

    async def one() -> None:
        try:
            await session.sql(LONG).collect()
        except QueryCancelledError as e:
            errors.append(e)

    n = 40  # 4 one-round-trip, the rest submitted
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
        job = await session.sql(LONG).collect_nowait()
        await until(lambda: len(mine(local_snowflake, session)) == n + 1, deadline=30)
        if how == "cancel_all":
            await session.cancel_all()
        else:
            await session.aclose()
    assert len(errors) == n
    assert {e.reason for e in errors if isinstance(e, QueryCancelledError)} == {f"{how}()"}
    assert local_snowflake.query(job.query_id)["status"] == "ABORTED"
    assert session.running_queries == ()
    assert running_in_session(local_snowflake.connection_parameters, sid) == []
    if how == "cancel_all":
        assert (await session.sql("select 1").collect())[0][0] == 1
        await session.aclose()


async def test_idle_jobs_share_one_paced_poller(local_snowflake: LocalSnowflake) -> None:
    async with await session_for(local_snowflake) as session:
        jobs = [await session.sql(LONG).collect_nowait() for _ in range(20)]
        runner = core_of(session).runner
        before = runner.poller.requests
        async with anyio.create_task_group() as tg:
            for job in jobs:
                tg.start_soon(job.result)
            await anyio.sleep(0.5)  # the budget under test is requests per second of waiting
            tg.cancel_scope.cancel()
        # At most rate x time (+ one each to start): not a poll per job per few ms.
        assert runner.poller.requests - before <= runner.poller.rate * 0.5 + len(jobs) + 5
        for job in jobs:
            assert local_snowflake.query(job.query_id)["status"] == "ABORTED"


async def test_a_failed_status_request_reaches_the_waiter_bare() -> None:
    # Our own logic only (no server): the poller's error must not come wrapped in an
    # ExceptionGroup, or the waiter's translation (closed session, 604) never sees it.
    from snowflake.connector.errors import DatabaseError

    from asyncsession._poller import StatusPoller
    from asyncsession._registry import RunningQuery

    async def status(query_id: str) -> tuple[str, bool]:
        raise DatabaseError(msg="Connection is closed", errno=250002)

    query = RunningQuery("select 1", query_id="qid-1")
    with pytest.raises(DatabaseError, match="Connection is closed"):
        await StatusPoller(status).wait(query)


async def test_logout_is_sent_while_every_control_slot_is_busy() -> None:
    """aclose()'s logout takes a thread of its own: queued behind stuck aborts and given up
    on at cancel_timeout, it would never be sent (the session would stay logged in)."""
    runner = QueryRunner(
        connection=object, driver=FakeDriver(), cancel_timeout=1.0, max_concurrent_queries=10
    )
    release = threading.Event()
    started: list[int] = []

    def stuck() -> None:
        started.append(1)
        release.wait(30)

    logged_out = threading.Event()
    try:
        async with anyio.create_task_group() as tg:
            for _ in range(CONTROL_THREADS):
                tg.start_soon(runner.control, stuck)
            await until(lambda: len(started) == CONTROL_THREADS)
            with anyio.fail_after(10):
                await runner.logout(logged_out.set)
            release.set()
    finally:
        release.set()
    assert logged_out.is_set()
