"""Load: 1,000 concurrent queries on one session, bounded threads, anyio's pool untouched."""

from __future__ import annotations

import threading
import time

import anyio
import anyio.to_thread
import pytest

from asyncsession import Session
from asyncsession._executor import CONTROL_THREADS, DEFAULT_IO_THREADS
from asyncsession._session import core_of
from asyncsession.testing import LocalSnowflake
from tests.helpers import both_backends

pytestmark = [pytest.mark.anyio, both_backends]

QUERIES = 1_000
SQL = "select system$wait(200, 'MILLISECONDS')"
#: Threads that are neither query nor control workers: the main thread, the emulator
#: launcher's pipe readers, the connector's own helpers, idle workers of earlier tests.
MARGIN = 12


async def test_a_thousand_concurrent_queries_on_one_session(
    local_snowflake: LocalSnowflake,
) -> None:
    limiter = anyio.to_thread.current_default_thread_limiter()
    baseline = threading.active_count()
    peak_threads = baseline
    peak_borrowed = 0
    samples = 0

    async def sample() -> None:
        nonlocal peak_threads, peak_borrowed, samples
        while True:
            peak_threads = max(peak_threads, threading.active_count())
            peak_borrowed = max(peak_borrowed, limiter.borrowed_tokens)
            samples += 1
            await anyio.sleep(0.005)

    params = local_snowflake.connection_parameters
    async with await Session.builder.configs(params).create() as session:
        # One-round-trip queries hold a thread each; submitted ones only per round trip.
        limit = core_of(session).runner.sync_slots + DEFAULT_IO_THREADS
        started = time.monotonic()
        with anyio.fail_after(120):
            async with anyio.create_task_group() as tg:
                tg.start_soon(sample)
                results = await session.collect_many([SQL] * QUERIES)
                tg.cancel_scope.cancel()
        elapsed = time.monotonic() - started
        assert len(results) == QUERIES
        assert all(rows[0][0].startswith("waited") for rows in results)
        assert session.running_queries == ()
        # The session still answers at once.
        with anyio.fail_after(5):
            assert (await session.sql("select 1").collect())[0][0] == 1
    print(
        f"load: {QUERIES} queries in {elapsed:.1f}s; threads: baseline {baseline}, "
        f"peak {peak_threads}; default limiter peak borrowed {peak_borrowed}; {samples} samples"
    )
    assert samples > 10
    assert peak_borrowed == 0, "a connector call used anyio's shared default thread limiter"
    assert peak_threads <= limit + CONTROL_THREADS + MARGIN, (peak_threads, baseline)
    # 1,000 x 200 ms, most submitted and polled; allow for the round trips.
    assert elapsed < 60
