"""The 5.x native core path (``_native``): submitted queries that hold no thread.

On 5.x under asyncio a query past the one-round-trip slots is submitted, awaited and
status-polled through the connector core's own awaitables. These tests run it against
the emulator with the real connector; elsewhere (4.x, trio) they check that the thread
paths are kept.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import anyio
import pytest
from snowflake.connector.errors import ProgrammingError

from asyncsession import AsyncSession, QueryCancelledError, Session
from asyncsession._driver import connector_major
from asyncsession._native import NativeCall, asyncio_running
from asyncsession._session import core_of
from asyncsession._threads import retire_idle_workers, worker_threads
from asyncsession.testing import LocalSnowflake
from tests.helpers import both_backends, running_in_session, until

pytestmark = pytest.mark.anyio

native_only = pytest.mark.skipif(connector_major() < 5, reason="the native core is 5.x's")

LONG = "select system$wait(30)"


async def submitted_session(sf: LocalSnowflake, monkeypatch: pytest.MonkeyPatch) -> AsyncSession:
    from asyncsession import _executor

    monkeypatch.setattr(_executor, "DEFAULT_SYNC_SLOTS", 0)
    return await Session.builder.configs(sf.connection_parameters).create()


# ---- NativeCall, alone -----------------------------------------------------------------
async def test_a_native_call_goes_on_when_its_awaiter_is_cancelled() -> None:
    release = asyncio.Event()

    async def work() -> str:
        await release.wait()
        return "done"

    call: NativeCall[str] = NativeCall(work)
    with anyio.move_on_after(0.01):
        await call.start()
    assert call.is_started
    assert not call.is_finished
    assert not call.skip_if_not_started()
    release.set()
    with anyio.fail_after(5):
        await call.wait_finished()
    assert call.is_finished


async def test_an_abandoned_native_calls_failure_is_not_reported_as_unretrieved() -> None:
    failed = asyncio.Event()

    async def work() -> None:
        await asyncio.sleep(0)
        failed.set()
        raise RuntimeError("nobody waits for this")

    loop = asyncio.get_running_loop()
    unretrieved: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    try:
        call: NativeCall[None] = NativeCall(work)
        with anyio.move_on_after(0):
            await call.start()
        with anyio.fail_after(5):
            await call.wait_finished()
        del call
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert failed.is_set()
    assert unretrieved == []


async def test_a_native_call_skipped_before_it_started_never_runs() -> None:
    ran = False

    async def work() -> None:
        nonlocal ran
        ran = True

    call: NativeCall[None] = NativeCall(work)
    assert call.skip_if_not_started()
    assert call.is_finished
    with pytest.raises(RuntimeError, match="skipped"):
        await call.start()
    assert not ran


@both_backends
async def test_asyncio_running_tells_the_backend(anyio_backend: str) -> None:
    assert asyncio_running() is (anyio_backend == "asyncio")


# ---- through a session -----------------------------------------------------------------
@both_backends
async def test_the_native_core_is_used_only_on_5x_under_asyncio(
    local_snowflake: LocalSnowflake, anyio_backend: str
) -> None:
    async with await Session.builder.configs(local_snowflake.connection_parameters).create() as s:
        uses = core_of(s).runner.native_core() is not None
    assert uses is (connector_major() >= 5 and anyio_backend == "asyncio")


@native_only
async def test_queries_waiting_on_the_warehouse_hold_no_thread(
    local_snowflake: LocalSnowflake, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 40
    async with await submitted_session(local_snowflake, monkeypatch) as session:
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(session.sql("select system$wait(3)").collect)
            await until(lambda: len(session.running_queries.query_ids) == n)
            assert session.running_queries.without_id == ()
            retire_idle_workers()
            # Every query is running on the server, and not one worker thread is left.
            await until(lambda: worker_threads() == 0)
            assert (
                len(running_in_session(local_snowflake.connection_parameters, session.session_id))
                >= n
            )
        assert core_of(session).runner.poller.requests == 0
        assert session.running_queries == ()


@native_only
async def test_a_cancelled_native_await_is_aborted_on_the_server_and_reraised(
    local_snowflake: LocalSnowflake, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await submitted_session(local_snowflake, monkeypatch) as session:
        cancelled = False
        with anyio.move_on_after(10) as scope:
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    nonlocal cancelled
                    try:
                        await session.sql(LONG).collect()
                    except anyio.get_cancelled_exc_class():
                        cancelled = True
                        raise

                tg.start_soon(run)
                (query_id,) = await until(lambda: session.running_queries.query_ids)
                tg.cancel_scope.cancel()
        assert not scope.cancelled_caught
        assert cancelled
        assert local_snowflake.query(query_id)["status"] == "ABORTED"
        assert session.running_queries == ()


@native_only
@pytest.mark.parametrize("how", ["cancel_all", "aclose"])
async def test_cancel_all_wakes_every_native_waiter_at_once(
    local_snowflake: LocalSnowflake, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    n = 10
    session = await submitted_session(local_snowflake, monkeypatch)
    outcomes: list[BaseException] = []

    async def run() -> None:
        try:
            await session.sql(LONG).collect()
        except QueryCancelledError as e:
            outcomes.append(e)

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(run)
            ids = await until(
                lambda: (
                    len(session.running_queries.query_ids) == n
                    and session.running_queries.query_ids
                )
            )
            with anyio.fail_after(10):
                if how == "cancel_all":
                    await session.cancel_all()
                else:
                    await session.aclose()
    finally:
        await session.aclose()
    assert len(outcomes) == n
    assert {e.reason for e in outcomes if isinstance(e, QueryCancelledError)} == {f"{how}()"}
    assert all(local_snowflake.query(q)["status"] == "ABORTED" for q in ids)


@native_only
async def test_native_errors_results_and_jobs_are_the_connectors(
    local_snowflake: LocalSnowflake, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await submitted_session(local_snowflake, monkeypatch) as session:
        with pytest.raises(ProgrammingError) as info:
            await session.sql("select no_such_function()").collect()
        assert info.value.errno == 2003
        assert (await session.sql("select ?", [7]).collect())[0][0] == 7
        rows = [r async for r in session.sql("select range from range(25)").to_local_iterator()]
        assert [r[0] for r in rows] == list(range(25))
        job = await session.sql("select 41 + 1").collect_nowait()
        assert job.query_id
        assert (await job.result())[0][0] == 42
        runner = core_of(session).runner
        assert runner.native_core() is not None


@native_only
async def test_a_native_submission_cancelled_in_flight_is_aborted_once_its_id_is_back(
    local_snowflake: LocalSnowflake, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await submitted_session(local_snowflake, monkeypatch) as session:
        local_snowflake.set_latency(300)
        try:
            with anyio.move_on_after(0.1):
                await session.sql(LONG).collect()
        finally:
            local_snowflake.set_latency(0)
        assert session.running_queries == ()
        mine = [q for q in local_snowflake.queries() if q["session_id"] == session.session_id]
        assert [q["status"] for q in mine if q["sql_text"] == LONG] in ([], ["ABORTED"])
        assert running_in_session(local_snowflake.connection_parameters, session.session_id) == []


@native_only
def test_a_5x_release_without_the_cursor_steps_gets_no_native_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from snowflake.connector.cursor import SnowflakeCursor

    from asyncsession._native import NativeCore

    assert NativeCore.load() is not None
    for cls in SnowflakeCursor.__mro__:
        if "_prepare_query" in vars(cls):
            monkeypatch.delattr(cls, "_prepare_query")
    assert NativeCore.load() is None


@native_only
async def test_statements_needing_the_cursors_steps_are_prepared_as_it_would(
    local_snowflake: LocalSnowflake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bindings, per-statement options and a bare DESC go through the cursor's own steps."""
    async with await submitted_session(local_snowflake, monkeypatch) as session:
        core = core_of(session).runner.native_core()
        assert core is not None
        assert not core.needs_preparing("select 1", None, None)
        assert core.needs_preparing("select ?", [1], None)
        assert core.needs_preparing("select 1", None, {"QUERY_TAG": "x"})
        assert core.needs_preparing("desc t", None, None)
        rows = await session.sql("select ?, ?", [1, "two"]).collect()
        assert tuple(rows[0]) == (1, "two")
        assert (await session.sql("select 3", query_tag="native-tag").collect())[0][0] == 3
        assert any(q.get("query_tag") == "native-tag" for q in local_snowflake.queries())
