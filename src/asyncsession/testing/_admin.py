"""The admin API under ``/_emulator``: what ``LocalSnowflake`` inspects and arms.

Every route but ``health`` needs the admin token the launcher passed in the environment.
A new admin call is a handler here plus its route, and a method on ``LocalSnowflake``.
"""

from __future__ import annotations

import os

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import _sessions
from ._context import Emulator
from ._http import BadRequest, bind, read_body
from ._protocol import ADMIN_HEADER, ADMIN_ROUTE


def _check_admin(emu: Emulator, request: Request) -> None:
    if request.headers.get(ADMIN_HEADER) != emu.admin_token:
        raise BadRequest("admin token required", 403)


async def health(emu: Emulator, request: Request) -> Response:
    return JSONResponse({"ok": True, "pid": os.getpid()})


async def queries(emu: Emulator, request: Request) -> Response:
    _check_admin(emu, request)
    status = request.query_params.get("status")
    found = [
        q.describe()
        for q in emu.registry.queries.values()
        if status is None or (q.running if status == "RUNNING" else q.status == status)
    ]
    return JSONResponse({"queries": found})


async def sessions(emu: Emulator, request: Request) -> Response:
    _check_admin(emu, request)
    return JSONResponse({"sessions": [s.describe() for s in emu.registry.sessions.values()]})


async def delete_session(emu: Emulator, request: Request) -> Response:
    _check_admin(emu, request)
    body = await read_body(request)
    session = emu.registry.sessions.get(int(body.get("session_id", -1)))
    if session is None:
        raise BadRequest(f"no session {body.get('session_id')!r}", 404)
    return JSONResponse({"aborted": await _sessions.delete_session(emu, session)})


async def token_validity(emu: Emulator, request: Request) -> Response:
    _check_admin(emu, request)
    body = await read_body(request)
    registry = emu.registry
    for key, attribute in (
        ("session", "session_token_validity"),
        ("master", "master_token_validity"),
    ):
        if body.get(key) is not None:
            value = float(body[key])
            if not value > 0:
                raise BadRequest(f"{key} token validity must be > 0 seconds, not {value}")
            setattr(registry, attribute, value)
    return JSONResponse(
        {"session": registry.session_token_validity, "master": registry.master_token_validity}
    )


async def counters(emu: Emulator, request: Request) -> Response:
    _check_admin(emu, request)
    registry = emu.registry
    return JSONResponse(
        {
            "logins": dict(registry.logins),
            "failed_logins": dict(registry.failed_logins),
            "heartbeats": dict(registry.heartbeats),
            "heartbeats_by_session": {
                str(s.session_id): s.heartbeats for s in registry.sessions.values()
            },
        }
    )


async def faults(emu: Emulator, request: Request) -> Response:
    _check_admin(emu, request)
    body = await read_body(request)
    if body.get("clear"):
        emu.faults.clear()
    if "latency_ms" in body:
        emu.faults.latency = float(body["latency_ms"]) / 1000
    if "route" in body:
        emu.faults.add(
            str(body["route"]),
            status=None if body.get("blackhole") else int(body.get("status", 503)),
            count=None if body.get("count") is None else int(body["count"]),
        )
    return JSONResponse({"ok": True})


async def fault_counts(emu: Emulator, request: Request) -> Response:
    """What is armed and what fired: per rule, per route, per query (request ids resolved)."""
    _check_admin(emu, request)
    described = emu.faults.describe()
    by_query = dict(described["fired_by_query_id"])
    by_request = {q.request_id: q.query_id for q in emu.registry.queries.values() if q.request_id}
    for request_id, n in described["fired_by_request_id"].items():
        if (query_id := by_request.get(request_id)) is not None:
            by_query[query_id] = by_query.get(query_id, 0) + n
    described["fired_by_query"] = by_query
    return JSONResponse(described)


async def abort_counts(emu: Emulator, request: Request) -> Response:
    """Abort requests received, per query (every route) and per request id."""
    _check_admin(emu, request)
    return JSONResponse(
        {
            "by_query": {
                q.query_id: q.abort_requests
                for q in emu.registry.queries.values()
                if q.abort_requests
            },
            "by_request_id": dict(emu.registry.abort_requests_by_request_id),
        }
    )


async def expire_tokens(emu: Emulator, request: Request) -> Response:
    _check_admin(emu, request)
    return JSONResponse({"expired": emu.registry.expire_tokens()})


def routes(emu: Emulator) -> list[Route]:
    return [
        Route(ADMIN_ROUTE + "/health", bind(emu, health), methods=["GET"]),
        Route(ADMIN_ROUTE + "/queries", bind(emu, queries), methods=["GET"]),
        Route(ADMIN_ROUTE + "/sessions", bind(emu, sessions), methods=["GET"]),
        Route(ADMIN_ROUTE + "/faults", bind(emu, faults), methods=["POST"]),
        Route(ADMIN_ROUTE + "/fault-counts", bind(emu, fault_counts), methods=["GET"]),
        Route(ADMIN_ROUTE + "/abort-counts", bind(emu, abort_counts), methods=["GET"]),
        Route(ADMIN_ROUTE + "/expire-tokens", bind(emu, expire_tokens), methods=["POST"]),
        Route(ADMIN_ROUTE + "/delete-session", bind(emu, delete_session), methods=["POST"]),
        Route(ADMIN_ROUTE + "/token-validity", bind(emu, token_validity), methods=["POST"]),
        Route(ADMIN_ROUTE + "/counters", bind(emu, counters), methods=["GET"]),
    ]
