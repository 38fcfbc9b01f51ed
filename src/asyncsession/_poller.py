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
worker thread for its round trip only (none on 4.x, where it is sent on the loop,
``_http``, unless the connector's own call is needed).
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
            wake = query.wake
            if not isinstance(wake, Wake):
                wake = query.wake = Wake()
            seen = await self._look_unless_woken(query.query_id, gap, wake)
            if seen is None:  # an aborter woke us
                if query.cancel_reason is not None:
                    # It did so once its abort was answered or confirmed: no status
                    # request and no result fetch just to learn of the 604.
                    raise QueryCancelledError(query.query_id, query.cancel_reason)
                query.wake = Wake()
                continue
            name, running = seen
            if not running:
                return name
            gap = min(gap * POLL_GROWTH, POLL_MAX)

    async def _look_unless_woken(
        self, query_id: str, gap: float, wake: Wake
    ) -> tuple[str, bool] | None:
        """After ``gap``, one paced status request; given up (None) once ``wake`` is set.

        A waiter queued behind the session's other polls must not make an abort wait for
        its turn; a status request given up on finishes in its thread, unread. One cancel
        scope per poll, which the waker cancels: no task (group) per status request.
        """
        seen: tuple[str, bool] | None = None
        try:
            with wake.watch():
                await anyio.sleep(gap)
                seen = await self.status(query_id)
        finally:
            wake.unwatch()
        return seen  # None: woken before the status request returned


class Wake:
    """Set by an aborter (``_registry``) to make the query's waiter look at once.

    Setting it cancels the waiter's current poll (its sleep or its status request), if
    one is under way; one set before the poll starts cancels it at once.
    """

    __slots__ = ("_is_set", "_scope")

    def __init__(self) -> None:
        self._is_set = False
        self._scope: anyio.CancelScope | None = None

    def set(self) -> None:
        self._is_set = True
        if self._scope is not None:
            self._scope.cancel()

    def is_set(self) -> bool:
        return self._is_set

    def watch(self) -> anyio.CancelScope:
        """A cancel scope for one poll, cancelled when (or if already) set."""
        scope = self._scope = anyio.CancelScope()
        if self._is_set:
            scope.cancel()
        return scope

    def unwatch(self) -> None:
        self._scope = None
