"""Seeded random cancellation inside transactions: all or nothing, nothing left running.

Each round runs one transaction on a shared session: ``BEGIN``, a few inserts (some in
tasks started inside the block, some with a wait between them), ``COMMIT``. It is
cancelled at a random moment (while BEGIN is in flight, during an insert or a wait,
while COMMIT is in flight, or not at all), or fails with an exception. Meanwhile an
observer task on the same session counts the table's rows: it must wait for the
transaction and never see part of it. Then, on the server: the table holds all of the
round's rows or none (all when the block finished), no query of the session runs, no
transaction is open, and the session still works.

Seed: ``ASYNCSESSION_SEED`` (else random), in every failure message.
"""

from __future__ import annotations

import random

import anyio
import anyio.lowlevel
import pytest

from asyncsession import AsyncSession, Session
from asyncsession._session import core_of
from asyncsession.testing import LocalSnowflake
from tests.helpers import both_backends, connect, until
from tests.reliability.random_rounds import (
    Failure,
    Play,
    RoundId,
    Tally,
    checkpoints,
    mine_running,
    run_random_rounds,
    vary_executor_paths,
)

pytestmark = pytest.mark.anyio

MOMENTS = ("none", "ticks", "deadline", "error")
#: Per-request latency the emulator adds, so that cancellations land mid-request.
LATENCY_MS = 3


class Planned(Exception):
    """The exception a round raises inside its transaction."""


def committed_rows(sf: LocalSnowflake, table: str) -> int:
    with connect(sf.connection_parameters) as conn:
        return int(conn.cursor().execute(f"select count(*) from {table}").fetchone()[0])


async def transaction_round(
    session: AsyncSession, rng: random.Random, table: str, rows: int, moment: str
) -> str:
    """Run the round's transaction, cancelled or failed at ``moment``; how it ended."""
    fan_out = rng.random() < 0.4
    waits = [rng.choice((0, 5, 20)) for _ in range(rows)]
    completed: list[bool] = []

    async def body() -> None:
        async with session.transaction():
            if fan_out:
                await session.collect_many(
                    [session.sql(f"insert into {table} values (?)", [n]) for n in range(rows)]
                )
            else:
                for n in range(rows):
                    await session.sql(f"insert into {table} values (?)", [n]).collect()
                    if waits[n]:
                        await session.sql(
                            f"select system$wait({waits[n]}, 'MILLISECONDS')"
                        ).collect()
            if moment == "error":
                raise Planned
        completed.append(True)  # the block's COMMIT returned

    with anyio.CancelScope() as scope:
        if moment == "ticks":
            async with anyio.create_task_group() as tg:
                tg.start_soon(body)
                await checkpoints(rng.randrange(0, 12))
                tg.cancel_scope.cancel()
        elif moment == "deadline":
            scope.deadline = anyio.current_time() + rng.uniform(0, 0.12)
            await body()
        else:
            try:
                await body()
            except Planned:
                return "error"
    return "finished" if completed else "cancelled"


async def record(
    session: AsyncSession,
    rng: random.Random,
    table: str,
    rows: int,
    moment: str,
    outcomes: list[str],
) -> None:
    outcomes.append(await transaction_round(session, rng, table, rows, moment))


async def observer(session: AsyncSession, table: str, rows: int, seen: list[int]) -> None:
    """Another task on the same session: must never see part of the transaction."""
    for _ in range(3):
        result = await session.sql(f"select count(*) from {table}").collect()
        seen.append(int(result[0][0]))
        await anyio.lowlevel.checkpoint()


def transaction_rounds(sf: LocalSnowflake, session: AsyncSession) -> Play:
    sid = session.session_id

    async def play(rng: random.Random, round_id: RoundId, stats: Tally) -> None:
        where = round_id.where
        table = f"t_round_{round_id.seed}_{sid}_{round_id.index}"  # unique on a shared emulator
        await session.sql(f"create table {table} (n int)").collect()
        path = vary_executor_paths(session, rng)
        rows = rng.randint(1, 4)
        moment = rng.choice(MOMENTS)
        seen: list[int] = []
        outcomes: list[str] = []
        round_rng = random.Random(rng.randrange(2**32))
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(record, session, round_rng, table, rows, moment, outcomes)
                await checkpoints(rng.randrange(0, 4))
                tg.start_soon(observer, session, table, rows, seen)
        outcome = outcomes[0]
        state = f"{where} {path} moment={moment} rows={rows} outcome={outcome} seen={seen}"
        if session.running_queries != ():
            raise Failure(f"{state}: still tracked {session.running_queries}")
        try:
            await until(lambda: not mine_running(sf, sid), 10)
        except TimeoutError:
            raise Failure(f"{state}: still running: {mine_running(sf, sid)}") from None
        if session.in_transaction or core_of(session).gate.owner is not None:
            raise Failure(f"{state}: the session still thinks a transaction is open")
        if sf.session(sid)["transaction_id"] is not None:
            raise Failure(f"{state}: a transaction is still open on the server")
        count = committed_rows(sf, table)
        expected = {"finished": {rows}, "error": {0}}.get(outcome, {0, rows})
        if count not in expected:
            raise Failure(f"{state}: {count} rows committed, expected one of {expected}")
        if any(n not in (0, rows) for n in seen):
            raise Failure(f"{state}: the observer saw part of the transaction")
        assert (await session.sql("select 1").collect())[0][0] == 1, state
        stats.operations += 1
        stats.count(f"{outcome}:{'all' if count else 'none'}")

    return play


async def check(sf: LocalSnowflake, rounds: int, budget: float, min_rounds: int) -> None:
    sf.set_latency(LATENCY_MS)
    params = {**sf.connection_parameters, "cancel_timeout": 5}
    async with Session.builder.configs(params).create() as session:
        await run_random_rounds(
            "transaction cancellation",
            transaction_rounds(sf, session),
            rounds=rounds,
            budget=budget,
            min_rounds=min_rounds,
        )


@both_backends
async def test_transaction_cancellation(shared_emulator: LocalSnowflake) -> None:
    await check(shared_emulator, rounds=30, budget=25, min_rounds=20)


@pytest.mark.slow
@both_backends
async def test_transaction_cancellation_soak(shared_emulator: LocalSnowflake) -> None:
    await check(shared_emulator, rounds=400, budget=280, min_rounds=400)
