"""``Turnstile``: at most so many queries start per event-loop turn.

A fan-out (``asyncio.gather`` or a task group of 1,000 queries) makes every task ready in
the same loop iteration, and the loop runs each one's first step (bookkeeping up to its
first real wait) before anything else: 1,000 such steps stall every other task of the
loop for hundreds of ms. Behind the turnstile a task past the quota of this turn parks
at once (a few µs), and each following turn lets the next ``per_turn`` through, so the
steps spread over turns and the loop serves its other tasks between them.

A query that finds the turnstile free passes without waiting (no checkpoint added). A
``cancel_all()`` or ``aclose()`` turns the parked ones away, as it aborts the queries it
finds in the registry: a query of the fan-out it overlaps does not start after it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import anyio

#: Queries that may start their first step in one event-loop turn.
DEFAULT_PER_TURN = 16


def _call_soon() -> Callable[[Callable[[], object]], object]:
    """Schedule a callback on the current event loop for its next turn."""
    try:
        return asyncio.get_running_loop().call_soon
    except RuntimeError:  # not asyncio: anyio's other backend is trio
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon


class _Waiter:
    __slots__ = ("event", "gone", "refused")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.gone = False  # cancelled while parked: its pass goes to the next one
        self.refused: str | None = None


class Turnstile:
    """Lets at most ``per_turn`` tasks through per event-loop turn, first come first served."""

    def __init__(self, per_turn: int = DEFAULT_PER_TURN) -> None:
        self.per_turn = max(1, per_turn)
        self._left = self.per_turn
        self._waiters: deque[_Waiter] = deque()
        self._turn_scheduled = False
        #: Tasks that had to wait for a later turn (for tests and benchmarks).
        self.parked = 0

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.gone)

    async def enter(self) -> str | None:
        """Pass now or in a later turn; the reason, if turned away by ``turn_away()``."""
        if self._left > 0 and not self._waiters:
            self._left -= 1
            self._schedule_turn()
            return None
        waiter = _Waiter()
        self._waiters.append(waiter)
        self.parked += 1
        self._schedule_turn()
        try:
            await waiter.event.wait()
        except BaseException:
            if not waiter.event.is_set():
                waiter.gone = True  # skipped when its turn comes (no O(n) removal)
            elif waiter.refused is None:
                self._release_next()  # cancelled as its pass came: the next one takes it
            raise
        return waiter.refused

    def _release_next(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.gone:
                waiter.event.set()
                return

    def turn_away(self, reason: str) -> int:
        """Release every parked task with ``reason`` instead of a pass; how many."""
        count = 0
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.gone:
                waiter.refused = reason
                waiter.event.set()
                count += 1
        return count

    def _schedule_turn(self) -> None:
        if not self._turn_scheduled:
            self._turn_scheduled = True
            _call_soon()(self._new_turn)

    def _new_turn(self) -> None:
        """On the loop, once per turn while the turnstile is in use: the next ones pass."""
        self._turn_scheduled = False
        self._left = self.per_turn
        waiters = self._waiters
        while self._left > 0 and waiters:
            waiter = waiters.popleft()
            if not waiter.gone:
                waiter.event.set()
                self._left -= 1
        if waiters or self._left < self.per_turn:
            # Passes were used this turn: the quota is renewed next turn.
            self._schedule_turn()
