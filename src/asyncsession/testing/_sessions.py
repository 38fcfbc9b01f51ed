"""Session routes: login, logout, heartbeat, token renewal, and who a request is from."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._context import Emulator
from ._http import BadRequest, bind, read_body, respond
from ._protocol import (
    BAD_CREDENTIALS,
    MASTER_TOKEN_VALIDITY,
    NO_TOKEN,
    NOT_LOGGED_IN,
    SESSION_EXPIRED,
    SESSION_TOKEN_VALIDITY,
    error,
    reply,
)
from ._state import Session

_TOKEN_PREFIX = 'Snowflake Token="'


def session_of(emu: Emulator, request: Request, *, master: bool = False) -> Session:
    """The session whose (master) token authorizes ``request``, or the refusal Snowflake sends."""
    auth = request.headers.get("Authorization", "")
    if not auth.startswith(_TOKEN_PREFIX) or not auth.endswith('"'):
        raise BadRequest("Session token not found in the request data.", 401, NO_TOKEN)
    token = auth[len(_TOKEN_PREFIX) : -1]
    registry = emu.registry
    session = (registry.by_master_token if master else registry.by_token).get(token)
    if session is None:
        if token in registry.expired_tokens:
            raise BadRequest("Session token expired.", 200, SESSION_EXPIRED)
        raise BadRequest("User must login again to access the service.", 200, NOT_LOGGED_IN)
    return session


async def login(emu: Emulator, request: Request) -> Response:
    body = await read_body(request)
    data = body.get("data")
    if not isinstance(data, dict):
        raise BadRequest("login body needs a 'data' object")
    authenticator = str(data.get("AUTHENTICATOR") or "SNOWFLAKE").upper()
    user = str(data.get("LOGIN_NAME") or emu.user)
    if (
        emu.password is not None
        and authenticator == "SNOWFLAKE"
        and (data.get("PASSWORD") != emu.password or user.upper() != emu.user.upper())
    ):
        return respond(error(BAD_CREDENTIALS, "Incorrect username or password was specified."))
    q = request.query_params
    session = emu.registry.new_session(
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
        async with emu.open_lock:
            session.engine = await loop.run_in_executor(
                emu.executor, emu.engine.open_session, session.database, session.schema
            )
    except BaseException:
        emu.registry.delete_session(session)
        raise
    session.database, session.schema = session.engine.database, session.engine.schema
    params = data.get("SESSION_PARAMETERS") or {}
    if isinstance(params, dict):
        for name in ("QUERY_TAG", "STATEMENT_TIMEOUT_IN_SECONDS"):
            if name in params:
                session.parameters[name] = params[name]
    return respond(
        reply(
            {
                "token": session.token,
                "masterToken": session.master_token,
                "sessionId": session.session_id,
                "validityInSeconds": int(SESSION_TOKEN_VALIDITY),
                "masterValidityInSeconds": int(MASTER_TOKEN_VALIDITY),
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
    )


async def logout(emu: Emulator, request: Request) -> Response:
    session = session_of(emu, request)
    if request.query_params.get("delete", "").lower() == "true":
        emu.registry.delete_session(session)
        # Queries keep running after logout, as on Snowflake: the client must abort them.
        emu.release_engine_if_idle(session)
    return respond(reply())


async def heartbeat(emu: Emulator, request: Request) -> Response:
    session_of(emu, request)
    return respond(reply())


async def token_request(emu: Emulator, request: Request) -> Response:
    session = session_of(emu, request, master=True)
    body = await read_body(request)
    old = body.get("oldSessionToken")
    emu.registry.renew_token(session, str(old) if old else None)
    return respond(
        reply(
            {
                "sessionToken": session.token,
                "validityInSecondsST": int(SESSION_TOKEN_VALIDITY),
                "masterToken": session.master_token,
                "validityInSecondsMT": int(MASTER_TOKEN_VALIDITY),
                "sessionId": session.session_id,
            }
        )
    )


async def telemetry(emu: Emulator, request: Request) -> Response:
    await request.body()
    return respond(reply())


def routes(emu: Emulator) -> list[Route]:
    return [
        Route("/session/v1/login-request", bind(emu, login), methods=["POST"]),
        Route("/session", bind(emu, logout), methods=["POST"]),
        Route("/session/heartbeat", bind(emu, heartbeat), methods=["POST"]),
        Route("/session/token-request", bind(emu, token_request), methods=["POST"]),
        Route("/telemetry/send", bind(emu, telemetry), methods=["POST"]),
    ]
