"""The turnstile that spreads a fan-out's first steps over event-loop turns (no connector)."""

from __future__ import annotations

import anyio
import pytest

from asyncsession._turnstile import Turnstile
from tests.helpers import both_backends

pytestmark = [pytest.mark.anyio, both_backends]


class HeldTurnstile(Turnstile):
    """Its turns come only when the test calls ``_new_turn()``."""

    def _schedule_turn(self) -> None:
        pass


class CountingTurnstile(Turnstile):
    """Counts the turns in which it renewed its quota."""

    turns = 0

    def _new_turn(self) -> None:
        self.turns += 1
        super()._new_turn()


async def test_a_free_turnstile_adds_no_checkpoint_and_the_rest_of_a_turn_park() -> None:
    turnstile = Turnstile(per_turn=2)
    with anyio.CancelScope() as scope:
        scope.cancel()
        # No checkpoint on the way through, so the cancellation is not delivered here.
        assert (await turnstile.enter()).refused is None
        assert (await turnstile.enter()).refused is None
        with pytest.raises(anyio.get_cancelled_exc_class()):
            await turnstile.enter()  # the third of this turn parks, and is cancelled
    assert turnstile.parked == 1
    assert turnstile.waiting == 0


async def test_a_fan_out_passes_at_most_per_turn_tasks_in_each_turn() -> None:
    turnstile = CountingTurnstile(per_turn=3)
    passed_in: list[int] = []

    async def one() -> None:
        passed = await turnstile.enter()
        passed_in.append(turnstile.turns)
        passed.settle()

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one)
    assert len(passed_in) == 20
    assert turnstile.parked == 17
    # However a backend orders a turn's tasks: by the end of turn t (counted from 0, the
    # turn of the fan-out), at most 3 * (t + 1) have passed.
    for turn in range(max(passed_in) + 1):
        assert sum(1 for t in passed_in if t <= turn) <= 3 * (turn + 1)
    assert max(passed_in) >= 6


async def test_at_most_backlog_passes_are_unsettled_and_settling_lets_the_next_in() -> None:
    turnstile = Turnstile(per_turn=2, backlog=3)
    settle = anyio.Event()
    most = 0

    async def one() -> None:
        nonlocal most
        passed = await turnstile.enter()
        most = max(most, turnstile.unsettled)
        await settle.wait()
        passed.settle()
        passed.settle()  # idempotent

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(one)
        await parked(turnstile, 5)
        for _ in range(20):  # turns go by: the backlog stays full, nobody else passes
            await anyio.lowlevel.checkpoint()
        assert turnstile.waiting == 5
        settle.set()
    assert most == 3
    assert turnstile.unsettled == 0


async def parked(turnstile: Turnstile, count: int) -> None:
    with anyio.fail_after(5):
        while turnstile.waiting != count:
            await anyio.lowlevel.checkpoint()


async def test_a_waiter_cancelled_while_parked_gives_its_pass_to_the_next() -> None:
    turnstile = HeldTurnstile(per_turn=1)
    passed: list[str] = []

    scopes = {name: anyio.CancelScope() for name in "abc"}

    async def one(name: str) -> None:
        with scopes[name]:
            await turnstile.enter()
            passed.append(name)

    async with anyio.create_task_group() as tg:
        for name in "abc":
            tg.start_soon(one, name)
        await parked(turnstile, 2)
        # Which one passed depends on the backend's order (trio's is not the start order).
        first, cancelled, last = passed + [n for n in "abc" if n not in passed]
        scopes[cancelled].cancel()  # parked behind the first
        await parked(turnstile, 1)
        turnstile._new_turn()
    assert sorted(passed) == sorted([first, last])
    assert turnstile.waiting == 0


async def test_turn_away_releases_the_parked_with_the_reason() -> None:
    turnstile = HeldTurnstile(per_turn=1)
    outcomes: list[str | None] = []

    async def one() -> None:
        outcomes.append((await turnstile.enter()).refused)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(one)
        await parked(turnstile, 3)
        assert turnstile.turn_away("cancel_all()") == 3
    assert sorted(outcomes, key=str) == [None] + ["cancel_all()"] * 3
