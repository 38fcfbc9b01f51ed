"""Session pool scenarios: what a lease costs, and a FastAPI load through a pool vs one session.

- ``pool_lease``: ``select 1`` one after another on a shared session vs leased from a
  pool for each query (``async with pool.session()``); plus the lease + return alone
  (no query), which is the overhead itself, set against the ``select 1`` round trip.
- ``pool_fastapi``: a FastAPI app (in process, ``httpx.ASGITransport``, under
  ``CancelOnDisconnectMiddleware``) answering N requests, C at once, each one
  ``select 1``: ``snowflake_lifespan(builder, pool={"min_size": 10, "max_size": 10})``
  vs one shared session. Throughput and per-request p50/p99.
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
from fastapi import FastAPI

from asyncsession.fastapi import CancelOnDisconnectMiddleware, SnowflakeSession, snowflake_lifespan
from benchmarks.scenarios import Context, percentile
from benchmarks.tables import Run, Scenario, fmt, metric, per_generation

SHARED, POOLED = "shared session", "pool"
APP_SHARED, APP_POOLED = "shared session", "pool of 10"


def _quick(ctx: Context) -> bool:
    return ctx.sizes.seq_queries < 20  # the harness's --quick sizes


def _builder(ctx: Context) -> Any:
    from asyncsession import Session

    return Session.builder.configs(ctx.params)


# ---- lease + return overhead -----------------------------------------------------------
def scenario_pool_lease(ctx: Context, repeat: int) -> dict[str, Any]:
    n = 8 if _quick(ctx) else 80
    leases = 50 if _quick(ctx) else 2000
    keys = ("p50_ms", "p99_ms")
    out: dict[str, dict[str, list[float]]] = {p: {k: [] for k in keys} for p in (SHARED, POOLED)}
    out[POOLED]["lease_return_p50_us"] = []
    out[POOLED]["lease_return_p99_us"] = []
    for r in range(repeat):
        samples, lease_only = anyio.run(_lease_samples, ctx, n, leases, r % 2 == 1)
        for peer in (SHARED, POOLED):
            out[peer]["p50_ms"].append(percentile(samples[peer], 0.5) * 1000)
            out[peer]["p99_ms"].append(percentile(samples[peer], 0.99) * 1000)
        out[POOLED]["lease_return_p50_us"].append(percentile(lease_only, 0.5) * 1e6)
        out[POOLED]["lease_return_p99_us"].append(percentile(lease_only, 0.99) * 1e6)
    return {"params": {"queries": n, "leases": leases, "pool": "min 2, max 2"}, "peers": out}


async def _lease_samples(
    ctx: Context, n: int, leases: int, pooled_first: bool
) -> tuple[dict[str, list[float]], list[float]]:
    warmup = 3
    samples: dict[str, list[float]] = {SHARED: [], POOLED: []}
    lease_only: list[float] = []
    async with (
        _builder(ctx).create() as session,
        _builder(ctx).create_pool(min_size=2, max_size=2) as pool,
    ):

        async def shared() -> None:
            for i in range(n + warmup):
                t = time.perf_counter()
                await session.sql("select 1").collect()
                if i >= warmup:
                    samples[SHARED].append(time.perf_counter() - t)

        async def pooled() -> None:
            for i in range(n + warmup):
                t = time.perf_counter()
                async with pool.session() as leased:
                    await leased.sql("select 1").collect()
                if i >= warmup:
                    samples[POOLED].append(time.perf_counter() - t)

        for run in (pooled, shared) if pooled_first else (shared, pooled):
            await run()
        for _ in range(leases):
            t = time.perf_counter()
            async with pool.session():
                pass
            lease_only.append(time.perf_counter() - t)
    return samples, lease_only


# ---- FastAPI load ------------------------------------------------------------------------
def scenario_pool_fastapi(ctx: Context, repeat: int) -> dict[str, Any]:
    requests, concurrency = (40, 10) if _quick(ctx) else (500, 50)
    keys = ("requests_per_s", "p50_ms", "p99_ms")
    out: dict[str, dict[str, list[float]]] = {
        p: {k: [] for k in keys} for p in (APP_SHARED, APP_POOLED)
    }
    for r in range(repeat):
        order = [APP_SHARED, APP_POOLED] if r % 2 == 0 else [APP_POOLED, APP_SHARED]
        for peer in order:
            wall, latencies = anyio.run(_load, ctx, peer == APP_POOLED, requests, concurrency)
            out[peer]["requests_per_s"].append(requests / wall)
            out[peer]["p50_ms"].append(percentile(latencies, 0.5) * 1000)
            out[peer]["p99_ms"].append(percentile(latencies, 0.99) * 1000)
    params = {"requests": requests, "concurrency": concurrency, "sql": "select 1"}
    return {"params": params, "peers": out}


async def _load(
    ctx: Context, pooled: bool, requests: int, concurrency: int
) -> tuple[float, list[float]]:
    pool = {"min_size": 10, "max_size": 10} if pooled else None
    app = FastAPI(lifespan=snowflake_lifespan(_builder(ctx), pool=pool))
    app.add_middleware(CancelOnDisconnectMiddleware)

    @app.get("/one")
    async def one(session: SnowflakeSession) -> int:
        rows = await session.sql("select 1").collect()
        return int(rows[0][0])

    latencies: list[float] = []
    limiter = anyio.Semaphore(concurrency)

    async def request(client: httpx.AsyncClient) -> None:
        async with limiter:
            t = time.perf_counter()
            response = await client.get("/one")
            latencies.append(time.perf_counter() - t)
            response.raise_for_status()

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            for _ in range(concurrency):  # warm-up
                await request(client)
            latencies.clear()
            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(requests):
                    tg.start_soon(request, client)
            wall = time.perf_counter() - started
    return wall, latencies


POOL_SCENARIOS = {"pool_lease": scenario_pool_lease, "pool_fastapi": scenario_pool_fastapi}


# ---- report ------------------------------------------------------------------------------
def targets(runs: list[tuple[str, Run]]) -> list[tuple[str, str, str, bool]]:
    """The issue's target: lease + return under 2 % of a ``select 1`` round trip (p50)."""
    out = []
    for gen, run in runs:
        if "pool_lease" not in run["scenarios"]:
            continue
        lease_us = metric(run, "pool_lease", POOLED, "lease_return_p50_us")
        query_ms = metric(run, "pool_lease", SHARED, "p50_ms")
        if lease_us is None or not query_ms:
            continue
        share = lease_us / 1000 / query_ms
        out.append(
            ("pool lease + return < 2 % of `select 1` (p50)", gen, f"{share:.2%}", share < 0.02)
        )
    return out


def _lease_rows(run: Run, sc: Scenario) -> list[list[str]]:
    return [
        [
            peer,
            fmt(metric(run, "pool_lease", peer, "p50_ms"), 2),
            fmt(metric(run, "pool_lease", peer, "p99_ms"), 2),
        ]
        for peer in (SHARED, POOLED)
    ]


def _lease_alone(run: Run, sc: Scenario) -> list[str]:
    shared50 = metric(run, "pool_lease", SHARED, "p50_ms")
    lease50 = metric(run, "pool_lease", POOLED, "lease_return_p50_us")
    lease99 = metric(run, "pool_lease", POOLED, "lease_return_p99_us")
    share = "-" if not lease50 or not shared50 else f"{lease50 / 1000 / shared50:.2%}"
    return [
        f"Lease + return alone ({sc['params']['leases']} leases): p50 {fmt(lease50, 1)} µs, "
        f"p99 {fmt(lease99, 1)} µs = **{share}** of a `select 1` round trip at p50.",
        "",
    ]


def _fastapi_rows(run: Run, sc: Scenario) -> list[list[str]]:
    return [
        [
            peer,
            fmt(metric(run, "pool_fastapi", peer, "requests_per_s"), 0),
            fmt(metric(run, "pool_fastapi", peer, "p50_ms"), 1),
            fmt(metric(run, "pool_fastapi", peer, "p99_ms"), 1),
        ]
        for peer in (APP_SHARED, APP_POOLED)
    ]


def section(runs: list[tuple[str, Run]]) -> list[str]:
    if not any(k in run["scenarios"] for _, run in runs for k in POOL_SCENARIOS):
        return []
    L = ["## 8. Session pool", ""]
    L += [
        "**Lease + return overhead.** `select 1` one after another on one shared session vs "
        "each one in its own `async with pool.session()` (pool of 2); and the lease + return "
        "alone, with no query (nothing changed, so no round trip on return).",
        "",
    ]
    L += per_generation(
        runs,
        "pool_lease",
        ["`select 1`", "p50 ms", "p99 ms"],
        _lease_rows,
        caption=lambda sc: f"{sc['params']['queries']} queries per repeat",
        after=_lease_alone,
    )
    L += [
        "**FastAPI load.** In-process (`httpx.ASGITransport`), under "
        "`CancelOnDisconnectMiddleware`; every request runs one `select 1`.",
        "",
    ]
    L += per_generation(
        runs,
        "pool_fastapi",
        ["app", "requests/s", "p50 ms", "p99 ms"],
        _fastapi_rows,
        caption=lambda sc: (
            f"{sc['params']['requests']} requests, {sc['params']['concurrency']} at once"
        ),
    )
    return L
