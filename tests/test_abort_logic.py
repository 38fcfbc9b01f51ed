"""Every branch of ``_registry``'s abort logic, against a fake driver (no server).

The fake stands in for the connector only to drive OUR logic (which request goes out,
when, how often, what is waited for and what is logged); that aborts really stop queries
is shown through the real connector against the emulator (test_cancellation.py,
test_executor.py, reliability/).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from snowflake.connector.errors import Error

from asyncsession._driver import Driver, QueryHandle
from asyncsession._native import NativeCore
from asyncsession._registry import QueryRegistry, RunningQuery
from asyncsession._threads import WorkerCall
from tests.helpers import until

pytestmark = pytest.mark.anyio


class FakeDriver:
    """Records the requests our logic makes; "server" answers are threading events."""

    generation = 0
    native: NativeCore | None = None

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        #: What each query's "worker" waits for: set = the server answered it.
        self.answered: dict[str, threading.Event] = {}
        self.bulk_stops: set[str] = set()  # which queries cancel_session stops
        self.running: set[str] = set()  # query ids query_status reports as running
        self.fail: set[str] = set()  # request kinds that raise
        self.lock = threading.Lock()

    def _record(self, kind: str, what: str | None) -> None:
        with self.lock:
            self.requests.append((kind, what))
        if kind in self.fail:
            raise RuntimeError(f"{kind} failed")

    def kinds(self) -> list[str]:
        return [k for k, _ in self.requests]

    # the Driver protocol
    def connect(self, kwargs: dict[str, Any]) -> Any:
        return object()

    def prepare(self, handle: QueryHandle) -> None:
        pass

    def execute(
        self,
        cursor: Any,
        handle: QueryHandle,
        params: Sequence[Any] | None,
        statement_params: dict[str, Any] | None = None,
    ) -> None:
        raise NotImplementedError

    def submit(
        self,
        cursor: Any,
        handle: QueryHandle,
        params: Sequence[Any] | None,
        statement_params: dict[str, Any] | None = None,
    ) -> str:
        raise NotImplementedError

    def query_status(self, connection: Any, query_id: str) -> tuple[str, bool]:
        self._record("status", query_id)
        running = query_id in self.running
        return ("RUNNING" if running else "ABORTED"), running

    def session_refusal(self, connection: Any, error: Error) -> Error | None:
        return None

    def fetch_result(self, cursor: Any, query_id: str) -> None:
        raise NotImplementedError

    def abort(self, connection: Any, handle: QueryHandle) -> None:
        self._record("abort", handle.query_id or handle.sql_text)
        self.running.discard(handle.query_id or "")
        event = self.answered.get(handle.sql_text)
        if event is not None:
            event.set()

    def cancel_session(self, connection: Any) -> None:
        self._record("cancel_session", None)
        for name in self.bulk_stops:
            if name in self.answered:
                self.answered[name].set()
            self.running.discard(name)

    def logout(self, connection: Any) -> None:
        pass


def registry_for(driver: FakeDriver, cancel_timeout: float = 5.0) -> QueryRegistry:
    checked: Driver = driver  # the fake satisfies the typed interface
    return QueryRegistry(
        driver=checked,
        connection=lambda: None,
        control_limiter=anyio.CapacityLimiter(4),
        cancel_timeout=cancel_timeout,
    )


async def start_running(
    tg: Any, registry: QueryRegistry, driver: FakeDriver, name: str
) -> tuple[RunningQuery, list[BaseException]]:
    """A one-round-trip query whose worker blocks until the fake server answers it."""
    query = registry.add(name)
    answered = driver.answered[name] = threading.Event()
    outcome: list[BaseException] = []
    call: WorkerCall[bool] = WorkerCall(lambda: answered.wait(10))

    async def await_it() -> None:
        try:
            await registry.run(query, call, anyio.CapacityLimiter(10))
        except BaseException as e:
            outcome.append(e)
            if not isinstance(e, Exception):
                raise
        finally:
            registry.discard(query)

    tg.start_soon(await_it)
    await until(lambda: query.call is not None and query.call.is_started)
    return query, outcome


async def test_a_call_that_never_started_is_skipped_and_released() -> None:
    driver = FakeDriver()
    registry = registry_for(driver)
    query = registry.add("q")
    query.call = WorkerCall(lambda: None)  # queued, never started
    query.release = anyio.CancelScope()
    assert await registry.abort(query, "cancel_all()")
    assert driver.requests == []
    assert query.release.cancel_called


async def test_one_query_gets_one_abort_and_its_worker_drains() -> None:
    driver = FakeDriver()
    registry = registry_for(driver)
    async with anyio.create_task_group() as tg:
        query, _ = await start_running(tg, registry, driver, "q")
        assert await registry.abort(query, "job.cancel()")
        call = query.call
        assert call is not None
        assert call.is_finished
    assert driver.kinds() == ["abort"]


async def test_a_second_aborter_waits_for_the_first_and_posts_nothing() -> None:
    driver = FakeDriver()
    registry = registry_for(driver)
    async with anyio.create_task_group() as tg:
        query, _ = await start_running(tg, registry, driver, "q")
        results: list[bool] = []

        async def abort(reason: str) -> None:
            results.append(await registry.abort(query, reason))

        tg.start_soon(abort, "cancel_all()")
        tg.start_soon(abort, "aclose()")
    assert driver.kinds() == ["abort"]
    assert results == [True, True]
    assert query.cancel_reason == "cancel_all()"


async def test_a_submission_is_aborted_by_id_once_its_id_is_back() -> None:
    driver = FakeDriver()
    registry = registry_for(driver)
    query = registry.add("q")
    query.submitting = True
    reply = threading.Event()

    def submit() -> None:
        reply.wait(10)
        query.query_id = "qid-1"

    query.call = WorkerCall(submit)
    async with anyio.create_task_group() as tg:
        tg.start_soon(query.call.start, anyio.CapacityLimiter(1))
        await until(lambda: query.call is not None and query.call.is_started)
        tg.start_soon(registry.abort, query, "aclose()")
        # Every task waits (the submission in its thread, the aborter for the submission):
        await anyio.wait_all_tasks_blocked()
        assert driver.requests == []  # nothing to abort it by yet
        reply.set()
    assert driver.requests == [("abort", "qid-1")]


async def test_bulk_cancel_confirms_by_drain_and_status_without_aborts_of_their_own() -> None:
    driver = FakeDriver()
    registry = registry_for(driver)
    async with anyio.create_task_group() as tg:
        _, out_a = await start_running(tg, registry, driver, "a")
        _, out_b = await start_running(tg, registry, driver, "b")
        job = registry.add("<query j>", query_id="j")  # a job: no worker of ours
        driver.running.add("j")
        driver.bulk_stops |= {"a", "b", "j"}
        assert await registry.abort_all("aclose()") == 0
    assert driver.kinds() == ["cancel_session", "status"], driver.requests  # the job: once
    assert not registry.is_tracked(job)
    assert out_a == out_b == []  # the fake's workers return normally (no 604 to translate)


async def test_what_the_bulk_cancel_missed_gets_an_abort_of_its_own() -> None:
    driver = FakeDriver()
    registry = registry_for(driver)
    async with anyio.create_task_group() as tg:
        await start_running(tg, registry, driver, "a")
        await start_running(tg, registry, driver, "late")  # reached the server after it
        registry.add("<query j>", query_id="j")
        driver.running.add("j")
        driver.bulk_stops |= {"a"}
        assert await registry.abort_all("cancel_all()") == 0
    assert sorted(driver.requests, key=str) == sorted(
        [("cancel_session", None), ("abort", "late"), ("status", "j"), ("abort", "j")], key=str
    )


async def test_a_failed_bulk_cancel_falls_back_to_one_abort_each() -> None:
    driver = FakeDriver()
    driver.fail.add("cancel_session")
    registry = registry_for(driver)
    async with anyio.create_task_group() as tg:
        await start_running(tg, registry, driver, "a")
        await start_running(tg, registry, driver, "b")
        assert await registry.abort_all("aclose()") == 0
    assert sorted(driver.kinds()) == ["abort", "abort", "cancel_session"]


async def test_unconfirmed_aborts_release_the_awaiter_and_warn_naming_the_query(
    caplog: pytest.LogCaptureFixture,
) -> None:
    driver = FakeDriver()
    driver.fail.add("abort")
    registry = registry_for(driver, cancel_timeout=0.3)
    caplog.set_level(logging.WARNING, logger="asyncsession")
    async with anyio.create_task_group() as tg:
        query, outcome = await start_running(tg, registry, driver, "stuck")
        query.request_id = "req-stuck"
        assert await registry.abort(query, "cancel_all()") is False
        await until(lambda: outcome)
        driver.answered["stuck"].set()  # let the abandoned worker end
    messages = [r.getMessage() for r in caplog.records]
    assert any("aborting query" in m and "abort failed" in m for m in messages)
    assert any("could not confirm" in m and "req-stuck" in m for m in messages), messages
    assert type(outcome[0]).__name__ == "QueryCancelledError"


async def test_a_cancelled_awaiter_aborts_and_does_not_wait_for_itself() -> None:
    driver = FakeDriver()
    registry = registry_for(driver)
    query = registry.add("awaited")
    query.query_id = "qid-2"
    query.awaited = True
    driver.running.add("qid-2")
    with anyio.fail_after(2):
        assert await registry.abort(query, "cancelled", by_awaiter=True)
    assert driver.requests == [("abort", "qid-2")]
    assert not registry.is_tracked(query)


async def test_a_later_aborter_awaiting_the_query_does_not_deadlock_the_first() -> None:
    # The first aborter drains until the query's awaiter is done; that awaiter, cancelled
    # itself, is a later aborter waiting for the first one's answer: it must get it first.
    driver = FakeDriver()
    registry = registry_for(driver, cancel_timeout=5.0)
    query = registry.add("submitted")
    query.query_id = "qid-3"
    query.awaited = True
    query.wake = anyio.Event()
    driver.running.add("qid-3")
    wake = query.wake

    async def awaiter_cancelled_meanwhile() -> None:
        await wake.wait()
        try:
            await registry.abort(query, "cancelled", by_awaiter=True)
        finally:
            query.awaited = False
            registry.discard(query)

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            tg.start_soon(awaiter_cancelled_meanwhile)
            assert await registry.abort(query, "cancel_all()")
    assert driver.requests == [("abort", "qid-3")]


class BlockingBulkDriver(FakeDriver):
    """Its SYSTEM$CANCEL_ALL_QUERIES is answered when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.bulk_sent = threading.Event()
        self.bulk_answer = threading.Event()

    def cancel_session(self, connection: Any) -> None:
        self.bulk_sent.set()
        self.bulk_answer.wait(10)
        super().cancel_session(connection)


async def test_a_604_of_a_query_started_while_the_bulk_cancel_was_out_is_ours() -> None:
    from snowflake.connector.errors import ProgrammingError

    from asyncsession import QueryCancelledError

    driver = BlockingBulkDriver()
    registry = registry_for(driver)
    canceled = ProgrammingError(msg="SQL execution canceled", errno=604)
    async with anyio.create_task_group() as tg:
        await start_running(tg, registry, driver, "a")
        await start_running(tg, registry, driver, "b")
        tg.start_soon(registry.abort_all, "cancel_all()")
        await until(driver.bulk_sent.is_set)
        concurrent = registry.add("started meanwhile")  # not in the aborted snapshot
        driver.bulk_answer.set()

        def stopped_by_the_bulk_cancel() -> None:
            raise canceled

        with pytest.raises(QueryCancelledError) as caught:
            await registry.run(
                concurrent, WorkerCall(stopped_by_the_bulk_cancel), anyio.CapacityLimiter(1)
            )
        registry.discard(concurrent)
    assert caught.value.reason == "cancel_all()"
    after = registry.add("started after the answer")
    assert registry.cancelled_by_us(after, canceled) is None
    registry.discard(after)


class BulkStoppedAbortDriver(FakeDriver):
    """Its first abort by query id is stopped (604) by another SYSTEM$CANCEL_ALL_QUERIES."""

    def abort(self, connection: Any, handle: QueryHandle) -> None:
        from snowflake.connector.errors import ProgrammingError

        if not any(kind == "abort" for kind in self.kinds()):
            self._record("abort", handle.query_id)
            raise ProgrammingError(msg="SQL execution canceled", errno=604)
        super().abort(connection, handle)


async def test_an_abort_statement_stopped_by_a_bulk_cancel_is_sent_again_if_still_running() -> None:
    driver = BulkStoppedAbortDriver()
    registry = registry_for(driver)
    query = registry.add("<query j>", query_id="qid-4")
    driver.running.add("qid-4")
    assert await registry.abort(query, "job.cancel()")
    assert driver.requests == [("abort", "qid-4"), ("status", "qid-4"), ("abort", "qid-4")]


async def test_an_abort_statement_stopped_by_a_bulk_cancel_that_stopped_its_target_too() -> None:
    # The bulk cancel stopped the target as well (same session): no second abort request.
    driver = BulkStoppedAbortDriver()
    registry = registry_for(driver)
    query = registry.add("<query j>", query_id="qid-5")
    assert await registry.abort(query, "job.cancel()")
    assert driver.requests == [("abort", "qid-5"), ("status", "qid-5")]
