"""The seeded round runner the random-cancellation tests share.

A test gives ``run_random_rounds`` what one round does; the runner draws every round
from one generator seeded by ``ASYNCSESSION_SEED`` (else random), stops after ``rounds``
or once ``budget`` seconds are spent, puts the seed in every failure message, prints
the tally and checks that at least ``min_rounds`` rounds ran.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio.lowlevel

from asyncsession import AsyncSession, _executor, _turnstile
from asyncsession._session import core_of
from asyncsession.testing import LocalSnowflake


def seed_from_env() -> int:
    text = os.environ.get("ASYNCSESSION_SEED", "")
    return int(text) if text.strip() else random.SystemRandom().randrange(2**32)


def vary_executor_paths(session: AsyncSession, rng: random.Random) -> str:
    """Put ``session`` on a random executor path; return which (for failure messages).

    Every path gets rounds: with no one-round-trip slots every awaited query is submitted
    and waited for by the poller; with one start per loop turn, all but the first of a
    round's queries wait their turn in the turnstile; without the native core (5.x under
    asyncio) submitted queries take the thread path; on 4.x, status requests and result
    fetches go on the loop or in threads. The other choice is the default as
    the test configured it (read now: the ``query_path`` fixture patches it).
    """
    runner = core_of(session).runner
    runner.sync_slots = rng.choice((0, _executor.DEFAULT_SYNC_SLOTS))
    runner.turnstile.per_turn = rng.choice((1, _turnstile.DEFAULT_PER_TURN))
    runner.native = rng.choice((False, _executor.DEFAULT_NATIVE))
    # 4.x: status requests and result fetches on the loop (``_http``) or in threads.
    runner.loop_http = rng.choice((False, _executor.DEFAULT_LOOP_HTTP))
    return (
        f"slots={runner.sync_slots} per_turn={runner.turnstile.per_turn} "
        f"native={runner.native_core() is not None} loop_http={runner.loop_http}"
    )


class Failure(AssertionError):
    """A round's finding; its message already names the seed and round."""


@dataclass
class Tally:
    rounds: int = 0
    operations: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str, n: int = 1) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + n


@dataclass(frozen=True)
class RoundId:
    seed: int
    index: int

    @property
    def where(self) -> str:
        return f"seed={self.seed} round={self.index}"


#: One round: draw what to do from the generator, do it, check, add to the tally.
Play = Callable[[random.Random, RoundId, Tally], Awaitable[None]]


async def run_random_rounds(
    title: str,
    play: Play,
    *,
    rounds: int,
    budget: float,
    min_rounds: int,
    close: Callable[[], Awaitable[None]] | None = None,
) -> Tally:
    """``close`` (if given) runs after the rounds, whatever happened: the rounds' session
    or pool, kept from round to round, is closed before the test ends."""
    try:
        return await _run(title, play, rounds, budget, min_rounds)
    finally:
        if close is not None:
            await close()


async def _run(title: str, play: Play, rounds: int, budget: float, min_rounds: int) -> Tally:
    seed = seed_from_env()
    rng = random.Random(seed)
    tally = Tally()
    started = time.monotonic()
    try:
        for index in range(rounds):
            await play(rng, RoundId(seed, index), tally)
            tally.rounds += 1
            if time.monotonic() - started > budget:
                break
    except Failure as e:
        raise AssertionError(f"{e} (reproduce with ASYNCSESSION_SEED={seed})") from e
    except AssertionError as e:
        prefix = "" if f"seed={seed}" in str(e) else f"seed={seed}: "
        raise AssertionError(f"{prefix}{e} (reproduce with ASYNCSESSION_SEED={seed})") from e
    print(
        f"{title}: seed={seed} rounds={tally.rounds} operations={tally.operations} "
        f"outcomes={tally.outcomes} in {time.monotonic() - started:.1f}s"
    )
    assert tally.rounds >= min_rounds, f"seed={seed}: only {tally.rounds} rounds in {budget}s"
    return tally


async def checkpoints(n: int) -> None:
    for _ in range(n):
        await anyio.lowlevel.checkpoint()


def mine_running(sf: LocalSnowflake, session_id: int) -> list[dict[str, Any]]:
    return [q for q in sf.running_queries() if q["session_id"] == session_id]
