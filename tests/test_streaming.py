"""Streaming keeps memory flat: measured in subprocesses so RSS is the query's alone."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from asyncsession.testing import LocalSnowflake

ROWS = 1_000_000
SQL = f"select range as n, repeat('x', 60) || range as s from range({ROWS})"

SCRIPT = """
import json, sys, anyio
from asyncsession import Session

def peak_kib():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM"))

async def main(params, mode, sql):
    async with Session.builder.configs(params).create() as session:
        await session.sql("select 1").collect()
        before = peak_kib()
        count = 0
        if mode == "stream":
            async for _ in session.sql(sql).to_local_iterator():
                count += 1
        elif mode == "arrow_batches":
            async for table in session.sql(sql).to_arrow_batches():
                count += table.num_rows
        else:
            count = len(await session.sql(sql).collect())
        print(json.dumps({"rows": count, "growth_kib": peak_kib() - before}))

anyio.run(main, json.loads(sys.argv[1]), sys.argv[2], sys.argv[3])
"""


def measure(params: dict[str, object], mode: str) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(params), mode, SQL],
        capture_output=True,
        text=True,
        timeout=170,
        check=True,
    )
    result: dict[str, int] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_streaming_a_large_result_keeps_memory_flat(local_snowflake: LocalSnowflake) -> None:
    params = local_snowflake.connection_parameters
    collected = measure(params, "collect")
    streamed = measure(params, "stream")
    batches = measure(params, "arrow_batches")
    assert collected["rows"] == streamed["rows"] == batches["rows"] == ROWS
    print(f"peak RSS growth, 1M rows: collect {collected}, stream {streamed}, batches {batches}")
    assert streamed["growth_kib"] < 0.5 * collected["growth_kib"]
    assert batches["growth_kib"] < 0.5 * collected["growth_kib"]
