"""Soak: minutes of mixed work, then threads, open files, memory and server sessions are
back to their baseline.

Worker tasks run, until the deadline, a seeded random mix of operations on two shared
sessions (one lives for the whole run, the other is replaced, and closed under the
workers using it, now and then) and on private sessions opened and closed on the way:

- short queries with bound parameters (``collect``, ``first``, ``to_pandas``, ``to_arrow``);
- ``system$wait`` queries cancelled at random moments (before they start, a few
  checkpoints in, while they run: ``move_on_after``, ``fail_after``, a cancelled task group);
- ``collect_nowait`` jobs: awaited, polled, ``job.cancel()``-ed, cancelled while awaiting
  ``result()`` or while being submitted, failing, left to ``aclose()``;
- streaming (``to_local_iterator``, Arrow and pandas batches), to the end or broken off;
- failing SQL (a clear ``ProgrammingError``; the session still works afterwards);
- ``collect_many`` fan-outs (in order; with a failing member; cancelled);
- ``cancel_all()`` on the long-lived session, under the other workers' feet;
- sessions opened and closed: quickly, while their queries run, after ``cancel_all()``,
  from a cancelled scope, and logins cancelled half-way.

A query that is meant to be cancelled waits an hour: if a cancellation ever leaves one
behind, it is still RUNNING on the server at the end. Every outcome is checked: the
result, our own cancellation, the expected error, or ``QueryCancelledError`` /
``SessionClosedError`` only when a ``cancel_all()`` or ``aclose()`` of that session
explains it. After every ``aclose()`` the session must be gone from the server with none
of its queries running. Anything else is recorded as a problem (counted by kind, the
first of each kept with its traceback) and the run goes on; the test fails at the end.

Baseline: after a warm-up run of the same driver (imports, the connector's lazily created
threads), once asyncsession's worker threads are all idle and retired. End: threads, file
descriptors, server sessions and running queries are each waited for (with a deadline) to
be back at the baseline; no asyncsession object outlives the run; no asyncsession WARNING was
logged; Python's heap grows by at most ``PY_BLOCKS_GROWTH`` blocks; RSS grows by at most
``RSS_GROWTH_MIB``, and by at most ``RSS_SECOND_HALF_MIB`` over the second half of the
run (flat, not climbing). One block of figures is printed, pass or fail (``make soak``
runs pytest with ``-s``).

Profiles:

- ``test_soak`` (``-m soak`` / ``make soak``): ``ASYNCSESSION_SOAK_SECONDS`` (300) per
  backend, on asyncio and trio: 10 minutes per connector generation.
- ``test_soak_smoke`` (default profile): the same driver for ``SMOKE_SECONDS`` on asyncio
  only, so that ``make test`` keeps the harness working. One backend is enough there: the
  driver only uses anyio's API, and the soak itself covers both backends at length.

Seed: ``ASYNCSESSION_SOAK_SEED`` (else random), printed, and in every failure message. It
fixes each worker's sequence of operations and their choices; the interleaving of tasks
and threads is not reproducible.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakKeyDictionary

import anyio
import anyio.lowlevel
import pytest
import snowflake.connector
from snowflake.connector.errors import ProgrammingError

from asyncsession import AsyncSession, QueryCancelledError, Session, SessionClosedError
from asyncsession._threads import pool_threads, retire_idle_workers
from asyncsession.testing import LocalSnowflake
from tests.conftest import both_backends, until

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

SOAK_SECONDS = float(os.environ.get("ASYNCSESSION_SOAK_SECONDS") or 300)
SMOKE_SECONDS = 10.0
WARMUP_SECONDS = 3.0
WORKERS = 6
#: Shared sessions: slot 0 lives for the whole run (and gets ``cancel_all()``), slot 1 is
#: replaced by the ``rotate`` operation.
SHARED = 2
#: One operation taking longer than this is a hang.
OP_TIMEOUT = 60.0
#: How long threads, descriptors and the server may take to come back to the baseline
#: (an abandoned worker finishes its call first).
SETTLE_SECONDS = 45.0
SAMPLE_EVERY = 1.0
#: RSS rarely shrinks, and swings by tens of MiB with the number of live threads and the
#: native allocators' arenas (5.x's core, Arrow): bound the growth from the baseline, and
#: the trend over the second half of the run (a leak climbs; a high-water mark does not).
#: Figures of the last full runs: docs/reliability.md.
RSS_GROWTH_MIB = 128.0
RSS_SECOND_HALF_MIB = 48.0
#: The trend says nothing over a few seconds (5.x's core steps up by ~100 MiB in its first
#: minute): the smoke run reports it but checks it (and surviving objects) from this on.
RSS_TREND_MIN_SECONDS = 120.0
#: Python objects are counted precisely (blocks of Python's allocator; no asyncsession object
#: may outlive the run). Connector 4.x keeps a few objects per login for good (its
#: ``detect_platforms`` cache is keyed by each connection's SessionManager): ~20 blocks each.
PY_BLOCKS_GROWTH = 100_000

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


class Failure(AssertionError):
    """An outcome the soak does not accept (recorded; the run goes on)."""

    def __init__(self, where: str, detail: object) -> None:
        super().__init__(f"{where}: {detail}")
        self.detail = str(detail)


def expect(condition: object, where: str, detail: object) -> None:
    if not condition:
        raise Failure(where, detail)


class Problems:
    """What went wrong, counted by kind; the first few in full (with a traceback)."""

    KEEP = 12

    def __init__(self) -> None:
        self.kinds: Counter[str] = Counter()
        self.first: list[str] = []

    def add(self, kind: str, text: str, error: BaseException | None = None, n: int = 1) -> None:
        self.kinds[kind] += n
        if self.kinds[kind] == n and len(self.first) < self.KEEP:
            if error is not None and not isinstance(error, Failure):
                text += "\n" + "".join(traceback.format_exception(error)[-8:])
            self.first.append(text)

    def __bool__(self) -> bool:
        return bool(self.kinds)

    def report(self) -> str:
        counts = "\n".join(f"  {n} x {kind}" for kind, n in self.kinds.most_common())
        return f"problems by kind:\n{counts}\nfirst of each:\n" + "\n".join(self.first)


def leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for e in error.exceptions for leaf in leaves(e)]
    return [error]


# ---- measurements ----------------------------------------------------------------------------


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fd_table() -> dict[str, str]:
    """Each open descriptor and what it is (a file, a pipe, ``socket:[inode]``)."""
    table = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            table[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return table


def tcp_by_inode() -> dict[str, str]:
    """``inode -> "local -> remote STATE"`` for this process's IPv4 TCP sockets."""
    states = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}

    def addr(text: str) -> str:
        host, port = text.split(":")
        return f"{'.'.join(str(int(host[i : i + 2], 16)) for i in (6, 4, 2, 0))}:{int(port, 16)}"

    found = {}
    with open("/proc/self/net/tcp") as f:
        for line in list(f)[1:]:
            cols = line.split()
            found[cols[9]] = f"{addr(cols[1])} -> {addr(cols[2])} {states.get(cols[3], cols[3])}"
    return found


def new_fds(before: dict[str, str]) -> str:
    tcp = tcp_by_inode()
    lines = []
    for fd, target in sorted(fd_table().items(), key=lambda item: int(item[0])):
        if before.get(fd) != target:
            inode = target[len("socket:[") : -1] if target.startswith("socket:[") else ""
            lines.append(f"  fd {fd}: {target} {tcp.get(inode, '')}".rstrip())
    return "\n".join(lines)


async def collect_long(session: AsyncSession, errors: list[BaseException]) -> None:
    """Run the hour-long query; record any error it ends with (cancellation propagates)."""
    try:
        await session.sql(LONG).collect()
    except Exception as e:
        errors.append(e)


def thread_stacks() -> str:
    """Where each thread but this one is (for failure messages)."""
    frames = sys._current_frames()
    lines = []
    for t in threading.enumerate():
        if t is threading.current_thread() or t.ident not in frames:
            continue
        stack = traceback.extract_stack(frames[t.ident])[-4:]
        where = " <- ".join(
            f"{f.name} ({os.path.basename(f.filename)}:{f.lineno})" for f in reversed(stack)
        )
        lines.append(f"  {t.name}: {where}")
    return "\n".join(lines)


def object_census() -> Counter[str]:
    """How many objects of each type the garbage collector tracks."""
    return Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())


def holders(type_name: str, depth: int = 4) -> str:
    """What keeps the newest object of ``type_name`` alive (for failure messages)."""
    found = [o for o in gc.get_objects() if type(o).__name__ == type_name]
    if not found:
        return "  (none left)"
    lines: list[str] = []
    obj: object = found[-1]
    skip = {id(found), id(sys._getframe())}
    for level in range(depth):
        referrers = [r for r in gc.get_referrers(obj) if id(r) not in skip]
        skip.update(id(r) for r in referrers)
        if not referrers:
            break
        described = ", ".join(sorted({type(r).__qualname__ for r in referrers}))
        lines.append(f"  {'  ' * level}<- {described}")
        plain = [r for r in referrers if not isinstance(r, (list, dict, tuple))]
        obj = (plain or referrers)[0]
    return "\n".join(lines)


async def settle(predicate: Callable[[], object], deadline: float) -> bool:
    """Poll ``predicate`` until it holds (False at the deadline).

    Each poll first retires asyncsession's idle worker threads (else they end after 10 s
    without work), as the suite's end-of-test check does; busy ones go on.
    """
    with anyio.move_on_after(deadline):
        while True:
            retire_idle_workers()
            if predicate():
                return True
            await anyio.sleep(0.05)
    return False


@dataclass
class Sample:
    at: float
    threads: int
    fds: int
    rss_kib: int


def python_threads() -> int:
    """Threads Python started. Not ``threading._DummyThread``: a thread of the 5.x core's
    native runtime that once logged through Python's ``logging`` stays listed as one for
    as long as it lives, and that runtime's pool is the connector's, not ours to stop."""
    return sum(1 for t in threading.enumerate() if not isinstance(t, threading._DummyThread))


def sample_now(started: float) -> Sample:
    return Sample(time.monotonic() - started, python_threads(), open_fds(), rss_kib())


@dataclass
class Tally:
    ops: Counter[str] = field(default_factory=Counter)
    #: Per SQL statement: ok, cancelled (our own scope), QueryCancelledError (reason),
    #: SessionClosedError, sql error.
    outcomes: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)

    def outcome(self, what: str, n: int = 1) -> None:
        self.outcomes[what] += n


class WarningCounter(logging.Handler):
    """asyncsession's WARNING records (an unconfirmed abort, a failed logout), by template."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.kinds: Counter[str] = Counter()
        self.first: dict[str, str] = {}

    @property
    def count(self) -> int:
        return sum(self.kinds.values())

    def emit(self, record: logging.LogRecord) -> None:
        template = str(record.msg)
        self.kinds[template] += 1
        self.first.setdefault(template, f"{record.threadName}: {record.getMessage()}")


# ---- the driver ------------------------------------------------------------------------------


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
        #: How many cancel_all() each session has had: an operation may see
        #: QueryCancelledError("cancel_all()") only if this moved while it ran.
        self.cancel_alls: WeakKeyDictionary[AsyncSession, int] = WeakKeyDictionary()

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
    async def run(self, seconds: float, sampler: Callable[[], Awaitable[None]] | None) -> None:
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
        mark = self.cancel_alls.get(session, 0)
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
                expect(status in STATUSES, where, status)
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
        await session.cancel_all()
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


# ---- the check -------------------------------------------------------------------------------


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f}"


def rss_trend(samples: list[Sample]) -> float:
    """RSS growth in MiB per second, by least squares over ``samples``."""
    if len(samples) < 2:
        return 0.0
    mean_at = sum(s.at for s in samples) / len(samples)
    mean_rss = sum(s.rss_kib for s in samples) / len(samples)
    spread = sum((s.at - mean_at) ** 2 for s in samples)
    if not spread:
        return 0.0
    slope = sum((s.at - mean_at) * (s.rss_kib - mean_rss) for s in samples) / spread
    return slope / 1024


async def soak(sf: LocalSnowflake, seconds: float, backend: str) -> None:
    seed = seed_from_env()
    print(f"\nsoak: seed={seed} (ASYNCSESSION_SOAK_SEED={seed} to replay the operations)")
    warnings = WarningCounter()
    logging.getLogger("asyncsession").addHandler(warnings)
    try:
        await _soak(sf, seconds, backend, seed, warnings)
    except AssertionError as e:
        raise AssertionError(f"{e}\n(reproduce with ASYNCSESSION_SOAK_SEED={seed})") from None
    finally:
        logging.getLogger("asyncsession").removeHandler(warnings)


async def _soak(
    sf: LocalSnowflake, seconds: float, backend: str, seed: int, warnings: WarningCounter
) -> None:
    # Warm-up: the same driver, briefly, so that what is created once (imports, the
    # connector's own threads) is in the baseline.
    problems = Problems()
    await Soak(sf, seed + 1, Tally(), problems).run(WARMUP_SECONDS, None)
    assert not problems, f"seed={seed}: in the warm-up: {problems.report()}"
    retired = await settle(lambda: not pool_threads(), SETTLE_SECONDS)
    assert retired, f"seed={seed}: worker threads still busy after the warm-up:\n{thread_stacks()}"
    gc.collect()
    base = sample_now(time.monotonic())
    base_fds = fd_table()
    base_blocks, base_types = sys.getallocatedblocks(), object_census()
    base_sessions = sorted(s["session_id"] for s in sf.sessions())
    assert sf.running_queries() == [], f"seed={seed}: running after the warm-up"

    tally = Tally()
    samples: list[Sample] = []
    started = time.monotonic()

    async def sampler() -> None:
        while True:
            samples.append(sample_now(started))
            await anyio.sleep(SAMPLE_EVERY)

    await Soak(sf, seed, tally, problems).run(seconds, sampler)
    elapsed = time.monotonic() - started
    at_deadline = sample_now(started)

    # The server: sessions back to the baseline, nothing running.
    def server_settled() -> bool:
        sessions = sorted(s["session_id"] for s in sf.sessions())
        return sessions == base_sessions and not sf.running_queries()

    try:
        await until(server_settled, 15)
    except TimeoutError:
        problems.add(
            "end: server not back to the baseline",
            f"seed={seed}: server sessions {[s['session_id'] for s in sf.sessions()]} "
            f"(baseline {base_sessions}), running {sf.running_queries()}",
        )
    end_sessions = sorted(s["session_id"] for s in sf.sessions())
    end_running = len(sf.running_queries())

    # This process: threads and descriptors back to the baseline, RSS within its tolerance.
    gc.collect()
    back = await settle(
        lambda: python_threads() <= base.threads and open_fds() <= base.fds,
        SETTLE_SECONDS,
    )
    if not back:
        problems.add(
            "end: threads or descriptors not back to the baseline",
            f"seed={seed}: threads {python_threads()} (baseline {base.threads}), "
            f"fds {open_fds()} (baseline {base.fds}) {SETTLE_SECONDS:g} s after the run; "
            f"new descriptors:\n{new_fds(base_fds)}\nthreads:\n{thread_stacks()}",
        )
    gc.collect()
    end = sample_now(started)
    blocks = sys.getallocatedblocks() - base_blocks
    grown_types = object_census() - base_types
    grown = grown_types.most_common(6)
    # Every session is closed and collected: none of asyncsession's objects may outlive it.
    ours = {k: v for k, v in grown_types.items() if k.startswith("asyncsession.")}
    # A login cancelled in the last second may still be finishing in its thread (4.x keeps
    # our backoff object in its auth context until then): the smoke reports, the soak checks.
    if ours and seconds >= RSS_TREND_MIN_SECONDS:
        kept = "AsyncSession" if "asyncsession._session.AsyncSession" in ours else min(ours)
        kept = kept.rsplit(".", 1)[-1]
        problems.add(
            "end: asyncsession objects outlive the run",
            f"seed={seed}: {ours}; the newest {kept} is held by:\n{holders(kept)}",
        )
    for template, n in warnings.kinds.items():
        problems.add(f"asyncsession WARNING: {template[:70]}", warnings.first[template], n=n)

    peak = Sample(
        0,
        max(s.threads for s in samples),
        max(s.fds for s in samples),
        max(s.rss_kib for s in samples),
    )

    def rss_at(fraction: float) -> int:
        at = fraction * elapsed
        return min(samples, key=lambda s: abs(s.at - at)).rss_kib

    growth = (end.rss_kib - base.rss_kib) / 1024
    # The trend over the second half (least squares: single samples swing with the number
    # of live threads and the allocators' whims), as MiB gained over that half.
    trend = rss_trend([s for s in samples if s.at >= elapsed / 2])
    second_half = trend * (elapsed / 2)
    for what, value, bound in (
        ("Python heap: blocks", blocks, PY_BLOCKS_GROWTH),
        ("RSS: MiB over the baseline", growth, RSS_GROWTH_MIB),
        ("RSS: MiB over the second half (trend)", second_half, RSS_SECOND_HALF_MIB),
    ):
        if what.startswith("RSS: MiB over the second half") and seconds < RSS_TREND_MIN_SECONDS:
            continue
        if value > bound:
            problems.add(f"end: {what} above the bound", f"seed={seed}: {what} {value:,.1f}")
    statements = sum(tally.outcomes.values())
    ops = sum(tally.ops.values())
    figures = "\n".join(
        [
            f"soak figures: connector {snowflake.connector.__version__}, {backend}, "
            f"seed {seed}, {elapsed:.0f} s ({WORKERS} workers, warm-up {WARMUP_SECONDS:g} s)",
            f"  operations  {ops}: " + ", ".join(f"{k} {v}" for k, v in tally.ops.most_common()),
            f"  statements  {statements}: "
            + ", ".join(f"{k} {v}" for k, v in tally.outcomes.most_common()),
            "  events      " + ", ".join(f"{k} {v}" for k, v in sorted(tally.events.items())),
            f"  threads     baseline {base.threads}, peak {peak.threads}, "
            f"at deadline {at_deadline.threads}, end {end.threads}",
            f"  fds         baseline {base.fds}, peak {peak.fds}, "
            f"at deadline {at_deadline.fds}, end {end.fds}",
            f"  RSS MiB     baseline {mib(base.rss_kib)}, "
            + ", ".join(f"{f:.0%} {mib(rss_at(f))}" for f in (0.2, 0.4, 0.6, 0.8))
            + f", at deadline {mib(at_deadline.rss_kib)}, end {mib(end.rss_kib)}, "
            f"peak {mib(peak.rss_kib)}",
            f"              end - baseline {growth:+.1f} (bound {RSS_GROWTH_MIB:g}); "
            f"second-half trend {trend * 60:+.2f}/min = {second_half:+.1f} over it "
            f"(bound {RSS_SECOND_HALF_MIB:g})",
            f"  Python heap allocated blocks {blocks:+,} (bound {PY_BLOCKS_GROWTH:,}); "
            f"objects grown most: {', '.join(f'{k} {v:+}' for k, v in grown) or 'none'}; "
            f"asyncsession objects grown: {sum(ours.values())}",
            f"  server      sessions baseline {len(base_sessions)}, end {len(end_sessions)}; "
            f"running queries at end {end_running}",
            f"  warnings    asyncsession WARNING records: {warnings.count}",
            f"  problems    {sum(problems.kinds.values())}"
            + "".join(f"; {n} x {kind}" for kind, n in problems.kinds.most_common()),
        ]
    )
    print(figures)
    assert not problems, f"seed={seed}: {problems.report()}\n{figures}"
    assert tally.outcomes["ok"] > 0, figures
    assert tally.outcomes["cancelled"] > 0, figures
    assert tally.events["sessions opened"] > 0, figures


@pytest.fixture(autouse=True)
def _no_platform_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each login of both connector generations otherwise probes cloud metadata endpoints
    (169.254.169.254, metadata.google.internal) from threads of its own: whether those
    answer, and keep a socket open, depends on the network the test runs on, not on
    asyncsession (an ESTABLISHED socket to 169.254.169.254:80, kept by 4.x's detection, is
    what made the descriptor count differ by one in a trio run)."""
    monkeypatch.setenv("SNOWFLAKE_DISABLE_PLATFORM_DETECTION", "true")


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.timeout(SOAK_SECONDS + 300)
@both_backends
async def test_soak(emulator: LocalSnowflake, anyio_backend: str) -> None:
    await soak(emulator, SOAK_SECONDS, anyio_backend)


async def test_soak_smoke(emulator: LocalSnowflake, anyio_backend: str) -> None:
    await soak(emulator, SMOKE_SECONDS, anyio_backend)
