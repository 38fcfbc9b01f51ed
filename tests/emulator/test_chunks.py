"""Large results arrive as Snowflake sends them: the first rows inline, the rest in chunks.

The connector downloads chunks lazily, a few ahead, so a client that iterates batch by
batch holds a bounded part of the result (checked in a subprocess, where RSS is clean).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from asyncsession.testing import LocalSnowflake
from tests.emulator.raw import RawClient
from tests.helpers import connect

# Tests of the emulator itself.
pytestmark = pytest.mark.emulator_only

ROWS = 300_000
SQL = f"select seq4() as n, 'x' || seq4() as s from table(generator(rowcount => {ROWS})) order by n"
SSE_C_KEY = "x-amz-server-side-encryption-customer-key"
REPO = Path(__file__).resolve().parents[2]


def _check_rows(n: list[int], s: list[str]) -> None:
    assert len(n) == ROWS
    assert n == list(range(ROWS))
    assert s[0] == "x0"
    assert s[-1] == f"x{ROWS - 1}"


def _get(url: str, headers: dict[str, str]) -> bytes:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        body: bytes = response.read()
        return body


def _status(url: str, headers: dict[str, str]) -> int:
    with pytest.raises(urllib.error.HTTPError) as info:
        _get(url, headers)
    info.value.close()
    return info.value.code


def test_reply_holds_first_rows_inline_and_the_rest_as_chunks(
    local_snowflake: LocalSnowflake,
) -> None:
    # The chunk URLs name the host the client used, here "localhost".
    url = local_snowflake.url.replace("127.0.0.1", "localhost")
    raw = RawClient(url)
    try:
        data = raw.query(SQL)["data"]
    finally:
        raw.logout()
    assert data["queryResultFormat"] == "arrow"
    inline = pa.ipc.open_stream(base64.b64decode(data["rowsetBase64"])).read_all()
    chunks = data["chunks"]
    assert 0 < inline.num_rows <= 1_000
    assert len(chunks) > 1
    assert data["total"] == ROWS == inline.num_rows + sum(c["rowCount"] for c in chunks)
    assert all(c["url"].startswith(url + "/") for c in chunks)
    headers = data["chunkHeaders"]

    # No Authorization header: the URL's token and the chunk headers are the credentials.
    first = pa.ipc.open_stream(_get(chunks[0]["url"], headers)).read_all()
    assert first.num_rows == chunks[0]["rowCount"]
    assert first.column("N")[0].as_py() == inline.num_rows
    assert first.schema.equals(inline.schema, check_metadata=True)
    assert first.schema.field("N").metadata[b"logicalType"] == b"FIXED"
    assert len(_get(chunks[-1]["url"], headers)) == chunks[-1]["uncompressedSize"]

    unsigned = chunks[0]["url"].split("?")[0]
    assert _status(unsigned, headers) == 403
    assert _status(unsigned + "?token=guess", headers) == 403
    assert _status(chunks[0]["url"], {}) == 400
    assert _status(chunks[0]["url"], {**headers, SSE_C_KEY: "wrong"}) == 400


def test_fetchall_gets_every_row_in_order(local_snowflake: LocalSnowflake) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        rows = conn.cursor().execute(SQL).fetchall()
    _check_rows([r[0] for r in rows], [r[1] for r in rows])


def test_fetch_arrow_batches_streams_chunk_by_chunk(local_snowflake: LocalSnowflake) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        batches = list(conn.cursor().execute(SQL).fetch_arrow_batches())
    assert len(batches) > 1
    table = pa.concat_tables(batches)
    _check_rows(table.column("N").to_pylist(), table.column("S").to_pylist())


def test_fetch_pandas_batches(local_snowflake: LocalSnowflake) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        frames = list(conn.cursor().execute(SQL).fetch_pandas_batches())
    assert len(frames) > 1
    n = [int(v) for f in frames for v in f["N"]]
    s = [str(v) for f in frames for v in f["S"]]
    _check_rows(n, s)


def test_get_result_batches(local_snowflake: LocalSnowflake) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        cur = conn.cursor().execute(SQL)
        batches = cur.get_result_batches()
        assert batches is not None
        assert len(batches) > 1
        assert sum(b.rowcount for b in batches) == ROWS
        table = pa.concat_tables([b.to_arrow() for b in batches])
    _check_rows(table.column("N").to_pylist(), table.column("S").to_pylist())


def test_result_scan_replays_a_chunked_result(local_snowflake: LocalSnowflake) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        cur = conn.cursor()
        cur.execute(SQL)
        source = cur.sfqid
        rows = cur.execute(f"select * from table(result_scan('{source}'))").fetchall()
        _check_rows([r[0] for r in rows], [r[1] for r in rows])
    raw = RawClient(local_snowflake.url)
    try:
        data = raw.query(f"select * from table(result_scan('{source}'))")["data"]
    finally:
        raw.logout()
    # The replay's chunks are its own, so they outlive the source's.
    assert all(f"/{data['queryId']}/" in c["url"] for c in data["chunks"])
    table = pa.concat_tables(
        [
            pa.ipc.open_stream(_get(c["url"], data["chunkHeaders"])).read_all()
            for c in data["chunks"]
        ]
    )
    assert data["total"] == ROWS
    assert table.num_rows == sum(c["rowCount"] for c in data["chunks"])
    assert table.column("N")[-1].as_py() == ROWS - 1


_STORE_SCRIPT = """
import pyarrow as pa
from fakesnow.arrow import to_ipc
from asyncsession.testing import _results

store = _results.ResultStore()
table = pa.table({"N": list(range(10))})
kept = _results.StoredResult(table, [(4, 3), (7, 3)], [1, 1])
store.add("kept", kept)
store.add("trimmed", _results.StoredResult(table, [(4, 6)], [1]))
shared = store.share("kept", "replay")
assert shared is not None and shared.table is table and shared.token != kept.token
assert store.get("kept", "wrong") is None
assert store.get("kept", kept.token) is kept
assert kept.chunk(1).to_pybytes() == to_ipc(table.slice(7, 3)).to_pybytes()
store.retain({"kept", "replay"})
assert len(store) == 2
kept.created -= _results.RESULT_TTL_SECONDS + 1
assert store.get("kept", kept.token) is None
store.retain({"kept", "replay"})
assert len(store) == 1 and store.share("kept", "again") is None
print("ok")
"""


def test_chunk_store_drops_trimmed_and_expired_results(local_snowflake: LocalSnowflake) -> None:
    # The store lives in the server's environment (fakesnow), so test it there.
    done = subprocess.run(
        [local_snowflake.python, "-c", _STORE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.strip() == "ok", done.stderr


_MEMORY_SCRIPT = """
import json, sys
from tests.helpers import connect

def peak_rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")

params, mode, sql = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
with connect(params) as conn:
    cur = conn.cursor()
    # Warm up: load the Arrow readers and start the chunk downloader before measuring.
    warm = "select seq4() as n from table(generator(rowcount => 5000))"
    for _ in cur.execute(warm).fetch_arrow_batches():
        pass
    cur.execute(warm).fetchall()
    before = peak_rss()
    cur.execute(sql)
    rows = last = 0
    if mode == "stream":
        for batch in cur.fetch_arrow_batches():
            rows += batch.num_rows
            last = batch.column("N")[-1].as_py()
    else:
        everything = cur.fetchall()
        rows, last = len(everything), everything[-1][0]
    print(json.dumps({"rows": rows, "last": last, "growth": peak_rss() - before}))
"""


def _peak_growth(emulator: LocalSnowflake, mode: str, sql: str) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(_MEMORY_SCRIPT),
            json.dumps(emulator.connection_parameters),
            mode,
            sql,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_streaming_a_large_result_keeps_memory_bounded(local_snowflake: LocalSnowflake) -> None:
    rows = 1_000_000
    # Wide rows, so the result's size dominates the client's fixed costs.
    sql = (
        f"select seq4() as n, repeat('x', 60) || seq4() as s "
        f"from table(generator(rowcount => {rows})) order by n"
    )
    streamed = _peak_growth(local_snowflake, "stream", sql)
    materialized = _peak_growth(local_snowflake, "fetchall", sql)
    for run in (streamed, materialized):
        assert (run["rows"], run["last"]) == (rows, rows - 1)
    assert streamed["growth"] < 0.5 * materialized["growth"], (streamed, materialized)
