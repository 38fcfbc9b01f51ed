"""Where threads meet the event loop: every blocking connector call goes through here.

Connector calls run on asyncsession's own pool of worker threads, admitted by the
caller's ``CapacityLimiter`` (never anyio's shared default: FastAPI's sync endpoints need
those 40 tokens). The event loop never starts a thread: ``Thread.start()`` blocks its
caller until the new thread runs, which under load costs milliseconds per thread, and a
fan-out of 100 queries would stall the loop for hundreds of them. New workers are started
by a spawner thread instead, and a worker hands its result back with a non-blocking
wake-up of the loop.

A call is *abandoned* on cancellation: the awaiting task gets control back at once and
can abort the query on the server; ``WorkerCall.wait_finished`` then lets the canceller
wait, bounded, for the thread to drain.
"""

from __future__ import annotations

import contextvars
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import anyio

logger = logging.getLogger("asyncsession")

T = TypeVar("T")

#: How often a canceller checks whether an abandoned worker has returned (adds at most
#: this much to a cancelled await).
DRAIN_POLL_SECONDS = 0.002

#: An idle worker thread ends after this long without work (as anyio's do).
IDLE_SECONDS = 10.0

WORKER_NAME = "asyncsession worker"


def _loop_wakeup() -> Callable[[Callable[[], object]], object]:
    """A thread-safe, non-blocking "run this soon on the current event loop"."""
    # Imported here, not at module level: ``import asyncsession`` stays off asyncio (4.x
    # connectors do not import it); under a running asyncio loop it is a dict lookup.
    import asyncio

    try:
        return asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:  # not asyncio: anyio's other backend is trio
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon


class WorkerCall(Generic[T]):
    """One blocking call in a worker thread whose end can be awaited after abandonment."""

    __slots__ = (
        "_error",
        "_fn",
        "_lock",
        "_notify",
        "_result",
        "_skipped",
        "_started",
        "_thread_done",
    )

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._lock = threading.Lock()
        self._started = False
        self._skipped = False
        self._thread_done = threading.Event()
        self._notify: Callable[[], None] | None = None
        self._result: T | None = None
        self._error: BaseException | None = None

    def _run(self) -> None:
        """In a worker thread: run the call, keep its outcome, wake the awaiting task."""
        with self._lock:
            skipped = self._skipped
            self._started = not skipped
        if skipped:
            self._error = RuntimeError("call skipped: cancelled before it started")
        else:
            try:
                self._result = self._fn()
            except BaseException as e:
                self._error = e
            finally:
                self._thread_done.set()
        if self._notify is not None:
            self._notify()

    async def start(self, limiter: anyio.CapacityLimiter) -> T:
        """Run the call; on cancellation, return control at once and leave the thread running."""
        async with limiter:
            done = anyio.Event()
            wakeup = _loop_wakeup()

            def notify() -> None:
                # Never block here: an abandoned thread may outlive the loop, and then
                # its wake-up is dropped (asyncio: loop closed; trio: run finished).
                try:
                    wakeup(done.set)
                except RuntimeError:
                    pass

            self._notify = notify
            _pool.submit(contextvars.copy_context(), self)
            await done.wait()  # cancelled: abandon the call (the registry may skip it)
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._result  # type: ignore[return-value]

    def skip_if_not_started(self) -> bool:
        """Make sure the call never runs, if no thread has started it yet (call on the loop)."""
        with self._lock:
            if self._started:
                return False
            self._skipped = True
        self._thread_done.set()
        return True

    @property
    def is_started(self) -> bool:
        """A worker thread took the call: it runs (or ran) and can no longer be skipped."""
        return self._started

    @property
    def is_finished(self) -> bool:
        return self._thread_done.is_set()

    async def wait_finished(self) -> None:
        """Wait until the worker thread has returned (the caller bounds this with a timeout).

        Polls: this runs only while aborting, and polling needs nothing from the thread.
        """
        while not self._thread_done.is_set():  # noqa: ASYNC110 - set by a thread
            await anyio.sleep(DRAIN_POLL_SECONDS)


class _Retire:
    """Queued in place of a call: the worker that takes it ends."""


_RETIRE = _Retire()
_Item = tuple[contextvars.Context, WorkerCall[Any]] | _Retire


class _WorkerPool:
    """Worker threads shared by all sessions; grown by a spawner thread, never by the loop.

    ``queued`` counts items in the queue (calls and retirements); ``idle`` counts workers
    waiting for one plus those asked of the spawner and not yet running, so one queued
    call never asks for two threads. Idle workers and the spawner end after
    ``IDLE_SECONDS`` without work, or at once on ``retire_idle()``.
    """

    def __init__(self) -> None:
        self._items: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued = 0
        self._idle = 0
        self._spawns: queue.SimpleQueue[_Retire | None] = queue.SimpleQueue()
        self._spawner: threading.Thread | None = None

    def submit(self, context: contextvars.Context, call: WorkerCall[Any]) -> None:
        with self._lock:
            self._items.put((context, call))
            self._queued += 1
            if self._queued <= self._idle:
                return
            self._idle += 1
            if self._spawner is None:
                # The only thread the loop starts (again only after an idle spell).
                self._spawner = threading.Thread(
                    target=self._spawn, name=f"{WORKER_NAME} spawner", daemon=True
                )
                self._spawner.start()
            # Under the lock, so a spawner ending for idleness cannot miss it.
            self._spawns.put(None)

    def retire_idle(self) -> None:
        """End the idle workers and the spawner now (busy workers go on)."""
        with self._lock:
            surplus = self._idle - self._queued
            for _ in range(surplus):
                self._items.put(_RETIRE)
            self._queued += max(surplus, 0)
            if self._spawner is not None and self._spawns.empty():
                self._spawns.put(_RETIRE)
                self._spawner = None

    def _spawn(self) -> None:
        while True:
            try:
                request = self._spawns.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if not self._spawns.empty():
                        continue
                    if self._spawner is threading.current_thread():
                        self._spawner = None
                    return
            if request is _RETIRE:
                return
            while True:
                try:
                    threading.Thread(target=self._work, name=WORKER_NAME, daemon=True).start()
                    break
                except RuntimeError as e:  # "can't start new thread": wait for resources
                    logger.error("could not start a worker thread (%s); retrying", e)
                    time.sleep(0.1)

    def _work(self) -> None:
        while True:
            try:
                item = self._items.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queued > 0:  # an item arrived as we timed out: take it
                        continue
                    self._idle -= 1
                    return
            with self._lock:
                self._queued -= 1
                self._idle -= 1
            if isinstance(item, _Retire):
                return
            context, call = item
            context.run(call._run)
            # An idle worker must not keep its last call (and its result) alive.
            del item, context, call
            with self._lock:
                self._idle += 1

    def threads(self) -> list[threading.Thread]:
        """The pool's threads alive now, the spawner included (for tests and benchmarks)."""
        return [t for t in threading.enumerate() if t.name.startswith(WORKER_NAME)]


_pool = _WorkerPool()


def _new_pool_after_fork() -> None:
    global _pool
    _pool = _WorkerPool()  # the parent's threads do not exist in the child


if sys.platform != "win32":
    os.register_at_fork(after_in_child=_new_pool_after_fork)


def worker_threads() -> int:
    """How many worker threads are alive (the spawner not counted)."""
    return sum(1 for t in _pool.threads() if t.name == WORKER_NAME)


def pool_threads() -> list[threading.Thread]:
    """Every thread of the pool alive now, the spawner included."""
    return _pool.threads()


def retire_idle_workers() -> None:
    """End idle worker threads and the spawner now, instead of after ``IDLE_SECONDS``.

    For test suites that check no thread outlives a test; busy workers finish their call
    and then wait for work as usual.
    """
    _pool.retire_idle()


async def run_blocking(fn: Callable[[], T], limiter: anyio.CapacityLimiter) -> T:
    """Run a short blocking call (login, abort, status) in a worker thread under ``limiter``."""
    return await WorkerCall(fn).start(limiter)
