"""One streaming measurement in a fresh process: ``python -m benchmarks._stream MODE ROWS PARAMS``.

Prints one JSON line: rows, elapsed_s (execute to last row), peak_rss_mb (VmHWM),
rss_growth_mb (VmHWM minus VmRSS just before the query).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import anyio

from benchmarks.probes import proc_status_kb
from benchmarks.scenarios import new_session, raw_connect

BATCH_ROWS = 10_000


def main(mode: str, rows: int, params: dict[str, Any]) -> dict[str, Any]:
    sql = f"select range as n from range({rows})"
    count = 0
    if mode.startswith("raw"):
        with raw_connect(params) as conn:
            before = proc_status_kb("VmRSS")
            t = time.perf_counter()
            cursor = conn.cursor()
            cursor.execute(sql)
            if mode == "raw fetchmany":
                while batch := cursor.fetchmany(BATCH_ROWS):
                    count += len(batch)
            elif mode == "raw fetchmany, every row":
                while batch := cursor.fetchmany(BATCH_ROWS):
                    for _row in batch:
                        count += 1
            else:
                for table in cursor.fetch_arrow_batches():
                    count += table.num_rows
            elapsed = time.perf_counter() - t
            cursor.close()
    else:
        box: dict[str, float] = {}

        async def run() -> int:
            n = 0
            async with await new_session(params) as session:
                box["before"] = proc_status_kb("VmRSS")
                t = time.perf_counter()
                query = session.sql(sql)
                if mode == "asyncsession to_local_iterator":
                    async with query.to_local_iterator(batch_rows=BATCH_ROWS) as stream:
                        async for _row in stream:
                            n += 1
                elif mode == "asyncsession to_row_batches":
                    async with query.to_row_batches(batch_rows=BATCH_ROWS) as batches:
                        async for batch in batches:
                            n += len(batch)  # as the raw fetchmany loop counts
                elif mode == "asyncsession to_row_batches, every row":
                    # Each Row made, as the raw loop above steps through each tuple.
                    async with query.to_row_batches(batch_rows=BATCH_ROWS) as batches:
                        async for batch in batches:
                            for _row in batch:
                                n += 1
                else:
                    async with query.to_arrow_batches() as stream:
                        async for table in stream:
                            n += table.num_rows
                box["elapsed"] = time.perf_counter() - t
            return n

        count = anyio.run(run)
        before, elapsed = int(box["before"]), box["elapsed"]
    peak = proc_status_kb("VmHWM")
    return {
        "mode": mode,
        "rows": count,
        "elapsed_s": elapsed,
        "peak_rss_mb": peak / 1024,
        "rss_growth_mb": (peak - before) / 1024,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]))))
