"""``Turnstile``: how many queries start per event-loop turn, and how many wait for a thread.

A fan-out (``asyncio.gather`` or a task group of 1,000 queries) makes every task ready in
the same loop iteration, and the loop runs each one's first step (bookkeeping up to its
first real wait) before anything else: 1,000 such steps stall every other task of the
loop for hundreds of ms. Behind the turnstile a task past the quota of this turn parks
at once (a few µs), and each following turn lets the next ``per_turn`` through, so the
steps spread over turns and the loop serves its other tasks between them.

It can also bound the ``backlog``: queries through it and not yet *settled* (submitted,
or running with one round trip); the rest then wait here, parked with a few objects each,
instead of set up (≈80 objects each) in the queue for a worker thread. The executor
leaves it at the admission limit (why: ``_executor``).

A query that finds the turnstile free passes without waiting (no checkpoint added). A
``cancel_all()`` or ``aclose()`` turns the parked ones away, as it aborts the queries it
finds in the registry: a query of the fan-out it overlaps does not start after it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import anyio

#: Queries that may start their first step in one event-loop turn.
DEFAULT_PER_TURN = 16


def _call_soon() -> Callable[[Callable[[], object]], object]:
    """Schedule a callback on the current event loop for its next turn."""
    import asyncio  # here, not at import: ``import asyncsession`` stays off asyncio

    try:
        return asyncio.get_running_loop().call_soon
    except RuntimeError:  # not asyncio: anyio's other backend is trio
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon


class Pass:
    """A way through the turnstile; ``settle()`` it (once, idempotent) when the query no
    longer waits for a thread. ``refused``: turned away by ``turn_away()`` instead."""

    __slots__ = ("_turnstile", "refused")

    def __init__(self, turnstile: Turnstile | None, refused: str | None = None) -> None:
        self._turnstile = turnstile
        self.refused = refused

    def settle(self) -> None:
        turnstile, self._turnstile = self._turnstile, None
        if turnstile is not None:
            turnstile._settled()


class _Waiter:
    __slots__ = ("event", "gone", "refused")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.gone = False  # cancelled while parked: its pass goes to the next one
        self.refused: str | None = None


class Turnstile:
    """Lets at most ``per_turn`` tasks through per loop turn, and ``backlog`` unsettled."""

    def __init__(self, per_turn: int = DEFAULT_PER_TURN, backlog: int | None = None) -> None:
        self.per_turn = max(1, per_turn)
        self.backlog = max(self.per_turn, backlog if backlog is not None else 4 * self.per_turn)
        self._left = self.per_turn
        #: Passed and not settled yet (a released waiter counts from its release).
        self.unsettled = 0
        self._waiters: deque[_Waiter] = deque()
        self._turn_scheduled = False
        #: Tasks that had to wait for a later turn (for tests and benchmarks).
        self.parked = 0

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.gone)

    async def enter(self) -> Pass:
        """Pass now or later; the pass says whether ``turn_away()`` refused it instead."""
        if self._left > 0 and self.unsettled < self.backlog and not self._waiters:
            self._left -= 1
            self.unsettled += 1
            self._schedule_turn()
            return Pass(self)
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
                self._hand_on()  # cancelled as its pass came: the next one takes it
            raise
        if waiter.refused is not None:
            return Pass(None, waiter.refused)
        return Pass(self)

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

    def _settled(self) -> None:
        self.unsettled -= 1
        if self._waiters:
            self._schedule_turn()

    def _hand_on(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.gone:
                waiter.event.set()
                return
        self.unsettled -= 1

    def _schedule_turn(self) -> None:
        if not self._turn_scheduled:
            self._turn_scheduled = True
            _call_soon()(self._new_turn)

    def _new_turn(self) -> None:
        """On the loop, once per turn while passes are used: the next ones pass."""
        self._turn_scheduled = False
        self._left = self.per_turn
        waiters = self._waiters
        while self._left > 0 and self.unsettled < self.backlog and waiters:
            waiter = waiters.popleft()
            if not waiter.gone:
                waiter.event.set()
                self._left -= 1
                self.unsettled += 1
        while waiters and waiters[0].gone:
            waiters.popleft()
        if (waiters and self.unsettled < self.backlog) or self._left < self.per_turn:
            # Passes were used this turn: the quota is renewed next turn. With the backlog
            # full, a settling query schedules the next turn instead (no turn per turn).
            self._schedule_turn()
