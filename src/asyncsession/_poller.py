"""One status poller per session: how queries submitted with ``asyncExec`` are waited for.

Snowflake's monitoring endpoint (``GET /monitoring/queries/{qid}``) answers for one query
per request, so the cost of waiting grows with the number of queries pending. Every
status request of a session goes through its ``StatusPoller``:

- each waiting query is polled on its own geometric schedule (``POLL_FIRST`` after
  submission, then times ``POLL_GROWTH`` up to ``POLL_MAX``): a short query is seen done
  within tens of ms, one running for minutes costs one request every ``POLL_MAX``;
- the session as a whole sends at most ``rate`` status requests per second
  (``DEFAULT_POLL_RATE``), whatever the number pending: with N queries pending and
  polled at their cap, each is seen every ``max(POLL_MAX, N / rate)`` seconds (500 idle
  jobs: 250 requests/s, each job every 2 s; 1,000 pending: 300/s, each every 3.3 s).
  Requests are spaced, never bursts;
- an abort wakes the query's waiter once it is answered: the waiter raises
  ``QueryCancelledError`` at once, without a status request or a result fetch.

Waiting holds no thread: a waiter sleeps on the event loop; a status request holds a
worker thread for its round trip only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from ._errors import QueryCancelledError
from ._registry import RunningQuery

#: First gap after submission, growth factor and cap (seconds) of one query's polls.
POLL_FIRST = 0.02
POLL_GROWTH = 1.5
POLL_MAX = 2.0
#: Status requests per second a session sends at most.
DEFAULT_POLL_RATE = 300.0

StatusCall = Callable[[str], Awaitable[tuple[str, bool]]]


class StatusPoller:
    """Paces a session's status requests and waits for queries to end."""

    def __init__(self, status: StatusCall, *, rate: float = DEFAULT_POLL_RATE) -> None:
        self._status = status
        self._spacing = 1.0 / rate
        self._next_slot = 0.0
        #: Status requests sent so far (for tests and benchmarks).
        self.requests = 0

    @property
    def rate(self) -> float:
        return 1.0 / self._spacing

    async def status(self, query_id: str) -> tuple[str, bool]:
        """One status request in the session's pace: (status name, still running)."""
        now = anyio.current_time()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self._spacing
        if slot > now:
            await anyio.sleep(slot - now)
        self.requests += 1
        return await self._status(query_id)

    async def wait(self, query: RunningQuery) -> str:
        """Return the status name once ``query`` has ended on the server."""
        assert query.query_id is not None
        gap = POLL_FIRST
        while True:
            wake = query.wake = query.wake if query.wake is not None else anyio.Event()
            if not wake.is_set():
                with anyio.move_on_after(gap):
                    await wake.wait()
            seen = None if wake.is_set() else await self._look_unless_woken(query.query_id, wake)
            if seen is None:  # an aborter woke us
                if query.cancel_reason is not None:
                    # It did so once its abort was answered or confirmed: no status
                    # request and no result fetch just to learn of the 604.
                    raise QueryCancelledError(query.query_id, query.cancel_reason)
                query.wake = anyio.Event()
                continue
            name, running = seen
            if not running:
                return name
            gap = min(gap * POLL_GROWTH, POLL_MAX)

    async def _look_unless_woken(self, query_id: str, wake: anyio.Event) -> tuple[str, bool] | None:
        """One paced status request, given up (None) if ``wake`` is set meanwhile.

        A waiter queued behind the session's other polls must not make an abort wait for
        its turn; a status request given up on finishes in its thread, unread.
        """
        seen: tuple[str, bool] | None = None
        failed: Exception | None = None

        async def look() -> None:
            nonlocal seen, failed
            try:
                seen = await self.status(query_id)
            except Exception as e:
                # Raised below, bare: out of the task group it would be an ExceptionGroup,
                # which the waiter's translation (a closed session, a 604) does not catch.
                failed = e
            tg.cancel_scope.cancel()

        async def watch() -> None:
            await wake.wait()
            tg.cancel_scope.cancel()

        async with anyio.create_task_group() as tg:
            tg.start_soon(look)
            tg.start_soon(watch)
        if failed is not None:
            raise failed
        return seen
