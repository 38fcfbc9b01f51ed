"""The emulator's HTTP server: Snowflake's wire protocol over fakesnow, as its own process.

Run by ``LocalSnowflake`` as ``python -m asyncsession.testing._server``; it prints one
``READY`` line with its port, and exits when its standard input closes (the launcher
died), so no server outlives the process that started it.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from . import _sql
from ._engine import CHUNK_ROUTE, SSE_C_KEY, Engine, QueryFailed, wait_seconds
from ._state import ABORTED, CANCELED, FAILED, SUCCESS, Query, QueryError, Registry, Session

READY_PREFIX = "ASYNCSESSION-EMULATOR-READY "
ADMIN_HEADER = "X-Emulator-Admin"
# How long a synchronous query-request is held before answering 333333 (Snowflake: ~45 s).
SYNC_HOLD_SECONDS = 40.0
# How long GET /queries/{id}/result waits for a running query before answering 333333.
RESULT_HOLD_SECONDS = 10.0
ASYNC_CODE = "333334"
STILL_RUNNING_CODE = "333333"
SESSION_EXPIRED = "390112"
NOT_LOGGED_IN = "390104"


def _reply(
    data: Any = None, *, code: str | None = None, message: str | None = None
) -> JSONResponse:
    return JSONResponse({"data": data, "code": code, "message": message, "success": True})


def _error(code: str, message: str, status: int = 200) -> JSONResponse:
    return JSONResponse(
        {"data": {"errorCode": code}, "code": code, "message": message, "success": False},
        status_code=status,
    )


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, code: str = "000400") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class FaultRule:
    route: str
    status: int | None  # None: black hole
    remaining: int | None  # None: until cleared


@dataclass
class Faults:
    latency: float = 0.0
    rules: list[FaultRule] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def match(self, path: str) -> FaultRule | None:
        for rule in self.rules:
            if path.startswith(rule.route) or rule.route in path:
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self.rules.remove(rule)
                return rule
        return None

    def clear(self) -> None:
        self.rules.clear()
        self.latency = 0.0
        self.released.set()
        self.released = asyncio.Event()


class FaultMiddleware:
    """Adds latency and injected failures to every route but the admin ones.

    Result chunks are served under ``/_emulator`` too but stand for the cloud storage a
    client downloads them from: they get latency and faults like any other route.
    """

    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if not path or (path.startswith("/_emulator") and not path.startswith(CHUNK_ROUTE)):
            await self.app(scope, receive, send)
            return
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        rule = self.faults.match(scope["path"])
        if rule is not None:
            if rule.status is None:
                await self.faults.released.wait()
                rule_status = 503
            else:
                rule_status = rule.status
            body = json.dumps({"success": False, "message": "injected fault"}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": rule_status,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


class Emulator:
    def __init__(self, *, user: str, password: str | None, admin_token: str) -> None:
        self.user = user
        self.password = password
        self.admin_token = admin_token
        self.registry = Registry()
        self.engine = Engine()
        self.faults = Faults()
        self.executor = ThreadPoolExecutor(max_workers=32, thread_name_prefix="emulator-sql")
        self.open_lock = asyncio.Lock()
        self.tasks: set[asyncio.Task[None]] = set()
        self.expired_tokens: set[str] = set()

    # ---- helpers -------------------------------------------------------------
    async def body(self, request: Request) -> dict[str, Any]:
        raw = await request.body()
        if request.headers.get("Content-Encoding") == "gzip":
            try:
                raw = gzip.decompress(raw)
            except OSError as e:
                raise BadRequest(f"body is not valid gzip: {e}") from None
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError as e:
            raise BadRequest(f"body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise BadRequest("body must be a JSON object")
        return body

    def session_of(self, request: Request, *, master: bool = False) -> Session:
        auth = request.headers.get("Authorization", "")
        prefix = 'Snowflake Token="'
        if not auth.startswith(prefix) or not auth.endswith('"'):
            raise BadRequest("Session token not found in the request data.", 401, "390103")
        token = auth[len(prefix) : -1]
        table = self.registry.by_master_token if master else self.registry.by_token
        session = table.get(token)
        if session is None:
            if token in self.expired_tokens:
                raise BadRequest("Session token expired.", 200, SESSION_EXPIRED)
            raise BadRequest("User must login again to access the service.", 200, NOT_LOGGED_IN)
        return session

    # ---- session routes ------------------------------------------------------
    async def login(self, request: Request) -> Response:
        body = await self.body(request)
        data = body.get("data")
        if not isinstance(data, dict):
            raise BadRequest("login body needs a 'data' object")
        authenticator = str(data.get("AUTHENTICATOR") or "SNOWFLAKE").upper()
        user = str(data.get("LOGIN_NAME") or self.user)
        if (
            self.password is not None
            and authenticator == "SNOWFLAKE"
            and (data.get("PASSWORD") != self.password or user.upper() != self.user.upper())
        ):
            return _error("390100", "Incorrect username or password was specified.")
        q = request.query_params
        session = self.registry.new_session(
            user,
            database=q.get("databaseName") or None,
            schema=q.get("schemaName") or None,
            warehouse=q.get("warehouse") or None,
            role=q.get("roleName") or None,
        )
        loop = asyncio.get_running_loop()
        try:
            # One at a time: fakesnow's first ATTACH of a database races itself ("already
            # exists"), and a failed login must not leave its session behind.
            async with self.open_lock:
                session.engine = await loop.run_in_executor(
                    self.executor, self.engine.open_session, session.database, session.schema
                )
        except BaseException:
            self.registry.delete_session(session)
            raise
        session.database, session.schema = session.engine.database, session.engine.schema
        params = data.get("SESSION_PARAMETERS") or {}
        if isinstance(params, dict):
            for name in ("QUERY_TAG", "STATEMENT_TIMEOUT_IN_SECONDS"):
                if name in params:
                    session.parameters[name] = params[name]
        return _reply(
            {
                "token": session.token,
                "masterToken": session.master_token,
                "sessionId": session.session_id,
                "validityInSeconds": 3600,
                "masterValidityInSeconds": 14400,
                "idToken": None,
                "mfaToken": None,
                "serverVersion": "9.99.0",
                "displayUserName": user,
                "firstLogin": False,
                "healthCheckInterval": 45,
                "newClientForUpgrade": None,
                "parameters": [
                    {"name": "AUTOCOMMIT", "value": True},
                    {"name": "CLIENT_SESSION_KEEP_ALIVE_HEARTBEAT_FREQUENCY", "value": 3600},
                    {"name": "CLIENT_STAGE_ARRAY_BINDING_THRESHOLD", "value": 0},
                    {"name": "TIMEZONE", "value": "Etc/UTC"},
                ],
                "sessionInfo": {
                    "databaseName": session.database,
                    "schemaName": session.schema,
                    "warehouseName": session.warehouse,
                    "roleName": session.role or "PUBLIC",
                },
            }
        )

    async def session_route(self, request: Request) -> Response:
        session = self.session_of(request)
        if request.query_params.get("delete", "").lower() == "true":
            self.registry.delete_session(session)
            # Queries keep running after logout, as on Snowflake: the client must abort them.
            self.release_engine_if_idle(session)
        return _reply()

    async def heartbeat(self, request: Request) -> Response:
        self.session_of(request)
        return _reply()

    async def token_request(self, request: Request) -> Response:
        session = self.session_of(request, master=True)
        body = await self.body(request)
        old = body.get("oldSessionToken")
        if old:
            self.expired_tokens.discard(str(old))
        self.registry.renew_token(session)
        return _reply(
            {
                "sessionToken": session.token,
                "validityInSecondsST": 3600,
                "masterToken": session.master_token,
                "validityInSecondsMT": 14400,
                "sessionId": session.session_id,
            }
        )

    async def telemetry(self, request: Request) -> Response:
        await request.body()
        return _reply()

    # ---- queries -------------------------------------------------------------
    async def query_request(self, request: Request) -> Response:
        session = self.session_of(request)
        body = await self.body(request)
        sql_text = body.get("sqlText")
        if not isinstance(sql_text, str) or not sql_text.strip():
            raise BadRequest("query-request needs a non-empty 'sqlText'")
        request_id = request.query_params.get("requestId") or None
        query = self.registry.find_by_request(session, request_id) if request_id else None
        if query is None or not request.query_params.get("retryCount"):
            query = self.registry.new_query(session, sql_text, request_id)
            self.engine.results.retain(self.registry.queries)  # chunks of trimmed queries go
            if query.running:
                self.start(query, body)
        if body.get("asyncExec"):
            return self.in_progress(query, ASYNC_CODE)
        return await self.result_of(request, query, SYNC_HOLD_SECONDS)

    def start(self, query: Query, body: dict[str, Any]) -> None:
        task = asyncio.get_running_loop().create_task(self.run(query, body))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self, query: Query, body: dict[str, Any]) -> None:
        session = query.session
        raw_params = body.get("parameters")
        params: dict[str, Any] = raw_params if isinstance(raw_params, dict) else {}
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
            data = await self.execute(query, body.get("bindings"))
            data.setdefault("parameters", [{"name": "TIMEZONE", "value": "Etc/UTC"}])
            data.setdefault("finalDatabaseName", session.engine.database)
            data.setdefault("finalSchemaName", session.engine.schema)
            data["queryId"] = query.query_id
            query.finish(SUCCESS, {"data": data, "code": None, "message": None, "success": True})
        except QueryFailed as e:
            query.fail(e.error)
        except Exception as e:
            query.fail(QueryError(100_000, f"emulator error: {type(e).__name__}: {e}", "22000"))
        finally:
            if timer is not None:
                timer.cancel()
            session.last_query_ids.append(query.query_id)
            del session.last_query_ids[:-100]
            self.release_engine_if_idle(session)

    def release_engine_if_idle(self, session: Session) -> None:
        """Close a logged-out session's SQL connections once its last query has ended."""
        if session.session_id not in self.registry.sessions and not self.registry.running(
            session.session_id
        ):
            self.engine.close_session(session)

    async def execute(self, query: Query, bindings: Any) -> dict[str, Any]:
        sql_text, session = query.sql_text, query.session
        if m := _sql.WAIT.match(sql_text):
            seconds = wait_seconds(float(m[1]), m[2])
            try:
                await asyncio.wait_for(query.cancelled.wait(), seconds)
            except TimeoutError:
                unit = (m[2] or "seconds").lower()
                column = _sql.alias(m[3]) or f"SYSTEM$WAIT({m[1]})"
                return _sql.json_result(column, [f"waited {m[1]} {unit}"])
            raise QueryFailed(CANCELED)
        if m := _sql.CANCEL_QUERY.match(sql_text):
            target = self.registry.queries.get(m[1])
            if target is None or target.session.user != session.user:
                raise QueryFailed(QueryError(2003, f"Query ID {m[1]!r} not found.", "02000"))
            target.abort()
            return _sql.json_result(
                f"SYSTEM$CANCEL_QUERY('{m[1]}')", [f"query [{m[1]}] terminated."]
            )
        if m := _sql.CANCEL_ALL.match(sql_text):
            target_session = self.registry.sessions.get(int(m[1]))
            if target_session is None or target_session.user != session.user:
                raise QueryFailed(QueryError(2003, f"Session {m[1]} not found.", "02000"))
            aborted = [q.abort() for q in self.registry.running(int(m[1])) if q is not query]
            return _sql.json_result(
                f"SYSTEM$CANCEL_ALL_QUERIES({m[1]})", [f"{sum(aborted)} terminated."]
            )
        if m := _sql.RESULT_SCAN.match(sql_text):
            # The stored reply of an ended query: works for every path, light or DuckDB.
            source = self.registry.queries.get(m[1])
            if source is None or source.session.user != session.user or source.response is None:
                raise QueryFailed(QueryError(709, f"Statement {m[1]} not found", "02000"))
            if source.error is not None:
                raise QueryFailed(source.error)
            data = dict(source.response["data"])
            if "chunks" in data:
                # Chunks of its own, so they live as long as this query does.
                chunked = self.engine.results.share(source.query_id, query.query_id)
                if chunked is None:
                    raise QueryFailed(QueryError(709, f"Result of {m[1]} has expired", "02000"))
                data.update(chunked.reply_fields(query.query_id))
            return data
        if m := _sql.LAST_QUERY_ID.match(sql_text):
            return _sql.json_result("LAST_QUERY_ID()", [_last_query_id(session, m[1])])
        if m := _sql.CURRENT.match(sql_text):
            return _sql.json_result(f"CURRENT_{m[1].upper()}()", [self.current(session, m[1])])
        if m := _sql.ALTER_SESSION_SET.match(sql_text):
            name = m[1].upper()
            value = _sql.parse_literal(m[2])
            if name in _sql.INT_PARAMETERS and not isinstance(value, int):
                raise QueryFailed(
                    QueryError(1008, f"invalid value [{m[2]}] for parameter '{name}'", "22023")
                )
            session.parameters[name] = value
            return _sql.json_result("status", [_sql.STATUS_OK], 0x4000)
        if m := _sql.ALTER_SESSION_UNSET.match(sql_text):
            session.parameters.pop(m[1].upper(), None)
            return _sql.json_result("status", [_sql.STATUS_OK], 0x4000)
        if m := _sql.USE_WAREHOUSE_OR_ROLE.match(sql_text):
            name = m[2].strip('"') if m[2].startswith('"') else m[2].upper()
            setattr(session, m[1].lower(), name)
            return _sql.json_result("status", [_sql.STATUS_OK], 0x4300)
        register: dict[str, pa.Table] = {}
        if m := _sql.QUERY_HISTORY.search(sql_text):
            register[_sql.HISTORY_TABLE] = self.history(session, query, m[1] is not None, m[2])
            sql_text = _sql.QUERY_HISTORY.sub(_sql.HISTORY_TABLE, sql_text)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.executor, self.engine.execute, session, query, sql_text, bindings, register
        )

    def current(self, session: Session, what: str) -> Any:
        what = what.lower()
        if what == "session":
            return session.session_id
        if what == "account":
            return "LOCAL"
        if what == "user":
            return session.user.upper()
        if what in ("database", "schema"):
            return getattr(session.engine, what)
        return getattr(session, what)

    def history(self, session: Session, current: Query, by_session: bool, args: str) -> pa.Table:
        named = _sql.history_arguments(args)
        limit = int(named.get("RESULT_LIMIT", 100))
        session_id = int(named.get("SESSION_ID", session.session_id)) if by_session else None
        rows = [
            q
            for q in reversed(self.registry.queries.values())
            if (q.session.user == session.user)
            and (session_id is None or q.session.session_id == session_id)
        ][:limit]

        def ts(t: float | None) -> Any:
            return None if t is None else int(t * 1_000_000)

        def status(q: Query) -> str:
            # Aborted queries show as FAILED_WITH_ERROR (error 604) in query history.
            return "FAILED_WITH_ERROR" if q.status == ABORTED else q.status

        schema = pa.schema(
            [
                ("QUERY_ID", pa.string()),
                ("QUERY_TEXT", pa.string()),
                ("SESSION_ID", pa.int64()),
                ("USER_NAME", pa.string()),
                ("DATABASE_NAME", pa.string()),
                ("SCHEMA_NAME", pa.string()),
                ("WAREHOUSE_NAME", pa.string()),
                ("ROLE_NAME", pa.string()),
                ("QUERY_TAG", pa.string()),
                ("EXECUTION_STATUS", pa.string()),
                ("ERROR_CODE", pa.string()),
                ("ERROR_MESSAGE", pa.string()),
                ("START_TIME", pa.timestamp("us", tz="UTC")),
                ("END_TIME", pa.timestamp("us", tz="UTC")),
                ("TOTAL_ELAPSED_TIME", pa.int64()),
            ]
        )
        now = time.time()
        return pa.Table.from_pylist(
            [
                {
                    "QUERY_ID": q.query_id,
                    "QUERY_TEXT": q.sql_text,
                    "SESSION_ID": q.session.session_id,
                    "USER_NAME": q.session.user.upper(),
                    "DATABASE_NAME": q.session.engine.database if q.session.engine else None,
                    "SCHEMA_NAME": q.session.engine.schema if q.session.engine else None,
                    "WAREHOUSE_NAME": q.session.warehouse,
                    "ROLE_NAME": q.session.role,
                    "QUERY_TAG": q.query_tag,
                    "EXECUTION_STATUS": status(q),
                    "ERROR_CODE": None if q.error is None else f"{q.error.code:06d}",
                    "ERROR_MESSAGE": None if q.error is None else q.error.message,
                    "START_TIME": ts(q.start_time),
                    "END_TIME": ts(q.end_time),
                    "TOTAL_ELAPSED_TIME": int(((q.end_time or now) - q.start_time) * 1000),
                }
                for q in rows
            ],
            schema=schema,
        )

    def in_progress(self, query: Query, code: str) -> Response:
        return _reply(
            {
                "queryId": query.query_id,
                "getResultUrl": f"/queries/{query.query_id}/result",
                "queryAbortsAfterSecs": 300,
                "progressDesc": None,
            },
            code=code,
            message="Asynchronous execution in progress. Use provided query id to perform "
            "query monitoring and management.",
        )

    async def result_of(self, request: Request, query: Query, hold: float) -> Response:
        try:
            await asyncio.wait_for(query.done.wait(), hold)
        except TimeoutError:
            return self.in_progress(query, STILL_RUNNING_CODE)
        assert query.response is not None
        return JSONResponse(_absolute_chunk_urls(query.response, request))

    def query_of(self, request: Request, qid: str) -> Query:
        session = self.session_of(request)
        query = self.registry.queries.get(qid.strip("/"))
        if query is None or query.session.user != session.user:
            raise BadRequest(f"Query {qid!r} not found", 200, "000709")
        return query

    async def result(self, request: Request) -> Response:
        query = self.query_of(request, request.path_params["qid"])
        return await self.result_of(request, query, RESULT_HOLD_SECONDS)

    async def chunk(self, request: Request) -> Response:
        """One remote chunk of a result. Clients send no session token here, as for S3:
        the URL's token is the credential, plus the SSE-C key from ``chunkHeaders``."""
        token = request.query_params.get("token", "")
        result = self.engine.results.get(request.path_params["qid"], token)
        index = int(request.path_params["n"])
        if result is None or index >= len(result.spans):
            return Response("AccessDenied", status_code=403, media_type="text/plain")
        if not secrets.compare_digest(request.headers.get(SSE_C_KEY, ""), result.key):
            return Response("InvalidRequest: SSE-C key", status_code=400, media_type="text/plain")
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(self.executor, result.chunk, index)
        return Response(memoryview(body), media_type="application/octet-stream")

    async def abort_by_id(self, request: Request) -> Response:
        query = self.query_of(request, request.path_params["qid"])
        await request.body()
        query.abort()
        return _reply()

    async def abort_by_request(self, request: Request) -> Response:
        session = self.session_of(request)
        body = await self.body(request)
        request_id = body.get("requestId")
        if not isinstance(request_id, str) or not request_id:
            raise BadRequest("abort-request needs a 'requestId'")
        self.registry.abort_by_request(session, request_id)
        return _reply()

    async def monitoring(self, request: Request) -> Response:
        session = self.session_of(request)
        qid = request.path_params["rest"].strip("/")
        query = self.registry.queries.get(qid)
        if query is None or query.session.user != session.user:
            return _reply({"queries": []})
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
        return _reply({"queries": [entry]})

    # ---- admin (the launcher's inspection and fault API) --------------------
    def check_admin(self, request: Request) -> None:
        if request.headers.get(ADMIN_HEADER) != self.admin_token:
            raise BadRequest("admin token required", 403)

    async def admin_queries(self, request: Request) -> Response:
        self.check_admin(request)
        status = request.query_params.get("status")
        queries = [
            q.describe()
            for q in self.registry.queries.values()
            if status is None or (q.running if status == "RUNNING" else q.status == status)
        ]
        return JSONResponse({"queries": queries})

    async def admin_sessions(self, request: Request) -> Response:
        self.check_admin(request)
        return JSONResponse(
            {
                "sessions": [
                    {"session_id": s.session_id, "user": s.user, "parameters": s.parameters}
                    for s in self.registry.sessions.values()
                ]
            }
        )

    async def admin_faults(self, request: Request) -> Response:
        self.check_admin(request)
        body = await self.body(request)
        if body.get("clear"):
            self.faults.clear()
        if "latency_ms" in body:
            self.faults.latency = float(body["latency_ms"]) / 1000
        if "route" in body:
            self.faults.rules.append(
                FaultRule(
                    route=str(body["route"]),
                    status=None if body.get("blackhole") else int(body.get("status", 503)),
                    remaining=None if body.get("count") is None else int(body["count"]),
                )
            )
        return JSONResponse({"ok": True})

    async def admin_expire(self, request: Request) -> Response:
        self.check_admin(request)
        self.expired_tokens.update(self.registry.by_token)
        return JSONResponse({"expired": self.registry.expire_tokens()})

    async def admin_health(self, request: Request) -> Response:
        return JSONResponse({"ok": True, "pid": os.getpid()})


def _last_query_id(session: Session, index: str | None) -> str | None:
    position = int(index) if index is not None else -1
    ids = session.last_query_ids
    try:
        return ids[position]
    except IndexError:
        return None


def _absolute_chunk_urls(response: dict[str, Any], request: Request) -> dict[str, Any]:
    """Chunk URLs are stored as paths; answer them on the host the client reached."""
    data = response.get("data")
    if not isinstance(data, dict) or not data.get("chunks"):
        return response
    base = str(request.base_url).rstrip("/")
    chunks = [{**c, "url": base + c["url"]} for c in data["chunks"]]
    return {**response, "data": {**data, "chunks": chunks}}


def _guard(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    async def route(request: Request) -> Response:
        try:
            return await handler(request)
        except BadRequest as e:
            return _error(e.code, str(e), e.status)

    return route


def build_app(emulator: Emulator) -> ASGIApp:
    e = emulator
    routes = [
        Route("/session/v1/login-request", _guard(e.login), methods=["POST"]),
        Route("/session", _guard(e.session_route), methods=["POST"]),
        Route("/session/heartbeat", _guard(e.heartbeat), methods=["POST"]),
        Route("/session/token-request", _guard(e.token_request), methods=["POST"]),
        Route("/telemetry/send", _guard(e.telemetry), methods=["POST"]),
        Route("/queries/v1/query-request", _guard(e.query_request), methods=["POST"]),
        Route("/queries/v1/abort-request", _guard(e.abort_by_request), methods=["POST"]),
        Route("/queries/{qid}/result", _guard(e.result), methods=["GET"]),
        Route("/queries/{qid}/abort-request", _guard(e.abort_by_id), methods=["POST"]),
        Route("/monitoring/queries/{rest:path}", _guard(e.monitoring), methods=["GET"]),
        Route(CHUNK_ROUTE + "/{qid}/{n:int}", e.chunk, methods=["GET"]),
        Route("/_emulator/health", _guard(e.admin_health), methods=["GET"]),
        Route("/_emulator/queries", _guard(e.admin_queries), methods=["GET"]),
        Route("/_emulator/sessions", _guard(e.admin_sessions), methods=["GET"]),
        Route("/_emulator/faults", _guard(e.admin_faults), methods=["POST"]),
        Route("/_emulator/expire-tokens", _guard(e.admin_expire), methods=["POST"]),
    ]
    return FaultMiddleware(Starlette(routes=routes), e.faults)


def _exit_when_stdin_closes() -> None:
    try:
        while sys.stdin.buffer.read(1024):
            pass
    finally:
        os._exit(0)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="asyncsession-emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--user", default="test")
    parser.add_argument("--password", default=None)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--watch-stdin", action="store_true")
    args = parser.parse_args(argv)
    admin_token = os.environ.get("ASYNCSESSION_EMULATOR_ADMIN_TOKEN", "")

    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on sockets that say so, and
    # without it a reply's head and body wait on the client's delayed ACK (~40 ms each).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(2048)
    sock.set_inheritable(True)

    emulator = Emulator(user=args.user, password=args.password, admin_token=admin_token)
    emulator.faults.latency = args.latency_ms / 1000
    config = uvicorn.Config(
        build_app(emulator),
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=120,
    )
    if args.watch_stdin:
        threading.Thread(target=_exit_when_stdin_closes, daemon=True).start()
    print(
        READY_PREFIX + json.dumps({"port": sock.getsockname()[1], "pid": os.getpid()}), flush=True
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
