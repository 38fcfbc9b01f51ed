"""Query routes: submit, run, answer, poll, abort, monitor, and serve result chunks.

A query runs as a task on the server's event loop (``run``); the request that submitted
it waits for it up to a hold time, then answers 333333 and the client polls its result
URL. ``asyncExec`` answers 333334 at once.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import _statements
from ._context import Emulator
from ._engine import QueryFailed
from ._http import BadRequest, bind, read_body, respond
from ._protocol import (
    ASYNC_CODE,
    QUERY_NOT_FOUND,
    RESULT_HOLD_SECONDS,
    STILL_RUNNING_CODE,
    SYNC_HOLD_SECONDS,
    in_progress,
    reply,
)
from ._results import CHUNK_ROUTE, SSE_C_KEY
from ._sessions import session_of
from ._state import FAILED, SUCCESS, Query, QueryError


async def query_request(emu: Emulator, request: Request) -> Response:
    session = session_of(emu, request)
    body = await read_body(request)
    sql_text = body.get("sqlText")
    if not isinstance(sql_text, str) or not sql_text.strip():
        raise BadRequest("query-request needs a non-empty 'sqlText'")
    request_id = request.query_params.get("requestId") or None
    query = emu.registry.find_by_request(session, request_id) if request_id else None
    if query is None or not request.query_params.get("retryCount"):
        tag = _statement_parameters(body).get("QUERY_TAG")
        query = emu.registry.new_query(
            session, sql_text, request_id, None if tag is None else str(tag)
        )
        emu.engine.results.retain(emu.registry.queries)  # chunks of trimmed queries go
        if query.running:
            emu.spawn(run(emu, query, body))
        else:  # aborted before it arrived: no worker ever ran it
            query.worker_end_time = query.end_time
    if body.get("asyncExec"):
        return respond(in_progress(query.query_id, ASYNC_CODE))
    return await _result_of(request, query, SYNC_HOLD_SECONDS)


def _statement_parameters(body: dict[str, Any]) -> dict[str, Any]:
    """The request's per-statement parameters (``_statement_params``): this query only."""
    params = body.get("parameters")
    return {str(k).upper(): v for k, v in params.items()} if isinstance(params, dict) else {}


async def run(emu: Emulator, query: Query, body: dict[str, Any]) -> None:
    session = query.session
    params = _statement_parameters(body)
    timeout = float(params.get("STATEMENT_TIMEOUT_IN_SECONDS") or session.statement_timeout)
    timer = None
    if timeout > 0:
        error = QueryError(
            630,
            f"Statement reached its statement or warehouse timeout of {timeout:g} second(s) "
            "and was canceled.",
            "57014",
        )
        timer = asyncio.get_running_loop().call_later(timeout, query.abort, error, FAILED)
    try:
        if not query.running:
            # Aborted between its arrival and its turn here (a SYSTEM$CANCEL_ALL_QUERIES of
            # its session, say): a statement cancelled before it starts never executes.
            return
        data = await _statements.execute(emu, query, body.get("bindings"))
        data.setdefault("parameters", [{"name": "TIMEZONE", "value": "Etc/UTC"}])
        data.setdefault("finalDatabaseName", session.engine.database)
        data.setdefault("finalSchemaName", session.engine.schema)
        data["queryId"] = query.query_id
        query.finish(SUCCESS, reply(data))
    except QueryFailed as e:
        query.fail(e.error)
    except Exception as e:
        query.fail(QueryError(100_000, f"emulator error: {type(e).__name__}: {e}", "22000"))
    finally:
        query.worker_end_time = time.time()  # the statement's execution really returned
        if timer is not None:
            timer.cancel()
        session.last_query_ids.append(query.query_id)
        del session.last_query_ids[:-100]
        emu.release_engine_if_idle(session)


async def _result_of(request: Request, query: Query, hold: float) -> Response:
    try:
        await asyncio.wait_for(query.done.wait(), hold)
    except TimeoutError:
        return respond(in_progress(query.query_id, STILL_RUNNING_CODE))
    assert query.response is not None
    return JSONResponse(_absolute_chunk_urls(query.response, request))


def _absolute_chunk_urls(response: dict[str, Any], request: Request) -> dict[str, Any]:
    """Chunk URLs are stored as paths; answer them on the host the client reached."""
    data = response.get("data")
    if not isinstance(data, dict) or not data.get("chunks"):
        return response
    base = str(request.base_url).rstrip("/")
    chunks = [{**c, "url": base + c["url"]} for c in data["chunks"]]
    return {**response, "data": {**data, "chunks": chunks}}


def _query_of(emu: Emulator, request: Request, qid: str) -> Query:
    session = session_of(emu, request)
    query = emu.registry.queries.get(qid.strip("/"))
    if query is None or query.session.user != session.user:
        raise BadRequest(f"Query {qid!r} not found", 200, QUERY_NOT_FOUND)
    return query


async def result(emu: Emulator, request: Request) -> Response:
    query = _query_of(emu, request, request.path_params["qid"])
    return await _result_of(request, query, RESULT_HOLD_SECONDS)


async def chunk(emu: Emulator, request: Request) -> Response:
    """One remote chunk of a result. Clients send no session token here, as for S3:
    the URL's token is the credential, plus the SSE-C key from ``chunkHeaders``."""
    token = request.query_params.get("token", "")
    stored = emu.engine.results.get(request.path_params["qid"], token)
    index = int(request.path_params["n"])
    if stored is None or index >= len(stored.spans):
        return Response("AccessDenied", status_code=403, media_type="text/plain")
    if not secrets.compare_digest(request.headers.get(SSE_C_KEY, ""), stored.key):
        return Response("InvalidRequest: SSE-C key", status_code=400, media_type="text/plain")
    loop = asyncio.get_running_loop()
    data = await loop.run_in_executor(emu.executor, stored.chunk, index)
    return Response(memoryview(data), media_type="application/octet-stream")


async def abort_by_id(emu: Emulator, request: Request) -> Response:
    query = _query_of(emu, request, request.path_params["qid"])
    await request.body()
    query.abort_requests += 1
    query.abort()
    return respond(reply())


async def abort_by_request(emu: Emulator, request: Request) -> Response:
    session = session_of(emu, request)
    body = await read_body(request)
    request_id = body.get("requestId")
    if not isinstance(request_id, str) or not request_id:
        raise BadRequest("abort-request needs a 'requestId'")
    emu.registry.abort_by_request(session, request_id)
    return respond(reply())


async def monitoring(emu: Emulator, request: Request) -> Response:
    session = session_of(emu, request)
    qid = request.path_params["rest"].strip("/")  # 5.x sends //{qid}
    query = emu.registry.queries.get(qid)
    if query is None or query.session.user != session.user:
        return respond(reply({"queries": []}))
    entry: dict[str, Any] = {
        "id": query.query_id,
        "status": query.status,
        "state": query.status,
        "sqlText": query.sql_text,
        "startTime": int(query.start_time * 1000),
        "endTime": int(query.end_time * 1000) if query.end_time else 0,
        "sessionId": query.session.session_id,
    }
    if query.error is not None:
        entry["errorCode"] = str(query.error.code)
        entry["errorMessage"] = query.error.message
    return respond(reply({"queries": [entry]}))


def routes(emu: Emulator) -> list[Route]:
    return [
        Route("/queries/v1/query-request", bind(emu, query_request), methods=["POST"]),
        Route("/queries/v1/abort-request", bind(emu, abort_by_request), methods=["POST"]),
        Route("/queries/{qid}/result", bind(emu, result), methods=["GET"]),
        Route("/queries/{qid}/abort-request", bind(emu, abort_by_id), methods=["POST"]),
        Route("/monitoring/queries/{rest:path}", bind(emu, monitoring), methods=["GET"]),
        Route(CHUNK_ROUTE + "/{qid}/{n:int}", bind(emu, chunk), methods=["GET"]),
    ]
