"""Large results as Snowflake serves them: the first rows inline, the rest as chunks.

A result over either inline limit is answered with its first rows inline
(``rowsetBase64``) and the rest as chunks the client downloads lazily, a few ahead, from
URLs in the reply, with S3's SSE-C headers. The chunks of a result stay downloadable
while its query is in the history and for ``RESULT_TTL_SECONDS``. Written by worker
threads, read and trimmed on the event loop.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from fakesnow.arrow import to_ipc

INLINE_MAX_ROWS = 1_000
INLINE_MAX_BYTES = 256 * 1024
# Remote chunks hold about this many bytes of Arrow data, and at most CHUNK_MAX_ROWS rows.
CHUNK_TARGET_BYTES = 4 * 1024 * 1024
CHUNK_MAX_ROWS = 100_000
# How long a result's chunks stay downloadable (Snowflake's presigned URLs last hours).
RESULT_TTL_SECONDS = 3600.0
CHUNK_ROUTE = "/_emulator/chunks"
# The headers Snowflake asks clients to send with each chunk download (S3's SSE-C).
SSE_C_ALGORITHM = "x-amz-server-side-encryption-customer-algorithm"
SSE_C_KEY = "x-amz-server-side-encryption-customer-key"


def arrow_result(query_id: str, table: pa.Table, results: ResultStore) -> dict[str, Any]:
    """The reply fields of an Arrow result: all inline, or its first rows plus chunks."""
    inline_rows, chunk_rows = _chunk_layout(table)
    if inline_rows >= table.num_rows:
        inline = to_ipc(table)
        return {"queryResultFormat": "arrow", "rowsetBase64": base64.b64encode(inline).decode()}
    spans = [
        (offset, min(chunk_rows, table.num_rows - offset))
        for offset in range(inline_rows, table.num_rows, chunk_rows)
    ]
    stored = StoredResult(table, spans, [_ipc_size(table.slice(*span)) for span in spans])
    results.add(query_id, stored)
    inline = to_ipc(table.slice(0, inline_rows))
    return {
        "queryResultFormat": "arrow",
        "rowsetBase64": base64.b64encode(inline).decode(),
        **stored.reply_fields(query_id),
    }


def _chunk_layout(table: pa.Table) -> tuple[int, int]:
    """Rows inline and rows per remote chunk, from the table's average row size."""
    row_bytes = max(1, table.nbytes // max(1, table.num_rows))
    inline_rows = max(1, min(INLINE_MAX_ROWS, INLINE_MAX_BYTES // row_bytes))
    chunk_rows = max(1, min(CHUNK_MAX_ROWS, CHUNK_TARGET_BYTES // row_bytes))
    return inline_rows, chunk_rows


def _ipc_size(table: pa.Table) -> int:
    """The size of ``to_ipc(table)``, counted without writing it anywhere."""
    sink = pa.MockOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    size: int = sink.size()
    return size


@dataclass
class StoredResult:
    """A chunked result: its whole Snowflake-shaped table, sliced when a chunk is fetched."""

    table: pa.Table
    spans: list[tuple[int, int]]  # (offset, rows) of each remote chunk
    sizes: list[int]  # each chunk's body size in bytes
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    key: str = field(default_factory=lambda: base64.b64encode(secrets.token_bytes(32)).decode())
    created: float = field(default_factory=time.monotonic)

    def reply_fields(self, query_id: str) -> dict[str, Any]:
        """``chunks`` and ``chunkHeaders``; chunk URLs are paths, the server adds its host."""
        chunks = [
            {
                "url": f"{CHUNK_ROUTE}/{query_id}/{n}?token={self.token}",
                "rowCount": rows,
                "uncompressedSize": size,
                "compressedSize": size,
            }
            for n, ((_, rows), size) in enumerate(zip(self.spans, self.sizes, strict=True))
        ]
        return {"chunks": chunks, "chunkHeaders": {SSE_C_ALGORITHM: "AES256", SSE_C_KEY: self.key}}

    def chunk(self, index: int) -> pa.Buffer:
        """Chunk ``index`` as an Arrow IPC stream, like the inline part."""
        return to_ipc(self.table.slice(*self.spans[index]))


class ResultStore:
    """Chunked results by query id, until their query leaves the history or they expire.

    Written by worker threads, read and trimmed on the event loop, hence the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._results: dict[str, StoredResult] = {}

    def add(self, query_id: str, result: StoredResult) -> None:
        with self._lock:
            self._results[query_id] = result

    def get(self, query_id: str, token: str) -> StoredResult | None:
        """The result behind a chunk URL, or None if unknown, expired or the token is wrong."""
        with self._lock:
            result = self._results.get(query_id)
        if result is None or not secrets.compare_digest(result.token, token):
            return None
        if time.monotonic() - result.created > RESULT_TTL_SECONDS:
            return None
        return result

    def share(self, source_id: str, query_id: str) -> StoredResult | None:
        """Serve ``source_id``'s table as ``query_id``'s result too (RESULT_SCAN), uncopied."""
        with self._lock:
            source = self._results.get(source_id)
            if source is None:
                return None
            result = StoredResult(source.table, source.spans, source.sizes)
            self._results[query_id] = result
        return result

    def retain(self, live: Container[str]) -> None:
        """Drop the results of queries no longer in ``live`` and those past their TTL."""
        horizon = time.monotonic() - RESULT_TTL_SECONDS
        with self._lock:
            for query_id in [
                q for q, r in self._results.items() if q not in live or r.created < horizon
            ]:
                del self._results[query_id]

    def __len__(self) -> int:
        with self._lock:
            return len(self._results)
