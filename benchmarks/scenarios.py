"""The benchmark scenarios, run against one emulator by one connector generation.

Every measurement gets its own event loop (``anyio.run``), so anyio's cached worker
threads of one peer never serve (or inflate the thread count of) the next one.

Over ~400 lines because it is one thing: the table of scenarios, each a function beside
its helpers (the shared process probes are ``benchmarks.probes``).
"""

from __future__ import annotations

import concurrent.futures
import importlib.metadata
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import snowflake.connector
import snowflake.connector.errors

from asyncsession import Session
from asyncsession._driver import connector_major
from asyncsession._threads import retire_idle_workers
from benchmarks.probes import ThreadSampler, os_threads, proc_status_kb

CONNECTOR_VERSION = importlib.metadata.version("snowflake-connector-python")
GENERATION = connector_major()

RAW, NAIVE, ASYNCSESSION, AIO = "raw sync", "naive anyio", "asyncsession", "5.x aio"


def peers(*, with_raw: bool = True) -> list[str]:
    names = [RAW] if with_raw else []
    names += [NAIVE, ASYNCSESSION]
    if GENERATION >= 5:
        names.append(AIO)
    return names


@dataclass
class Sizes:
    seq_queries: int
    fanout: int
    fanout_wait: float
    cancel_deadline: float
    aclose_queries: int
    stream_rows: tuple[int, int]
    imports: int
    #: Import timings from a fresh bytecode cache (compiled once, in a warm-up). The quick
    #: run skips that: compiling the dependencies takes most of its time, for figures it
    #: says are not meaningful anyway.
    fresh_bytecode: bool = True

    @classmethod
    def for_run(cls, quick: bool) -> Sizes:
        if quick:
            return cls(8, 8, 0.05, 0.3, 6, (0, 10_000), 1, fresh_bytecode=False)
        return cls(80, 200, 1.0, 3.0, 200, (100_000, 1_000_000), 5)


@dataclass
class Context:
    emulator: Any  # asyncsession.testing.LocalSnowflake
    latency_ms: float
    sizes: Sizes

    def __post_init__(self) -> None:
        _BASE_THREADS[:] = [os_threads()]

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.emulator.connection_parameters)


# ---- helpers ---------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    data = sorted(values)
    pos = (len(data) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


#: The thread count before any measurement (set by ``Context``); measurements wait for it.
_BASE_THREADS: list[int] = []


def settle_threads(timeout: float = 3.0) -> int:
    """Wait until worker threads of a finished measurement are gone (anyio stops its own;
    asyncsession's idle ones are retired here, else they would count in the baseline)."""
    base = _BASE_THREADS[0] if _BASE_THREADS else os_threads()
    deadline = time.monotonic() + timeout
    retire_idle_workers()
    last, stable_since = os_threads(), time.monotonic()
    while last > base and time.monotonic() < deadline:
        time.sleep(0.01)
        retire_idle_workers()
        now = os_threads()
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since > 0.2:
            break  # e.g. the 5.x runtime's own threads, started on first use
    return last


def raw_connect(params: dict[str, Any]) -> Any:
    kwargs = dict(params)
    if GENERATION >= 5:
        kwargs.setdefault("enable_server_session_keep_alive_auto_detection", False)
    return snowflake.connector.connect(**kwargs)


async def aio_connect(params: dict[str, Any]) -> Any:
    from snowflake.connector import aio

    return await aio.connect(**params, enable_server_session_keep_alive_auto_detection=False)


async def new_session(params: dict[str, Any], **options: Any) -> Any:
    return await Session.builder.configs({**params, **options}).create()


def raw_query(conn: Any, sql: str) -> list[Any]:
    cursor = conn.cursor()
    try:
        cursor.execute(sql)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def server_cleanup(ctx: Context, query_ids: list[str]) -> None:
    """Abort leftover server queries (peers that cannot abort leave them running)."""
    running = {q["query_id"] for q in ctx.emulator.running_queries()}
    targets = [q for q in query_ids if q in running]
    if not targets:
        return
    with raw_connect(ctx.params) as conn:
        for qid in targets:
            raw_query(conn, f"select system$cancel_query('{qid}')")


def wait_running(
    ctx: Context, sql: str, count: int, exclude: set[str], timeout: float
) -> list[str]:
    """Query ids of ``count`` new RUNNING queries with text ``sql`` (polls the emulator)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            q["query_id"]
            for q in ctx.emulator.running_queries()
            if q["sql_text"] == sql and q["query_id"] not in exclude
        ]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.005)


# ---- 1. trivial query latency ---------------------------------------------------------
def scenario_latency(ctx: Context, repeat: int) -> dict[str, Any]:
    n = ctx.sizes.seq_queries
    sql = "select 1"
    out: dict[str, dict[str, list[float]]] = {p: {"p50_ms": [], "p99_ms": []} for p in peers()}
    for r in range(repeat):
        order = peers()
        order = order[r % len(order) :] + order[: r % len(order)]  # rotate against drift
        for peer in order:
            samples = _latency_samples(ctx, peer, sql, n)
            out[peer]["p50_ms"].append(percentile(samples, 0.5) * 1000)
            out[peer]["p99_ms"].append(percentile(samples, 0.99) * 1000)
    return {"params": {"queries": n, "sql": sql}, "peers": out}


def _latency_samples(ctx: Context, peer: str, sql: str, n: int) -> list[float]:
    warmup = 3
    samples: list[float] = []
    if peer == RAW:
        with raw_connect(ctx.params) as conn:
            for i in range(n + warmup):
                t = time.perf_counter()
                raw_query(conn, sql)
                if i >= warmup:
                    samples.append(time.perf_counter() - t)
        return samples

    async def main() -> None:
        if peer == ASYNCSESSION:
            async with await new_session(ctx.params) as session:
                for i in range(n + warmup):
                    t = time.perf_counter()
                    await session.sql(sql).collect()
                    if i >= warmup:
                        samples.append(time.perf_counter() - t)
        elif peer == NAIVE:
            conn = raw_connect(ctx.params)
            try:
                for i in range(n + warmup):
                    t = time.perf_counter()
                    cursor = conn.cursor()
                    await anyio.to_thread.run_sync(cursor.execute, sql)
                    cursor.fetchall()
                    cursor.close()
                    if i >= warmup:
                        samples.append(time.perf_counter() - t)
            finally:
                conn.close()
        else:
            conn = await aio_connect(ctx.params)
            try:
                for i in range(n + warmup):
                    t = time.perf_counter()
                    cursor = conn.cursor()
                    await cursor.execute(sql)
                    await cursor.fetchall()
                    cursor.close()
                    if i >= warmup:
                        samples.append(time.perf_counter() - t)
            finally:
                await conn.close()

    anyio.run(main)
    return samples


# ---- 2 and 4. fan-out: wall time, threads, event-loop lag -------------------------------
async def _ticker(stop: anyio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        t = anyio.current_time()
        await anyio.sleep(0.001)
        lags.append(anyio.current_time() - t - 0.001)


def fanout_once(ctx: Context, peer: str, n: int, wait_s: float, tick: bool) -> dict[str, Any]:
    sql = f"select system$wait({wait_s:g})"
    baseline = settle_threads()
    result: dict[str, Any] = {}
    lags: list[float] = []

    async def run_all(fan: Callable[[], Any]) -> float:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            if tick:
                tg.start_soon(_ticker, stop, lags)
                await anyio.sleep(0.05)  # let the ticker run idle first
                lags.clear()
            t = time.perf_counter()
            with ThreadSampler() as sampler:
                await fan()
            wall = time.perf_counter() - t
            stop.set()
        result["peak_threads"] = sampler.peak - 1  # minus the sampler itself
        return wall

    async def main() -> None:
        if peer == ASYNCSESSION:
            async with await new_session(ctx.params) as session:

                async def fan() -> None:
                    async with anyio.create_task_group() as tg:
                        for _ in range(n):
                            tg.start_soon(session.sql(sql).collect)

                result["wall_s"] = await run_all(fan)
        elif peer == AIO:
            import asyncio

            conn = await aio_connect(ctx.params)

            async def one() -> None:
                cursor = conn.cursor()
                await cursor.execute(sql)
                await cursor.fetchall()
                cursor.close()

            async def fan() -> None:
                await asyncio.gather(*(one() for _ in range(n)))

            try:
                result["wall_s"] = await run_all(fan)
            finally:
                await conn.close()
        else:
            conn = raw_connect(ctx.params)
            if peer == NAIVE:

                async def fan() -> None:
                    async with anyio.create_task_group() as tg:
                        for _ in range(n):
                            tg.start_soon(anyio.to_thread.run_sync, raw_query, conn, sql)

            else:

                def pool() -> None:
                    with concurrent.futures.ThreadPoolExecutor(n) as ex:
                        list(ex.map(lambda _: raw_query(conn, sql), range(n)))

                async def fan() -> None:
                    # Threads started off the loop: the floor for both wall time and lag.
                    await anyio.to_thread.run_sync(pool)

            try:
                result["wall_s"] = await run_all(fan)
            finally:
                conn.close()

    anyio.run(main)
    result["baseline_threads"] = baseline
    result["extra_threads"] = result["peak_threads"] - baseline
    if tick:
        result["lag_p50_ms"] = percentile(lags, 0.5) * 1000
        result["lag_p99_ms"] = percentile(lags, 0.99) * 1000
        result["lag_max_ms"] = max(lags, default=math.nan) * 1000
        result["ticks"] = len(lags)
    return result


def scenario_fanout(ctx: Context, repeat: int) -> dict[str, Any]:
    n, wait_s = ctx.sizes.fanout, ctx.sizes.fanout_wait
    out: dict[str, dict[str, list[float]]] = {p: {} for p in peers()}
    for r in range(repeat):
        order = peers()
        for peer in order[r % len(order) :] + order[: r % len(order)]:
            res = fanout_once(ctx, peer, n, wait_s, tick=False)
            for key in ("wall_s", "peak_threads", "extra_threads"):
                out[peer].setdefault(key, []).append(res[key])
    return {"params": {"queries": n, "wait_s": wait_s}, "peers": out}


def scenario_loop_lag(ctx: Context, repeat: int) -> dict[str, Any]:
    n, wait_s = ctx.sizes.fanout, ctx.sizes.fanout_wait
    names = ["idle loop", *peers()]
    out: dict[str, dict[str, list[float]]] = {p: {} for p in names}
    for _ in range(repeat):
        for peer in names:
            if peer == "idle loop":
                res = _idle_lag(max(wait_s, 0.2))
            else:
                res = fanout_once(ctx, peer, n, wait_s, tick=True)
            for key in ("lag_p50_ms", "lag_p99_ms", "lag_max_ms"):
                out[peer].setdefault(key, []).append(res[key])
    return {"params": {"queries": n, "wait_s": wait_s, "tick_ms": 1}, "peers": out}


def _idle_lag(seconds: float) -> dict[str, float]:
    lags: list[float] = []

    async def main() -> None:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(_ticker, stop, lags)
            await anyio.sleep(seconds)
            stop.set()

    anyio.run(main)
    return {
        "lag_p50_ms": percentile(lags, 0.5) * 1000,
        "lag_p99_ms": percentile(lags, 0.99) * 1000,
        "lag_max_ms": max(lags) * 1000,
    }


# ---- 3. cancel a running query ----------------------------------------------------------
CANCEL_SQL = "select system$wait(30)"


def scenario_cancel(ctx: Context, repeat: int) -> dict[str, Any]:
    names = peers(with_raw=False)
    keys = ("abort_sent_ms", "server_stopped_ms", "await_returned_ms")
    out: dict[str, dict[str, list[float | None]]] = {p: {k: [] for k in keys} for p in names}
    for _ in range(repeat):
        for peer in names:
            res = _cancel_once(ctx, peer)
            for k in keys:
                out[peer][k].append(res.get(k))
    return {
        "params": {"sql": CANCEL_SQL, "deadline_s": ctx.sizes.cancel_deadline},
        "peers": out,
    }


def _cancel_once(ctx: Context, peer: str) -> dict[str, Any]:
    deadline = ctx.sizes.cancel_deadline
    res: dict[str, Any] = {}
    qids: list[str] = []
    before = {q["query_id"] for q in ctx.emulator.queries()}

    async def started() -> float:
        found = await anyio.to_thread.run_sync(wait_running, ctx, CANCEL_SQL, 1, before, 10.0)
        qids.extend(found)
        return time.time()

    async def server_stop(t0: float) -> None:
        def poll() -> float | None:
            end = time.monotonic() + deadline
            while time.monotonic() < end:
                q = ctx.emulator.query(qids[0])
                if q["end_time"] is not None:
                    return float(q["end_time"])
                time.sleep(0.002)
            return None

        stopped = await anyio.to_thread.run_sync(poll)
        res["server_stopped_ms"] = None if stopped is None else (stopped - t0) * 1000

    async def main() -> None:
        if peer == ASYNCSESSION:
            async with await new_session(ctx.params) as session:
                driver = session._driver
                original = driver.abort

                def stamped_abort(connection: Any, handle: Any) -> None:
                    res.setdefault("sent", time.time())
                    original(connection, handle)

                driver.abort = stamped_abort  # instance attribute: benchmark instrumentation
                try:
                    scope = anyio.CancelScope()
                    done = anyio.Event()

                    async def victim() -> None:
                        with scope:
                            await session.sql(CANCEL_SQL).collect()
                        done.set()

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(victim)
                        t0 = await started()
                        scope.cancel()
                        await done.wait()
                        res["await_returned_ms"] = (time.time() - t0) * 1000
                        await server_stop(t0)
                finally:
                    del driver.abort
                res["abort_sent_ms"] = (res.pop("sent") - t0) * 1000
        elif peer == AIO:
            import asyncio

            conn = await aio_connect(ctx.params)
            try:
                cursor = conn.cursor()
                task = asyncio.ensure_future(cursor.execute(CANCEL_SQL))
                t0 = await started()
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
                res["await_returned_ms"] = (time.time() - t0) * 1000
                await server_stop(t0)
            finally:
                await conn.close()
        else:  # naive: the worker thread cannot be interrupted; the await waits for it
            conn = raw_connect(ctx.params)
            scope = anyio.CancelScope()
            returned: list[float] = []

            async def victim() -> None:
                with scope:
                    try:
                        await anyio.to_thread.run_sync(raw_query, conn, CANCEL_SQL)
                    except snowflake.connector.errors.ProgrammingError as e:
                        if e.errno != 604:  # aborted by the cleanup below
                            raise
                returned.append(time.time())

            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(victim)
                    t0 = await started()
                    scope.cancel()
                    await server_stop(t0)
                    if not returned:
                        res["await_returned_ms"] = None  # still blocked: clean up below
                    else:
                        res["await_returned_ms"] = (returned[0] - t0) * 1000
                    await anyio.to_thread.run_sync(server_cleanup, ctx, qids)
            finally:
                conn.close()

    anyio.run(main)
    server_cleanup(ctx, qids)
    return res


# ---- 5. aclose() with running queries ----------------------------------------------------
ACLOSE_SQL = "select system$wait(30)"


def scenario_aclose(ctx: Context, repeat: int) -> dict[str, Any]:
    n = ctx.sizes.aclose_queries
    names = [ASYNCSESSION] + ([AIO] if GENERATION >= 5 else [])
    keys = ("close_returned_ms", "server_zero_ms")
    out: dict[str, dict[str, list[float | None]]] = {p: {k: [] for k in keys} for p in names}
    for _ in range(repeat):
        for peer in names:
            res = _aclose_once(ctx, peer, n)
            for k in keys:
                out[peer][k].append(res.get(k))
    return {
        "params": {"queries": n, "sql": ACLOSE_SQL, "deadline_s": ctx.sizes.cancel_deadline},
        "peers": out,
    }


def _aclose_once(ctx: Context, peer: str, n: int) -> dict[str, Any]:
    res: dict[str, Any] = {}
    before = {q["query_id"] for q in ctx.emulator.queries()}
    qids: list[str] = []

    def until_zero(t0: float) -> float | None:
        end = time.monotonic() + max(ctx.sizes.cancel_deadline, 5.0)
        while time.monotonic() < end:
            running = {q["query_id"] for q in ctx.emulator.running_queries()}
            if not running.intersection(qids):
                return last_stopped(t0, (time.time() - t0) * 1000)
            time.sleep(0.002)
        return None

    def last_stopped(t0: float, polled_ms: float) -> float:
        # When the server recorded the last of them stopped (its end_time, as section 3
        # reads it): the emulator answers its admin polls late while it is busy answering
        # the clients' held result requests, which a real server does on other machines.
        wanted = set(qids)
        ends = [q["end_time"] for q in ctx.emulator.queries() if q["query_id"] in wanted]
        if len(ends) < len(wanted) or any(e is None for e in ends):
            return polled_ms
        return min(polled_ms, (max(float(e) for e in ends) - t0) * 1000)

    async def main() -> None:
        if peer == ASYNCSESSION:
            session = await new_session(ctx.params, max_concurrent_queries=n)

            async def one() -> None:
                try:
                    await session.sql(ACLOSE_SQL).collect()
                except Exception:
                    pass  # QueryCancelledError, expected

            async with anyio.create_task_group() as tg:
                for _ in range(n):
                    tg.start_soon(one)
                qids.extend(
                    await anyio.to_thread.run_sync(wait_running, ctx, ACLOSE_SQL, n, before, 30.0)
                )
                t0 = time.time()
                zero: list[float | None] = []

                async def watch() -> None:
                    # Watched while aclose() runs: the server may be at 0 before it returns.
                    zero.append(await anyio.to_thread.run_sync(until_zero, t0))

                async with anyio.create_task_group() as inner:
                    inner.start_soon(watch)
                    await session.aclose()
                    res["close_returned_ms"] = (time.time() - t0) * 1000
                res["server_zero_ms"] = zero[0]
        else:
            import asyncio

            conn = await aio_connect(ctx.params)

            async def one() -> None:
                cursor = conn.cursor()
                await cursor.execute(ACLOSE_SQL)

            tasks = [asyncio.ensure_future(one()) for _ in range(n)]
            qids.extend(
                await anyio.to_thread.run_sync(wait_running, ctx, ACLOSE_SQL, n, before, 30.0)
            )
            t0 = time.time()
            await conn.close()
            res["close_returned_ms"] = (time.time() - t0) * 1000
            aio_zero = await anyio.to_thread.run_sync(lambda: until_zero_deadline(t0))
            res["server_zero_ms"] = aio_zero
            await anyio.to_thread.run_sync(server_cleanup, ctx, qids)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def until_zero_deadline(t0: float) -> float | None:
        end = time.monotonic() + ctx.sizes.cancel_deadline
        while time.monotonic() < end:
            running = {q["query_id"] for q in ctx.emulator.running_queries()}
            if not running.intersection(qids):
                return (time.time() - t0) * 1000
            time.sleep(0.005)
        return None

    anyio.run(main)
    server_cleanup(ctx, qids)
    return res


# ---- 6. streaming (each measurement in a fresh subprocess) -------------------------------
STREAM_MODES: tuple[str, ...] = (
    "raw fetchmany",
    "asyncsession to_local_iterator",
    "asyncsession to_row_batches",
    # Both sides step through every row of each batch (a RowBatch makes its Rows then).
    "raw fetchmany, every row",
    "asyncsession to_row_batches, every row",
    "raw fetch_arrow_batches",
)
STREAM_MODES += ("asyncsession to_arrow_batches",)


def scenario_stream(ctx: Context, repeat: int) -> dict[str, Any]:
    small, large = ctx.sizes.stream_rows
    out: dict[str, dict[str, list[float]]] = {m: {} for m in STREAM_MODES}
    # Capped at 2 repeats: a 1 M-row stream takes seconds per run on the emulator.
    for r in range(min(repeat, 2)):
        for mode in STREAM_MODES:
            for rows in (large, small) if r == 0 and small else (large,):
                res = _stream_subprocess(ctx, mode, rows)
                if rows == large:
                    out[mode].setdefault("rows_per_s", []).append(res["rows"] / res["elapsed_s"])
                    out[mode].setdefault("peak_rss_large_mb", []).append(res["peak_rss_mb"])
                    out[mode].setdefault("rss_growth_large_mb", []).append(res["rss_growth_mb"])
                else:
                    out[mode].setdefault("peak_rss_small_mb", []).append(res["peak_rss_mb"])
                    out[mode].setdefault("rss_growth_small_mb", []).append(res["rss_growth_mb"])
    return {"params": {"rows_small": small, "rows_large": large}, "peers": out}


def _stream_subprocess(ctx: Context, mode: str, rows: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks._stream", mode, str(rows), json.dumps(ctx.params)]
    cwd = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"stream subprocess {mode} {rows} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["rows"] != rows:
        raise RuntimeError(f"{mode}: got {result['rows']} rows, expected {rows}")
    return result


# ---- 7. import time ---------------------------------------------------------------------
IMPORTS = {
    "python -c pass": "pass",
    "import snowflake.connector": "import snowflake.connector",
    "import asyncsession": "import asyncsession",
}


def scenario_import(ctx: Context, repeat: int) -> dict[str, Any]:
    n = ctx.sizes.imports
    out: dict[str, dict[str, list[float]]] = {k: {"wall_ms": []} for k in IMPORTS}
    if not ctx.sizes.fresh_bytecode:
        _import_samples(n, dict(os.environ), out)
        return {"params": {"runs_per_repeat": n}, "peers": out}
    # As an installed package is imported: from bytecode (pip compiles the connector's at
    # install; an editable checkout with PYTHONDONTWRITEBYTECODE would compile ours from
    # source on every run). The cache goes to a temporary directory, not the tree.
    with tempfile.TemporaryDirectory() as pycache:
        env = {**os.environ, "PYTHONPYCACHEPREFIX": pycache}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        for code in IMPORTS.values():  # warm-up: writes the bytecode
            subprocess.run([sys.executable, "-c", code], check=True, env=env)
        _import_samples(n, env, out)
    return {"params": {"runs_per_repeat": n}, "peers": out}


def _import_samples(n: int, env: dict[str, str], out: dict[str, dict[str, list[float]]]) -> None:
    # One median of ``n`` runs (not ``repeat`` of them): each run is a fresh interpreter.
    for _ in range(1):
        samples: dict[str, list[float]] = {k: [] for k in IMPORTS}
        for _ in range(n):
            for name, code in IMPORTS.items():
                t = time.perf_counter()
                subprocess.run([sys.executable, "-c", code], check=True, env=env)
                samples[name].append((time.perf_counter() - t) * 1000)
        for name in IMPORTS:
            out[name]["wall_ms"].append(percentile(samples[name], 0.5))


def _server_overlap(ctx: Context, since: float) -> int:
    """Peak number of queries the emulator ran at once among those started after ``since``."""
    events: list[tuple[float, int]] = []
    for q in ctx.emulator.queries():
        start, end = q.get("start_time"), q.get("end_time")
        if start is None or start < since or "system$wait" not in q.get("sql_text", "").lower():
            continue
        events.append((start, 1))
        events.append((end if end else time.time(), -1))
    peak = current = 0
    for _, step in sorted(events):
        current += step
        peak = max(peak, current)
    return peak


def scenario_fanout_large(ctx: Context, repeat: int) -> dict[str, Any]:
    """1,000 x SYSTEM$WAIT(1) on one session: wall, threads, loop lag, server-side overlap."""
    n = 1000 if ctx.sizes.fanout >= 200 else ctx.sizes.fanout
    wait_s = ctx.sizes.fanout_wait
    names = [ASYNCSESSION] + ([AIO] if GENERATION >= 5 else [])
    out: dict[str, dict[str, list[float]]] = {p: {} for p in names}
    for _ in range(repeat):
        for peer in names:
            since = time.time()
            res = fanout_once(ctx, peer, n, wait_s, tick=True)
            res["server_overlap"] = _server_overlap(ctx, since)
            for key in ("wall_s", "extra_threads", "lag_p99_ms", "lag_max_ms", "server_overlap"):
                out[peer].setdefault(key, []).append(res[key])
    return {"params": {"queries": n, "wait_s": wait_s}, "peers": out}


def scenario_stress(ctx: Context, repeat: int) -> dict[str, Any]:
    """Slow profile: 10,000 x SYSTEM$WAIT(2) on one session; threads, RSS, nothing left."""
    n = 10_000 if ctx.sizes.fanout >= 200 else 50
    rss_before = proc_status_kb("VmRSS") / 1024
    since = time.time()
    res = fanout_once(ctx, ASYNCSESSION, n, 2.0 if n > 50 else 0.05, tick=True)
    left = [q for q in ctx.emulator.running_queries() if q.get("start_time", 0) >= since]
    out = {
        "wall_s": [res["wall_s"]],
        "extra_threads": [res["extra_threads"]],
        "lag_max_ms": [res["lag_max_ms"]],
        "rss_growth_mb": [proc_status_kb("VmRSS") / 1024 - rss_before],
        "left_running": [float(len(left))],
        "server_overlap": [float(_server_overlap(ctx, since))],
    }
    return {"params": {"queries": n, "wait_s": 2.0}, "peers": {ASYNCSESSION: out}}


#: Run only when named (``--scenarios stress``): the slow profile.
SLOW_SCENARIOS = ("stress",)

SCENARIOS: dict[str, Callable[[Context, int], dict[str, Any]]] = {
    "fanout_large": scenario_fanout_large,
    "stress": scenario_stress,
    "latency": scenario_latency,
    "fanout": scenario_fanout,
    "cancel": scenario_cancel,
    "loop_lag": scenario_loop_lag,
    "aclose": scenario_aclose,
    "stream": scenario_stream,
    "import": scenario_import,
}
