"""The admin API under ``/_emulator``: what ``LocalSnowflake`` inspects and arms.

Every route but ``health`` needs the admin token the launcher passed in the environment.
A new admin call is a handler here plus its route, and a method on ``LocalSnowflake``.
"""

from __future__ import annotations

import os

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

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
    return JSONResponse(
        {
            "sessions": [
                {"session_id": s.session_id, "user": s.user, "parameters": s.parameters}
                for s in emu.registry.sessions.values()
            ]
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


async def expire_tokens(emu: Emulator, request: Request) -> Response:
    _check_admin(emu, request)
    return JSONResponse({"expired": emu.registry.expire_tokens()})


def routes(emu: Emulator) -> list[Route]:
    return [
        Route(ADMIN_ROUTE + "/health", bind(emu, health), methods=["GET"]),
        Route(ADMIN_ROUTE + "/queries", bind(emu, queries), methods=["GET"]),
        Route(ADMIN_ROUTE + "/sessions", bind(emu, sessions), methods=["GET"]),
        Route(ADMIN_ROUTE + "/faults", bind(emu, faults), methods=["POST"]),
        Route(ADMIN_ROUTE + "/expire-tokens", bind(emu, expire_tokens), methods=["POST"]),
    ]
