"""The worker pool where threads meet the event loop (our own logic; no connector needed).

The behaviour through the connector (cancelled queries abort on the server, 1,000
queries on bounded threads) is in test_cancellation.py and reliability/test_load.py.
"""

from __future__ import annotations

import contextvars
import threading

import anyio
import anyio.to_thread
import pytest

from asyncsession import _threads
from asyncsession._threads import (
    WorkerCall,
    pool_threads,
    retire_idle_workers,
    run_blocking,
    worker_threads,
)
from tests.helpers import both_backends, until

pytestmark = [pytest.mark.anyio, both_backends]

request_name: contextvars.ContextVar[str] = contextvars.ContextVar("request_name")


@pytest.fixture
def quick_retire(monkeypatch: pytest.MonkeyPatch) -> None:
    """Idle workers end after 0.2 s, so a test can see the pool shrink back."""
    monkeypatch.setattr(_threads, "IDLE_SECONDS", 0.2)


async def test_result_exception_and_context_cross_the_thread() -> None:
    limiter = anyio.CapacityLimiter(2)
    request_name.set("r1")
    assert await run_blocking(lambda: request_name.get() + "!", limiter) == "r1!"

    def fail() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        await run_blocking(fail, limiter)
    assert limiter.borrowed_tokens == 0


async def test_the_event_loop_never_starts_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    loop_thread = threading.get_ident()
    starters: list[str] = []
    original = threading.Thread.start

    def recording_start(self: threading.Thread) -> None:
        # (trio's guest-mode test runner starts its own I/O threads: not ours to judge)
        if threading.get_ident() == loop_thread and self.name.startswith(_threads.WORKER_NAME):
            starters.append(self.name)
        original(self)

    monkeypatch.setattr(threading.Thread, "start", recording_start)
    gate = threading.Event()
    limiter = anyio.CapacityLimiter(50)
    results: list[int] = []

    async def one(i: int) -> None:
        results.append(await run_blocking(lambda: gate.wait(10) and i, limiter))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
            await until(lambda: limiter.borrowed_tokens == 50)
            gate.set()
    assert sorted(results) == list(range(50))
    # At most the pool's spawner, once per process (it may exist from earlier tests).
    assert set(starters) <= {f"{_threads.WORKER_NAME} spawner"}, starters


async def test_a_cancelled_call_is_abandoned_and_its_thread_drains() -> None:
    gate = threading.Event()
    call = WorkerCall(lambda: gate.wait(10))
    limiter = anyio.CapacityLimiter(1)
    with anyio.move_on_after(0.05) as scope:
        await call.start(limiter)
    assert scope.cancelled_caught
    assert limiter.borrowed_tokens == 0  # the token is back at once
    assert not call.is_finished
    gate.set()
    with anyio.fail_after(10):
        await call.wait_finished()


async def test_a_call_skipped_before_it_starts_never_runs() -> None:
    ran: list[str] = []
    call = WorkerCall(lambda: ran.append("ran"))
    assert call.skip_if_not_started()
    assert call.is_finished
    with pytest.raises(RuntimeError, match="skipped"):
        await call.start(anyio.CapacityLimiter(1))
    assert ran == []


async def test_idle_workers_retire(quick_retire: None) -> None:
    gate = threading.Event()
    limiter = anyio.CapacityLimiter(10)
    before = worker_threads()
    async with anyio.create_task_group() as tg:
        for _ in range(10):
            tg.start_soon(run_blocking, lambda: gate.wait(10), limiter)
        await until(lambda: worker_threads() >= 10)
        gate.set()
    # Those that ran a call now wait 0.2 s for the next (others up to 10 s: not waited for).
    assert await until(lambda: worker_threads() <= before, 5)


def test_an_abandoned_call_outliving_its_event_loop_does_not_hang_its_thread(
    anyio_backend: str,
) -> None:
    gate = threading.Event()
    call = WorkerCall(lambda: gate.wait(10))

    async def main() -> None:
        with anyio.move_on_after(0.05):
            await call.start(anyio.CapacityLimiter(1))

    anyio.run(main, backend=anyio_backend)  # the loop is gone; the call still runs
    gate.set()
    assert call._thread_done.wait(10)
    # The worker dropped its wake-up of the dead loop and is free for more work.
    assert anyio.run(run_blocking, lambda: 7, anyio.CapacityLimiter(1), backend=anyio_backend) == 7


async def test_retiring_idle_workers_ends_them_and_the_pool_still_serves() -> None:
    limiter = anyio.CapacityLimiter(5)
    gate = threading.Event()
    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(run_blocking, lambda: gate.wait(10), limiter)
        await until(lambda: worker_threads() >= 5)
        gate.set()
    # A worker counts as idle just after it hands its result over: retire until all ended.
    with anyio.fail_after(5):
        while alive := pool_threads():
            retire_idle_workers()
            await anyio.to_thread.run_sync(alive[0].join, 0.05)
    assert await run_blocking(lambda: 42, limiter) == 42  # a new spawner and worker
