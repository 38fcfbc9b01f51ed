"""A FastAPI service on a Snowflake session pool; a gone client's query is aborted on the server.

Each request leases its own session (returned, reset, after the response), so a
transaction or a ``use schema`` in one request never leaks into another. At startup it
creates a table ``NOTES`` (if missing) in the connection's schema for ``/notes``.

    python examples/fastapi_app.py                      # against the embedded local emulator
    python examples/fastapi_app.py --connection NAME    # against a real account
    python examples/fastapi_app.py --port 8000          # then, from another shell:

    curl -X POST 'localhost:8000/notes?text=hello'      # an insert in a transaction
    curl 'localhost:8000/notes'
    curl 'localhost:8000/numbers?below=5'               # a query with bound parameters
    curl 'localhost:8000/numbers.ndjson?n=1000000'      # a large result, streamed as NDJSON
    curl 'localhost:8000/slow?seconds=30&max_seconds=1'    # 504 after 1 s; the query is aborted
    curl 'localhost:8000/slow?seconds=30'               # press Ctrl-C: the query is aborted
    curl 'localhost:8000/health'                        # a sync endpoint, always answering
    curl 'localhost:8000/pool'                          # the pool's sizes and counters

Needs ``pip install 'asyncsession[fastapi]' uvicorn``.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import StreamingResponse

from asyncsession import Session, SessionBuilder
from asyncsession.fastapi import (
    CancelOnDisconnectMiddleware,
    SnowflakePool,
    SnowflakeSession,
    snowflake_lifespan,
)

#: Sessions kept logged in, and the most the service opens under load.
POOL = {"min_size": 2, "max_size": 10}

HISTORY = (
    "select execution_status, error_code, error_message "
    "from table(information_schema.query_history_by_session()) where query_text = ?"
)


def create_app(builder: SessionBuilder, *, pool: dict[str, Any] | None = POOL) -> FastAPI:
    """``pool=None``: one session shared by every request (for read-only services)."""

    @asynccontextmanager
    async def setup(app: FastAPI) -> AsyncIterator[None]:
        resource = app.state.snowflake
        async with resource.session() if pool is not None else _shared(resource) as session:
            await session.sql("create table if not exists notes (text varchar)").collect()
        yield

    app = FastAPI(
        title="asyncsession example",
        lifespan=snowflake_lifespan(builder, pool=pool, lifespan=setup),
    )
    # Cancel a request's handler (and so abort its query) when the client disconnects.
    app.add_middleware(CancelOnDisconnectMiddleware)

    @app.post("/notes")
    async def add_note(session: SnowflakeSession, text: str) -> dict[str, int]:
        """Two statements in one transaction: both or neither (ROLLBACK on error or cancel)."""
        async with session.transaction():
            await session.sql("insert into notes values (?)", [text]).collect()
            rows = await session.sql("select count(*) from notes").collect()
        return {"notes": rows[0][0]}

    @app.get("/notes")
    async def notes(session: SnowflakeSession) -> list[str]:
        return [row[0] for row in await session.sql("select text from notes").collect()]

    @app.get("/numbers")
    async def numbers(session: SnowflakeSession, below: int = 10) -> list[dict[str, Any]]:
        """Bound parameters: ``?`` placeholders are bound on the server, never pasted in."""
        query = session.sql("select range as n, range * range as square from range(?)", [below])
        return [row.as_dict() for row in await query.collect()]

    @app.get("/numbers.ndjson")
    async def numbers_ndjson(
        session: SnowflakeSession, n: int = Query(100_000, ge=0)
    ) -> StreamingResponse:
        """A large result, one JSON line per row, holding one batch in memory at a time."""

        async def lines() -> AsyncIterator[bytes]:
            async with session.sql(
                "select range as n, 'row ' || range as label from range(?)", [n]
            ).to_local_iterator() as rows:
                async for row in rows:
                    yield json.dumps(row.as_dict()).encode() + b"\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get("/slow")
    async def slow(
        session: SnowflakeSession, seconds: float = 30.0, max_seconds: float | None = None
    ) -> dict[str, Any]:
        """A slow query; after ``max_seconds`` it is aborted on the server and we answer 504."""
        # A unique comment lets us find this very query in QUERY_HISTORY afterwards.
        sql = f"select system$wait({float(seconds)}) as waited -- request {uuid.uuid4()}"
        try:
            with anyio.fail_after(max_seconds if max_seconds is not None else float("inf")):
                rows = await session.sql(sql).collect()
        except TimeoutError:
            # The query was aborted on the server (an aborted query shows as
            # FAILED_WITH_ERROR, error 000604 "SQL execution canceled").
            history = await session.sql(HISTORY, [sql]).collect()
            raise HTTPException(
                504,
                {
                    "error": f"timed out after {max_seconds:g} s",
                    "query_history": history[0].as_dict() if history else None,
                },
            ) from None
        return {"waited": rows[0][0]}

    @app.get("/health")
    def health() -> dict[str, str]:
        """A sync endpoint: runs in anyio's default thread pool, which queries never take."""
        return {"status": "ok"}

    if pool is not None:

        @app.get("/pool")
        async def pool_stats(snowflake_pool: SnowflakePool) -> dict[str, Any]:
            return snowflake_pool.stats()

    return app


@asynccontextmanager
async def _shared(session: Any) -> AsyncIterator[Any]:
    yield session


def builder_for(connection: str | None) -> SessionBuilder:
    builder = Session.builder.app_name("asyncsession-fastapi-example")
    if connection:
        return builder.config("connection_name", connection)
    return builder.config("local_testing", True)


def main(argv: list[str]) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connection", help="a connections.toml name (default: local emulator)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(builder_for(args.connection)), host=args.host, port=args.port)


if __name__ == "__main__":
    main(sys.argv[1:])
