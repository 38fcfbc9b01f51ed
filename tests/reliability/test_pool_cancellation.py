"""Seeded random cancellation of pool leases: nothing keeps running, no session leased twice.

Each round starts a few lessees on one pool (more than ``max_size``, so some wait) and
cancels each at a random moment: while it waits for a lease, mid-query, mid-stream,
with a ``collect_nowait()`` job outstanding (the return aborts it), right after a
``use schema`` (the return restores it), or during the return itself. Some rounds close
the pool under its lessees. After each round the server (the emulator's inspection API)
must show no query of the round still running, the pool must be back within its bounds
with nothing leased or waiting, every pooled session logged in on the server, and a
lease must see the builder's schema. No session may ever be leased to two tasks at once.

The seed comes from ``ASYNCSESSION_SEED`` (else random) and is in every failure message:
``ASYNCSESSION_SEED=<seed> pytest tests/reliability/test_pool_cancellation.py``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from asyncsession import (
    PoolClosedError,
    PoolTimeout,
    QueryCancelledError,
    SessionClosedError,
    SessionPool,
)
from asyncsession.testing import LocalSnowflake
from tests.helpers import both_backends, until
from tests.pool_support import builder_for
from tests.reliability.random_rounds import RoundId, Tally, run_random_rounds, vary_executor_paths

pytestmark = pytest.mark.anyio

MARK = "-- poolrel"
MAX_SIZE = 3
ACTIONS = ("quick", "wait", "stream", "job", "use", "job+return")
#: Where the lessee is cancelled, as a delay drawn from these ranges (seconds).
DELAYS = {"never": None, "early": (0.0, 0.02), "mid": (0.02, 0.3), "late": (0.3, 0.6)}


@dataclass
class Round:
    in_use: set[int] = field(default_factory=set)
    overlaps: list[int] = field(default_factory=list)
    #: Each lease's executor path (``vary_executor_paths``), for failure messages.
    paths: list[str] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def running_of_rounds(sf: LocalSnowflake) -> list[dict[str, Any]]:
    return [q for q in sf.running_queries() if MARK in q["sql_text"]]


async def act(session: Any, action: str, rng: random.Random) -> None:
    if action == "quick":
        await session.sql(f"select 1 {MARK}").collect()
    elif action == "wait":
        await session.sql(f"select system$wait(30) {MARK}").collect()
    elif action == "stream":
        query = session.sql(f"select range from range(2000) {MARK}")
        async with query.to_local_iterator(batch_rows=100) as rows:
            async for _ in rows:
                await anyio.sleep(0.001)
    elif action == "job":
        await session.sql(f"select system$wait(30) {MARK}").collect_nowait()
        await anyio.sleep(rng.uniform(0, 0.3))
    elif action == "use":
        await session.use_schema("POOLREL")
        await session.sql(f"select 2 {MARK}").collect()
    elif action == "job+return":  # leave at once: the return aborts the job (cancel lands there)
        await session.sql(f"select system$wait(30) {MARK}").collect_nowait()


async def lessee(
    pool: SessionPool, action: str, delay: tuple[float, float] | None, seed: int, r: Round
) -> None:
    rng = random.Random(seed)
    if delay is None and action == "wait":
        delay = DELAYS["late"]  # a 30 s query is always cancelled
    deadline = float("inf") if delay is None else rng.uniform(*delay)
    try:
        with anyio.move_on_after(deadline) as scope:
            async with pool.session(timeout=20) as session:
                r.paths.append(vary_executor_paths(session, rng))
                sid = session.session_id
                if sid in r.in_use:
                    r.overlaps.append(sid)
                r.in_use.add(sid)
                try:
                    await act(session, action, rng)
                finally:
                    r.in_use.discard(sid)
        r.count("cancelled" if scope.cancelled_caught else "done")
    except (PoolClosedError, SessionClosedError, QueryCancelledError) as e:
        r.count(type(e).__name__)
    except PoolTimeout:
        r.count("PoolTimeout")


async def check_every_idle_session(pool: SessionPool, state: str) -> None:
    """Lease every idle session at once: each must show the builder's schema."""
    idle = pool.stats()["idle"]
    entered = 0
    release = anyio.Event()

    async def lease_one() -> None:
        nonlocal entered
        async with pool.session(timeout=20) as session:
            entered += 1
            schema = await session.get_current_schema()
            assert schema == "PUBLIC", f"{state}: session {session.session_id} has {schema}"
            if entered == idle:
                release.set()
            await release.wait()

    async with anyio.create_task_group() as tg:
        for _ in range(idle):
            tg.start_soon(lease_one)


class PoolRounds:
    """The rounds' pool: a new one after a round that closed it."""

    def __init__(self, sf: LocalSnowflake) -> None:
        self.sf = sf
        self.builder = builder_for(sf, cancel_timeout=5)
        self.pool: SessionPool | None = None

    async def play(self, rng: random.Random, round_id: RoundId, tally: Tally) -> None:
        sf, where = self.sf, round_id.where
        if self.pool is None:
            self.pool = await self.builder.create_pool(min_size=1, max_size=MAX_SIZE)
        pool = self.pool
        r = Round()
        plan = [
            (rng.choice(ACTIONS), rng.choice(list(DELAYS)))
            for _ in range(rng.randint(1, 2 * MAX_SIZE + 2))
        ]
        closing = rng.random() < 0.1
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for action, moment in plan:
                    tg.start_soon(lessee, pool, action, DELAYS[moment], rng.randrange(2**32), r)
                if closing:
                    await anyio.sleep(rng.uniform(0, 0.3))
                    await pool.aclose()
        state = f"{where} plan={plan} closing={closing} paths={r.paths} outcomes={r.outcomes}"
        assert r.overlaps == [], f"{state}: sessions leased twice at once: {r.overlaps}"
        try:
            await until(lambda: not running_of_rounds(sf), 10)
        except TimeoutError:
            raise AssertionError(f"{state}: still running: {running_of_rounds(sf)}") from None
        stats = pool.stats()
        assert stats["leased"] == 0, f"{state}: {stats}"
        assert stats["waiting"] == 0, f"{state}: {stats}"
        assert stats["size"] <= MAX_SIZE, f"{state}: {stats}"
        known = {int(s["session_id"]) for s in sf.sessions()}
        ids = {p.session.session_id for p in pool._live}
        if closing:
            assert stats["size"] == 0, f"{state}: {stats}"
            self.pool = None
        else:
            assert ids <= known, f"{state}: pooled sessions gone from the server"
            await check_every_idle_session(pool, state)
        tally.operations += len(plan)
        for outcome, count in r.outcomes.items():
            tally.count(outcome, count)

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()


async def check(sf: LocalSnowflake, rounds: int, budget: float, min_rounds: int) -> None:
    pool_rounds = PoolRounds(sf)
    async with pool_rounds.builder.create() as admin:
        await admin.sql("create schema if not exists POOLREL").collect()
    await run_random_rounds(
        "pool cancellation",
        pool_rounds.play,
        rounds=rounds,
        budget=budget,
        min_rounds=min_rounds,
        close=pool_rounds.aclose,
    )


@both_backends
async def test_pool_random_cancellation(local_snowflake: LocalSnowflake) -> None:
    await check(local_snowflake, rounds=15, budget=25, min_rounds=8)


@pytest.mark.slow
@pytest.mark.timeout(600)
@both_backends
async def test_pool_random_cancellation_many_rounds(local_snowflake: LocalSnowflake) -> None:
    await check(local_snowflake, rounds=300, budget=420, min_rounds=200)
