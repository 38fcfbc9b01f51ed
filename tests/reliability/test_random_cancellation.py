"""Seeded random cancellation: whatever moment a query is cancelled at, nothing keeps running.

Each round starts a few concurrent operations on one session (slow and quick selects, jobs
via ``collect_nowait``, streaming with ``to_local_iterator``) and cancels each at a random
moment: before it is submitted, right after, while it runs, while its rows are fetched
or streamed, through ``job.cancel()`` / ``cancel_all()``, or by closing the session under
it. Then the server (the emulator's inspection API) must show no query of the session
still running, and the session's own bookkeeping must be empty.

Each operation's outcome is labelled for what happened: ``ok`` (ran to its end, no
cancellation aimed at it), ``ok, finished before its cancellation``, ``cancelled`` (its own
task was cancelled before it ended, the submit moment included),
``QueryCancelledError(<reason>)`` or ``SessionClosedError``; a 30 s query that reports
``ok`` is a failure.

The seed comes from ``ASYNCSESSION_SEED`` (else random) and is in every failure message:
``ASYNCSESSION_SEED=<seed> pytest tests/reliability/test_random_cancellation.py``.
"""

from __future__ import annotations

import random

import anyio
import anyio.lowlevel
import pytest

from asyncsession import AsyncSession, QueryCancelledError, Session, SessionClosedError
from asyncsession.testing import LocalSnowflake
from tests.helpers import both_backends, until
from tests.reliability.random_rounds import (
    Failure,
    RoundId,
    Tally,
    checkpoints,
    mine_running,
    run_random_rounds,
    vary_executor_paths,
)

pytestmark = pytest.mark.anyio

#: A query that must never end on its own during a round: if it is still RUNNING after
#: the round, a cancellation left it behind.
LONG_MS = 30_000
STREAM_ROWS = 600
KINDS = ("wait", "quick", "job", "stream")
MOMENTS = ("none", "before", "submit", "running", "fetching", "job.cancel", "aclose", "cancel_all")


async def operation(
    session: AsyncSession,
    rng: random.Random,
    kind: str,
    moment: str,
    where: str,
    *,
    closing: bool,
    cancelling_all: bool,
) -> str:
    """Run one operation, cancelled at ``moment``; return how it ended (or raise Failure)."""
    # A query that is going to be cancelled may be one that would run for minutes.
    cancelled = moment in ("submit", "running", "aclose", "cancel_all") or (
        moment == "job.cancel" and kind == "job"
    )
    long = cancelled and kind in ("wait", "job") and rng.random() < 0.7
    ms = LONG_MS if long else rng.choice((0, 5, 50, 150))
    wait_sql = f"select system$wait({ms}, 'MILLISECONDS')"
    delay = rng.uniform(0, 0.15)
    ticks = rng.randrange(0, 4)
    # What the body saw, for an honest label: it ran to its end, or its job was aborted.
    completed = False
    job_aborted: QueryCancelledError | None = None

    async def body() -> None:
        nonlocal completed, job_aborted
        if kind == "wait":
            rows = await session.sql(wait_sql).collect()
            assert rows[0][0].startswith("waited"), rows
        elif kind == "quick":
            value = rng.randrange(1000)
            rows = await session.sql("select ?", params=[value]).collect()
            assert rows[0][0] == value, rows
        elif kind == "job":
            job = await session.sql(wait_sql).collect_nowait()
            if moment == "job.cancel":
                await anyio.sleep(delay)
                await job.cancel()
                try:
                    await job.result()
                except QueryCancelledError as e:
                    job_aborted = e
                    return
                # It may have finished before the abort arrived.
                assert not long, f"{where}: a {LONG_MS} ms job survived job.cancel()"
                completed = True
                return
            rows = await job.result()
            assert rows[0][0].startswith("waited"), rows
        else:
            n = 0
            sql = f"select range as n from range({STREAM_ROWS})"
            async with session.sql(sql).to_local_iterator(batch_rows=50) as stream:
                async for row in stream:
                    assert row[0] == n, (row, n)
                    n += 1
                    if moment == "fetching" and n == ticks * 50 + 10:
                        await anyio.lowlevel.checkpoint()
            assert n == STREAM_ROWS
        completed = True

    try:
        with anyio.CancelScope() as scope:
            if moment == "before":
                scope.cancel()
                await body()
            elif moment == "submit":
                try:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(body)
                        await checkpoints(ticks + 1)
                        tg.cancel_scope.cancel()
                except BaseExceptionGroup as group:
                    if len(group.exceptions) == 1:
                        raise group.exceptions[0] from None
                    raise
            elif moment in ("running", "fetching"):
                scope.deadline = anyio.current_time() + delay
                await body()
            else:
                await body()
    except QueryCancelledError as e:
        if not (closing or cancelling_all or moment == "job.cancel"):
            raise Failure(f"{where}: unexpected {e!r}") from e
        return f"QueryCancelledError({e.reason})"
    except SessionClosedError as e:
        if not closing:
            raise Failure(f"{where}: unexpected {e!r}") from e
        return "SessionClosedError"
    except Exception as e:
        raise Failure(f"{where}: unexpected {type(e).__name__}: {e}") from e
    # Labels say what happened: "ok" only for a body that ran to its end. A task cancelled
    # at the submit moment is cancelled by its task group's scope, not ``scope``.
    if job_aborted is not None:
        return f"QueryCancelledError({job_aborted.reason})"
    if not completed:
        if moment in ("before", "submit", "running", "fetching"):
            return "cancelled"
        raise Failure(f"{where}: the operation neither completed nor was cancelled")
    if scope.cancelled_caught:
        raise Failure(f"{where}: completed, yet its cancellation was caught")
    if long:
        raise Failure(f"{where}: a {LONG_MS} ms query completed despite {moment}")
    if moment == "none" or (moment == "job.cancel" and kind != "job"):
        return "ok"
    return "ok, finished before its cancellation"


async def one(
    session: AsyncSession,
    kind: str,
    moment: str,
    what: str,
    op_seed: int,
    flags: tuple[bool, bool],
    outcomes: list[str],
) -> None:
    closing, cancelling_all = flags
    # Each operation has its own generator: the tasks interleave differently on each run.
    rng = random.Random(op_seed)
    outcome = await operation(
        session, rng, kind, moment, what, closing=closing, cancelling_all=cancelling_all
    )
    outcomes.append(outcome)


class SessionRounds:
    """The rounds' session: a new one after a round that closed it."""

    def __init__(self, sf: LocalSnowflake) -> None:
        self.sf = sf
        self.session: AsyncSession | None = None

    async def play(self, rng: random.Random, round_id: RoundId, stats: Tally) -> None:
        sf, where = self.sf, round_id.where
        if self.session is None:
            params = {**sf.connection_parameters, "cancel_timeout": 5}
            self.session = await Session.builder.configs(params).create()
        session = self.session
        sid = session.session_id
        path = vary_executor_paths(session, rng)
        plan = [(rng.choice(KINDS), rng.choice(MOMENTS)) for _ in range(rng.randint(1, 6))]
        # The round ends by closing the session when any of its operations says so.
        closing = any(m == "aclose" for _, m in plan) or rng.random() < 0.1
        cancelling_all = any(m == "cancel_all" for _, m in plan)
        outcomes: list[str] = []

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i, (kind, moment) in enumerate(plan):
                    what = f"{where} op={i} {kind}/{moment}"
                    flags = (closing, cancelling_all)
                    op_seed = rng.randrange(2**32)
                    tg.start_soon(one, session, kind, moment, what, op_seed, flags, outcomes)
                if closing or cancelling_all:
                    await anyio.sleep(rng.uniform(0, 0.2))
                    if cancelling_all:
                        await session.cancel_all()
                    if closing:
                        await session.aclose()
                    # A query submitted after the cancel_all() must end too.
                    if cancelling_all and not closing:
                        await anyio.sleep(rng.uniform(0, 0.05))
                        await session.cancel_all()
        state = f"{where} {path} plan={plan} outcomes={outcomes}"
        assert len(outcomes) == len(plan), f"{state}: an operation has no outcome"
        assert session.running_queries == (), f"{state}: {session.running_queries}"
        try:
            await until(lambda: not mine_running(sf, sid), 10)
        except TimeoutError:
            left = mine_running(sf, sid)
            raise Failure(f"{state}: still running on the server: {left}") from None
        if closing or session.is_closed:
            assert session.is_closed, state
            known = {s["session_id"] for s in sf.sessions()}
            assert sid not in known, f"{state}: session still logged in after aclose()"
            self.session = None
        stats.operations += len(plan)
        for outcome in outcomes:
            stats.count(outcome)

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.aclose()


async def check(sf: LocalSnowflake, rounds: int, budget: float, min_rounds: int) -> None:
    session_rounds = SessionRounds(sf)
    await run_random_rounds(
        "random cancellation",
        session_rounds.play,
        rounds=rounds,
        budget=budget,
        min_rounds=min_rounds,
        close=session_rounds.aclose,
    )


@both_backends
async def test_random_cancellation(local_snowflake: LocalSnowflake, query_path: str) -> None:
    # Every path of the executor: one round trip, submitted + polled, and both mixed.
    await check(local_snowflake, rounds=12, budget=14, min_rounds=8)


#: The 1,000-round profile: ``make random-soak`` runs it on both connector generations
#: (or ``pytest -m "slow and not soak" tests/reliability/test_random_cancellation.py``).
@pytest.mark.slow
@pytest.mark.timeout(280 + 120)  # its own budget, beyond the suite's 180 s per test
@both_backends
async def test_random_cancellation_soak(local_snowflake: LocalSnowflake, query_path: str) -> None:
    await check(local_snowflake, rounds=1000, budget=280, min_rounds=1000)
