"""The soak's workload: worker tasks running a seeded random mix of operations, each
outcome checked (see ``benchmarks.soak``).

One class of ~500 lines, over the usual ~400: it is one thing, the table of operations
(each a method, ``op_<kind>``) and the rules that say which outcome explains which error.
"""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any
from weakref import WeakKeyDictionary

import anyio
import anyio.lowlevel
from snowflake.connector.errors import ProgrammingError

from asyncsession import AsyncSession, QueryCancelledError, Session, SessionClosedError
from asyncsession.testing import LocalSnowflake
from benchmarks.probes import until
from benchmarks.soak.report import Failure, Problems, Tally

WORKERS = 6
#: Shared sessions: slot 0 lives for the whole run (and gets ``cancel_all()``), slot 1 is
#: replaced by the ``rotate`` operation.
SHARED = 2
#: One operation taking longer than this is a hang.
OP_TIMEOUT = 60.0
#: A query that must never end on its own during a run: one left running by a
#: cancellation is still RUNNING at the end.
LONG = "select system$wait(3600000, 'MILLISECONDS')"
MISSING = "select * from soak_no_such_table"
TEXTS = ("", "plain", "it's", 'say "hi"', "back\\slash", "ünïcødé ✓", "x' or '1'='1", "a\nb")
STATUSES = {"RUNNING", "QUEUED", "RESUMING_WAREHOUSE", "SUCCESS", "NO_DATA"}

#: Operation kinds and their weights.
KINDS = {
    "query": 22,
    "wait": 16,
    "job": 16,
    "stream": 12,
    "error": 6,
    "fanout": 8,
    "cancel_all": 2,
    "churn": 6,
    "rotate": 1,
}


def wait_sql(ms: int) -> str:
    return f"select system$wait({ms}, 'MILLISECONDS')"


def seed_from_env() -> int:
    text = os.environ.get("ASYNCSESSION_SOAK_SEED", "")
    return int(text) if text.strip() else random.SystemRandom().randrange(2**32)


def expect(condition: object, where: str, detail: object) -> None:
    if not condition:
        raise Failure(where, detail)


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for e in error.exceptions for leaf in leaves(e)]
    return [error]


async def collect_long(session: AsyncSession, errors: list[BaseException]) -> None:
    """Run the hour-long query; record any error it ends with (cancellation propagates)."""
    try:
        await session.sql(LONG).collect()
    except Exception as e:
        errors.append(e)


class Soak:
    def __init__(self, sf: LocalSnowflake, seed: int, tally: Tally, problems: Problems) -> None:
        self.sf = sf
        self.seed = seed
        self.t = tally
        #: Sessions left on the server (or their queries running) after aclose(): recorded,
        #: and the run goes on, so that the figures show how often.
        self.problems = problems
        self.params = sf.connection_parameters
        self.shared: list[AsyncSession] = []
        #: Moves when a cancel_all() of the session starts and when it returns, and how
        #: many are in progress: an operation may see QueryCancelledError("cancel_all()")
        #: only if one was in progress when it started or this moved while it ran (its
        #: SYSTEM$CANCEL_ALL_QUERIES stops what starts while it is out, too).
        self.cancel_alls: WeakKeyDictionary[AsyncSession, int] = WeakKeyDictionary()
        self.cancel_alls_running: WeakKeyDictionary[AsyncSession, int] = WeakKeyDictionary()

    # ---- sessions -------------------------------------------------------------------
    async def open(self) -> AsyncSession:
        session = await Session.builder.configs(self.params).create()
        self.t.events["sessions opened"] += 1
        return session

    async def close(self, session: AsyncSession, where: str) -> None:
        sid = session.session_id
        await session.aclose()
        self.t.events["sessions closed"] += 1
        await self.check_gone(sid, where)

    async def check_gone(self, sid: int, where: str) -> None:
        """After ``aclose()``: logged out, and none of its queries running on the server."""

        def gone() -> bool:
            known = {s["session_id"] for s in self.sf.sessions()}
            return sid not in known and not self.running_of(sid)

        try:
            await until(gone, 10)
        except TimeoutError:
            known = sid in {s["session_id"] for s in self.sf.sessions()}
            running = self.running_of(sid)
            self.problems.add(
                "after aclose(): " + ("session still logged in" if known else "queries running"),
                f"{where}: 10 s after aclose() of session {sid}: still logged in: {known}; "
                f"its running queries: {running}",
            )

    def running_of(self, sid: int) -> list[dict[str, Any]]:
        return [q for q in self.sf.running_queries() if q["session_id"] == sid]

    def disrupted(self, session: AsyncSession, mark: int, error: BaseException) -> str | None:
        """How ``error`` is explained by a cancel_all()/aclose() of ``session`` (else None)."""
        if isinstance(error, SessionClosedError) and session.is_closed:
            return "SessionClosedError"
        if isinstance(error, QueryCancelledError):
            if error.reason == "aclose()" and session.is_closed:
                return "QueryCancelledError(aclose())"
            if error.reason == "cancel_all()" and self.cancel_alls.get(session, 0) != mark:
                return "QueryCancelledError(cancel_all())"
        return None

    # ---- running ----------------------------------------------------------------------
    async def run(
        self, seconds: float, sampler: Callable[[], Coroutine[Any, Any, None]] | None
    ) -> None:
        self.shared = [await self.open() for _ in range(SHARED)]
        failed = True
        try:
            deadline = anyio.current_time() + seconds
            async with anyio.create_task_group() as outer:
                if sampler is not None:
                    outer.start_soon(sampler)
                async with anyio.create_task_group() as tg:
                    for w in range(WORKERS):
                        tg.start_soon(self.worker, w, deadline)
                outer.cancel_scope.cancel()
            failed = False
        finally:
            # Every operation has ended: the sessions' bookkeeping must be empty.
            tracked = {s.session_id: s.running_queries for s in self.shared if s.running_queries}
            with anyio.CancelScope(shield=True):
                for session in self.shared:
                    if failed:
                        await session.aclose()
                    else:
                        await self.close(session, f"seed={self.seed} end")
        if tracked:
            self.problems.add(
                "end: running_queries not empty", f"seed={self.seed} end: sessions track {tracked}"
            )

    async def worker(self, w: int, deadline: float) -> None:
        rng = random.Random(f"{self.seed}/{w}")
        kinds, weights = list(KINDS), list(KINDS.values())
        n = 0
        while anyio.current_time() < deadline:
            kind = rng.choices(kinds, weights)[0]
            op_rng = random.Random(rng.randrange(2**32))
            await self.one(kind, op_rng, f"seed={self.seed} worker={w} op={n} {kind}")
            n += 1

    async def one(self, kind: str, rng: random.Random, where: str) -> None:
        session = self.shared[0 if kind == "cancel_all" else rng.randrange(SHARED)]
        # -1 matches no count: an operation that starts during a cancel_all() may meet it.
        mark = -1 if self.cancel_alls_running.get(session, 0) else self.cancel_alls.get(session, 0)
        op: Callable[[random.Random, AsyncSession, str], Awaitable[None]] = getattr(
            self, f"op_{kind}"
        )
        self.t.ops[kind] += 1
        try:
            with anyio.fail_after(OP_TIMEOUT):
                await op(rng, session, where)
        except (Exception, BaseExceptionGroup) as error:
            # A task group's errors come as a group: each must be explained. What is not is
            # recorded, and the run goes on (the figures then say how often).
            found = leaves(error)
            if any(isinstance(leaf, anyio.get_cancelled_exc_class()) for leaf in found):
                raise
            for leaf in found:
                why = None if isinstance(leaf, Failure) else self.disrupted(session, mark, leaf)
                if why is not None:
                    self.t.outcome(why)
                elif isinstance(leaf, Failure):
                    self.problems.add(f"{kind}: {leaf.detail[:100]}", str(leaf))
                elif isinstance(leaf, TimeoutError):
                    # fail_after(OP_TIMEOUT) (a hang), or a bounded wait in the operation.
                    self.problems.add(f"{kind}: timed out", f"{where}: timed out", leaf)
                else:
                    text = f"unexpected {type(leaf).__name__}: {leaf}"
                    self.problems.add(f"{kind}: {text[:100]}", f"{where}: {text}", leaf)

    # ---- operations on a shared session -------------------------------------------------
    async def op_query(self, rng: random.Random, session: AsyncSession, where: str) -> None:
        a = rng.randrange(-(2**31), 2**31)
        text = rng.choice(TEXTS)
        how = rng.randrange(5)
        if how == 0:
            rows = await session.sql("select ?, ?", params=[a, text]).collect()
            expect(len(rows) == 1 and tuple(rows[0]) == (a, text), where, rows)
        elif how == 1:
            row = await session.sql("select ? as n, ? as s", [a, text]).first()
            expect(row is not None and (a, text) == (row.N, row.S), where, row)
        elif how == 2:
            df = await session.sql("select ? as n", [a]).to_pandas()
            expect(df["N"].tolist() == [a], where, df)
        elif how == 3:
            table = await session.sql("select ? as n", [a]).to_arrow()
            expect(table.column("N").to_pylist() == [a], where, table)
        else:
            k = rng.randrange(1, 300)
            rows = await session.sql(f"select range as n from range({k})").collect()
            expect([r[0] for r in rows] == list(range(k)), where, f"{len(rows)} rows")
        self.t.outcome("ok")

    async def op_wait(self, rng: random.Random, session: AsyncSession, where: str) -> None:
        how = rng.randrange(6)
        if how == 0:  # short, runs to its end
            rows = await session.sql(wait_sql(rng.choice((0, 1, 10, 50)))).collect()
            expect(str(rows[0][0]).startswith("waited"), where, rows)
            self.t.outcome("ok")
        elif how == 1:  # a deadline while it runs (or before it is sent)
            with anyio.move_on_after(rng.uniform(0, 0.4)) as scope:
                await session.sql(LONG).collect()
            expect(scope.cancelled_caught, where, "a one-hour query completed")
            self.t.outcome("cancelled")
        elif how == 2:
            try:
                with anyio.fail_after(rng.uniform(0, 0.4)):
                    await session.sql(LONG).collect()
            except TimeoutError:
                self.t.outcome("cancelled")
            else:
                raise Failure(where, "a one-hour query completed")
        elif how == 3:  # cancelled before it starts
            with anyio.CancelScope() as scope:
                scope.cancel()
                await session.sql(LONG).collect()
            expect(scope.cancelled_caught, where, "a cancelled scope ran a query")
            self.t.outcome("cancelled")
        elif how == 4:  # its task cancelled a few checkpoints in (submission in flight)
            errors: list[BaseException] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(collect_long, session, errors)
                for _ in range(rng.randrange(8)):
                    await anyio.lowlevel.checkpoint()
                tg.cancel_scope.cancel()
            if errors:
                raise errors[0]
            self.t.outcome("cancelled")
        else:  # a race between its end and its deadline
            with anyio.move_on_after(rng.uniform(0, 0.3)) as scope:
                await session.sql(wait_sql(rng.randrange(100, 300))).collect()
            self.t.outcome("cancelled" if scope.cancelled_caught else "ok")

    async def op_job(self, rng: random.Random, session: AsyncSession, where: str) -> None:
        how = rng.randrange(7)
        if how == 0:  # awaited (maybe after a status poll)
            job = await session.sql(wait_sql(rng.choice((0, 10, 50)))).collect_nowait()
            if rng.random() < 0.5:
                status = await job.status()
                # ABORTED by a cancel_all() of the session: result() then says by whom.
                expect(status in STATUSES or status == "ABORTED", where, status)
            rows = await job.result()
            expect(str(rows[0][0]).startswith("waited"), where, rows)
            self.t.outcome("ok")
        elif how == 1:  # other result types
            a = rng.randrange(1000)
            job = await session.sql("select ? as n", [a]).collect_nowait()
            if rng.random() < 0.5:
                df = await job.result("pandas")
                expect(df["N"].tolist() == [a], where, df)
            else:
                expect(await job.result("no_result") is None, where, "no_result")
            self.t.outcome("ok")
        elif how == 2:  # job.cancel()
            job = await session.sql(LONG).collect_nowait()
            await anyio.sleep(rng.uniform(0, 0.2))
            await job.cancel()
            try:
                await job.result()
            except QueryCancelledError as e:
                if e.reason != "job.cancel()":
                    raise
                self.t.outcome("QueryCancelledError(job.cancel())")
            else:
                raise Failure(where, "a one-hour job completed after job.cancel()")
        elif how == 3:  # the task awaiting result() cancelled
            job = await session.sql(LONG).collect_nowait()
            with anyio.move_on_after(rng.uniform(0, 0.3)) as scope:
                await job.result()
            expect(scope.cancelled_caught, where, "a one-hour job completed")
            self.t.outcome("cancelled")
        elif how == 4:  # cancelled while being submitted (or just after)
            submitted = None
            with anyio.move_on_after(rng.uniform(0, 0.03)):
                submitted = await session.sql(LONG).collect_nowait()
            if submitted is not None:
                await submitted.cancel()
            self.t.outcome("cancelled")
        elif how == 5:  # failing
            try:
                job = await session.sql(MISSING).collect_nowait()
                await job.result()
            except QueryCancelledError:
                raise
            except ProgrammingError as e:
                expect(e.errno == 2003 and "does not exist" in str(e), where, repr(e))
                self.t.outcome("sql error")
            else:
                raise Failure(where, "a job on a missing table succeeded")
        else:  # polled to its end
            job = await session.sql(wait_sql(rng.randrange(50, 200))).collect_nowait()
            while not await job.is_done():  # noqa: ASYNC110 - the status is the server's
                await anyio.sleep(0.02)
            rows = await job.result()
            expect(str(rows[0][0]).startswith("waited"), where, rows)
            self.t.outcome("ok")

    async def op_stream(self, rng: random.Random, session: AsyncSession, where: str) -> None:
        k = rng.choice((0, 1, 999, 1000, 1001, 5000, 20000))
        query = session.sql(f"select range as n from range({k})")
        how = rng.randrange(6)
        seen: list[int] = []
        if how in (0, 1, 5):
            stop = rng.randrange(k + 1) if how == 1 else k
            batch_rows = rng.choice((1, 7, 100, 1000, 10_000) if k <= 1000 else (100, 10_000))
            with anyio.move_on_after(rng.uniform(0, 0.1) if how == 5 else OP_TIMEOUT) as scope:
                async with query.to_local_iterator(batch_rows=batch_rows) as stream:
                    async for row in stream:
                        if len(seen) == stop:
                            break
                        seen.append(row[0])
            expect(seen == list(range(len(seen))), where, "rows out of order")
            if not scope.cancelled_caught:
                expect(len(seen) == stop, where, f"{len(seen)} rows of {stop}")
        elif how in (2, 3):
            async with query.to_arrow_batches() as batches:
                async for table in batches:
                    seen.extend(table.column("N").to_pylist())
                    if how == 3:
                        break
            expect(seen == list(range(len(seen))), where, "rows out of order")
            expect(how == 3 or len(seen) == k, where, f"{len(seen)} rows of {k}")
        else:
            async with query.to_pandas_batches() as frames:
                async for df in frames:
                    seen.extend(df["N"].tolist())
            expect(seen == list(range(k)), where, f"{len(seen)} rows of {k}")
        self.t.events["rows streamed"] += len(seen)
        self.t.outcome("cancelled" if how == 5 and len(seen) < k else "ok")

    async def op_error(self, rng: random.Random, session: AsyncSession, where: str) -> None:
        how = rng.randrange(3)
        try:
            if how == 0:
                await session.sql(MISSING).collect()
            elif how == 1:
                await session.sql("selec 1").collect()
            else:
                async with session.sql(MISSING).to_local_iterator() as stream:
                    async for _ in stream:
                        pass
        except QueryCancelledError:
            raise
        except ProgrammingError as e:
            if how == 1:
                expect(e.errno == 1003 and "selec" in str(e), where, repr(e))
            else:
                expect(e.errno == 2003 and "SOAK_NO_SUCH_TABLE" in str(e).upper(), where, repr(e))
            self.t.outcome("sql error")
        else:
            raise Failure(where, "failing SQL succeeded")
        # The session is still usable.
        rows = await session.sql("select 1").collect()
        expect(rows[0][0] == 1, where, rows)
        self.t.outcome("ok")

    async def op_fanout(self, rng: random.Random, session: AsyncSession, where: str) -> None:
        n = rng.randint(2, 24)
        how = rng.randrange(3)
        if how == 0:
            items: list[Any] = []
            for i in range(n):
                r = rng.random()
                if r < 0.4:
                    items.append(("select ?", [i]))
                elif r < 0.7:
                    items.append(session.sql("select ? as n", [i]))
                else:
                    items.append(wait_sql(rng.choice((0, 5, 20))))
            results = await session.collect_many(items, limit=rng.choice((None, 1, 4, 10)))
            for i, (item, rows) in enumerate(zip(items, results, strict=True)):
                if isinstance(item, str):
                    expect(str(rows[0][0]).startswith("waited"), where, (i, rows))
                else:
                    expect(rows[0][0] == i, where, (i, rows))
            self.t.outcome("ok", n)
        elif how == 1:  # one failing member: raised; the others (one-hour waits) aborted
            items = [LONG] * (n - 1) + [MISSING]
            rng.shuffle(items)
            try:
                await session.collect_many(items)
            except (Exception, BaseExceptionGroup) as error:
                # The failure; and, in a race with a cancel_all() or aclose(), theirs.
                found = leaves(error)
                failing = [
                    e
                    for e in found
                    if isinstance(e, ProgrammingError)
                    and not isinstance(e, QueryCancelledError)
                    and e.errno == 2003
                ]
                others = [e for e in found if e not in failing]
                if not failing:
                    raise
                self.t.outcome("sql error")
                self.t.outcome("cancelled", n - 1 - len(others))
                if others:
                    raise BaseExceptionGroup("collect_many", others) from error
            else:
                raise Failure(where, "collect_many with a failing member succeeded")
        else:
            with anyio.move_on_after(rng.uniform(0, 0.5)) as scope:
                await session.collect_many([LONG] * n, limit=rng.choice((None, 2, 8)))
            expect(scope.cancelled_caught, where, "one-hour queries completed")
            self.t.outcome("cancelled", n)

    async def op_cancel_all(self, rng: random.Random, session: AsyncSession, where: str) -> None:
        await anyio.sleep(rng.uniform(0, 0.05))
        # Counted first: cancel_all() takes its snapshot before its first await.
        self.cancel_alls[session] = self.cancel_alls.get(session, 0) + 1
        self.cancel_alls_running[session] = self.cancel_alls_running.get(session, 0) + 1
        try:
            await session.cancel_all()
        finally:
            self.cancel_alls[session] = self.cancel_alls.get(session, 0) + 1
            self.cancel_alls_running[session] -= 1
        self.t.events["cancel_all() on a shared session"] += 1

    async def op_rotate(self, rng: random.Random, session: AsyncSession, where: str) -> None:
        """Replace shared slot 1, closing the old session under whoever is using it."""
        new = await self.open()
        old, self.shared[1] = self.shared[1], new
        await anyio.sleep(rng.uniform(0, 0.05))
        await self.close(old, where)
        self.t.events["shared session replaced"] += 1

    # ---- private sessions ------------------------------------------------------------------
    async def op_churn(self, rng: random.Random, shared: AsyncSession, where: str) -> None:
        how = rng.randrange(6)
        if how == 3:  # a login cancelled at a random moment
            made = None
            with anyio.move_on_after(rng.uniform(0, 0.08)) as scope:
                made = await self.open()
            if made is not None:
                await self.close(made, where)
            if scope.cancelled_caught:
                self.t.events["logins cancelled"] += 1
            return
        session = await self.open()
        sid = session.session_id
        try:
            if how == 0:  # used briefly, closed by ``async with``
                async with session:
                    rows = await session.sql("select ?", [sid]).collect()
                    expect(rows[0][0] == sid, where, rows)
                self.t.events["sessions closed"] += 1
                self.t.outcome("ok")
                await self.check_gone(sid, where)
            elif how == 1:  # closed while its queries run
                await self.close_while_running(rng, session, where)
            elif how == 2:  # cancel_all(), then still usable
                await self.cancel_all_private(rng, session, where)
                await self.close(session, where)
            elif how == 4:  # jobs nobody awaits: aclose() ends them
                for _ in range(rng.randint(1, 3)):
                    await session.sql(rng.choice((LONG, wait_sql(0)))).collect_nowait()
                await anyio.sleep(rng.uniform(0, 0.1))
                await self.close(session, where)
                self.t.events["jobs left to aclose()"] += 1
            else:  # aclose() from a cancelled scope, and twice at once, with a query running
                errors: list[BaseException] = []
                async with anyio.create_task_group() as tg:
                    tg.start_soon(collect_long, session, errors)
                    await anyio.sleep(rng.uniform(0, 0.1))
                    tg.start_soon(session.aclose)
                    with anyio.CancelScope() as scope:
                        scope.cancel()
                        await session.aclose()
                expect(session.is_closed, where, "aclose() from a cancelled scope")
                self.t.events["sessions closed"] += 1
                for e in errors:
                    why = self.disrupted(session, 0, e)
                    expect(why is not None, where, f"unexpected {e!r}")
                    self.t.outcome(str(why))
                expect(len(errors) == 1, where, f"a one-hour query ended with {errors}")
                await self.check_gone(sid, where)
        finally:
            if not session.is_closed:
                with anyio.CancelScope(shield=True):
                    await session.aclose()

    async def close_while_running(
        self, rng: random.Random, session: AsyncSession, where: str
    ) -> None:
        outcomes: list[str] = []

        async def run(what: str) -> None:
            try:
                if what == "collect":
                    await session.sql(LONG).collect()
                    outcomes.append("a one-hour query completed")
                elif what == "job":
                    job = await session.sql(LONG).collect_nowait()
                    await job.result()
                    outcomes.append("a one-hour job completed")
                else:
                    n = 0
                    async with session.sql("select range as n from range(20000)").to_local_iterator(
                        batch_rows=100
                    ) as stream:
                        async for _ in stream:
                            n += 1
                    outcomes.append("ok")
            except Exception as e:
                why = self.disrupted(session, 0, e)
                outcomes.append(why or f"unexpected {e!r}")

        k = rng.randint(1, 4)
        async with anyio.create_task_group() as tg:
            for _ in range(k):
                tg.start_soon(run, rng.choice(("collect", "collect", "job", "stream")))
            await anyio.sleep(rng.uniform(0, 0.3))
            await self.close(session, where)
        bad = [o for o in outcomes if not o.startswith(("ok", "QueryCancelled", "SessionClosed"))]
        expect(not bad and len(outcomes) == k, where, f"after aclose(): {outcomes}")
        for o in outcomes:
            self.t.outcome(o)

    async def cancel_all_private(
        self, rng: random.Random, session: AsyncSession, where: str
    ) -> None:
        errors: list[BaseException] = []
        k = rng.randint(1, 4)

        async def run(as_job: bool) -> None:
            try:
                if as_job:
                    await (await session.sql(LONG).collect_nowait()).result()
                else:
                    await session.sql(LONG).collect()
            except Exception as e:
                errors.append(e)

        async with anyio.create_task_group() as tg:
            for _ in range(k):
                tg.start_soon(run, rng.random() < 0.3)
            # cancel_all() aborts what is tracked when it is called: let all k start.
            await until(lambda: len(session.running_queries) == k, 10)
            await anyio.sleep(rng.uniform(0, 0.1))
            await session.cancel_all()
        reasons = [getattr(e, "reason", repr(e)) for e in errors]
        expect(reasons == ["cancel_all()"] * k, where, f"after cancel_all(): {errors}")
        self.t.outcome("QueryCancelledError(cancel_all())", k)
        rows = await session.sql("select 2").collect()
        expect(rows[0][0] == 2, where, rows)
        self.t.outcome("ok")
