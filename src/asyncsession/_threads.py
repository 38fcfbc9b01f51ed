"""Where threads meet the event loop: every blocking connector call goes through here.

Connector calls run in anyio worker threads under the session's own ``CapacityLimiter``,
never anyio's shared default (FastAPI's sync endpoints need those 40 tokens). A call is
*abandoned* on cancellation, so the awaiting task gets control back at once and can
abort the query on the server; ``WorkerCall.finished`` then lets the canceller wait,
bounded, for the thread to drain.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")

#: How often a canceller checks whether an abandoned worker has returned (adds at most
#: this much to a cancelled await).
DRAIN_POLL_SECONDS = 0.002


class WorkerCall(Generic[T]):
    """One blocking call in a worker thread whose end can be awaited after abandonment."""

    __slots__ = ("_fn", "_lock", "_skipped", "_started", "_thread_done")

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._lock = threading.Lock()
        self._started = False
        self._skipped = False
        self._thread_done = threading.Event()

    def _run(self) -> T:
        with self._lock:
            if self._skipped:
                raise RuntimeError("call skipped: cancelled before it started")
            self._started = True
        try:
            return self._fn()
        finally:
            # Never call back into the event loop from here: an abandoned thread may
            # outlive it, and a blocking hand-off would then hang forever.
            self._thread_done.set()

    async def start(self, limiter: anyio.CapacityLimiter) -> T:
        """Run the call; on cancellation, return control at once and leave the thread running."""
        return await anyio.to_thread.run_sync(self._run, limiter=limiter, abandon_on_cancel=True)

    def skip_if_not_started(self) -> bool:
        """Make sure the call never runs, if no thread has started it yet (call on the loop)."""
        with self._lock:
            if self._started:
                return False
            self._skipped = True
        self._thread_done.set()
        return True

    @property
    def is_finished(self) -> bool:
        return self._thread_done.is_set()

    async def wait_finished(self) -> None:
        """Wait until the worker thread has returned (the caller bounds this with a timeout).

        Polls: this runs only while aborting, and polling needs nothing from the thread.
        """
        while not self._thread_done.is_set():  # noqa: ASYNC110 - set by a thread
            await anyio.sleep(DRAIN_POLL_SECONDS)


async def run_blocking(fn: Callable[[], T], limiter: anyio.CapacityLimiter) -> T:
    """Run a short blocking call (login, abort, status) in a worker thread under ``limiter``."""
    return await WorkerCall(fn).start(limiter)
