"""Session routes: login, logout, heartbeat, token renewal, and who a request is from."""

from __future__ import annotations

import asyncio
import gzip
import json

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import _transactions
from ._context import Emulator
from ._http import BadRequest, bind, read_body, respond
from ._protocol import (
    BAD_CREDENTIALS,
    NO_TOKEN,
    error,
    reply,
)
from ._state import Refused, Session

_TOKEN_PREFIX = 'Snowflake Token="'
LOGIN_ROUTE = "/session/v1/login-request"


def session_of(emu: Emulator, request: Request, *, master: bool = False) -> Session:
    """The session whose (master) token authorizes ``request``, or the refusal Snowflake sends."""
    auth = request.headers.get("Authorization", "")
    if not auth.startswith(_TOKEN_PREFIX) or not auth.endswith('"'):
        raise BadRequest("Session token not found in the request data.", 401, NO_TOKEN)
    try:
        return emu.registry.authenticate(auth[len(_TOKEN_PREFIX) : -1], master=master)
    except Refused as e:
        raise BadRequest(str(e), 200, e.code) from None


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
        emu.registry.failed_logins[user.upper()] += 1
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
        emu.registry.failed_logins[user.upper()] += 1
        raise
    emu.registry.logins[user.upper()] += 1
    session.database, session.schema = session.engine.database, session.engine.schema
    params = data.get("SESSION_PARAMETERS") or {}
    if isinstance(params, dict):
        for name in ("QUERY_TAG", "STATEMENT_TIMEOUT_IN_SECONDS", "AUTOCOMMIT"):
            if name in params:
                session.parameters[name] = params[name]
    return respond(
        reply(
            {
                "token": session.token,
                "masterToken": session.master_token,
                "sessionId": session.session_id,
                "validityInSeconds": _seconds(emu.registry.session_token_validity),
                "masterValidityInSeconds": _seconds(emu.registry.master_token_validity),
                "idToken": None,
                "mfaToken": None,
                "serverVersion": "9.99.0",
                "displayUserName": user,
                "firstLogin": False,
                "healthCheckInterval": 45,
                "newClientForUpgrade": None,
                "parameters": [
                    {"name": "AUTOCOMMIT", "value": session.autocommit},
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
        # Queries keep running after logout, as on Snowflake (the client must abort them).
        # An open transaction is rolled back: now, or once the statement running in it
        # ends (the logout does not wait for it).
        txn = session.transaction
        if txn is not None and txn.lock.locked():
            emu.spawn(_roll_back_and_release(emu, session))
        else:
            await _roll_back_and_release(emu, session)
    return respond(reply())


async def _roll_back_and_release(emu: Emulator, session: Session) -> None:
    await _transactions.roll_back(emu, session)
    emu.release_engine_if_idle(session)


async def delete_session(emu: Emulator, session: Session) -> int:
    """End ``session`` on the server side: abort its queries, roll back its transaction.

    Its tokens then answer 390104 ("User must login again"), Snowflake's answer for a
    session that no longer exists. Returns how many queries were aborted.
    """
    emu.registry.delete_session(session)
    aborted = sum(q.abort() for q in emu.registry.running(session.session_id))
    await _roll_back_and_release(emu, session)  # quick: its statements were interrupted
    return aborted


async def heartbeat(emu: Emulator, request: Request) -> Response:
    session = session_of(emu, request)
    session.heartbeats += 1
    emu.registry.heartbeats[session.user.upper()] += 1
    return respond(reply())


async def token_request(emu: Emulator, request: Request) -> Response:
    session = session_of(emu, request, master=True)
    await read_body(request)  # {oldSessionToken, requestType: RENEW}
    emu.registry.renew_token(session)
    session_validity = _seconds(emu.registry.session_token_validity)
    master_validity = _seconds(emu.registry.master_token_validity)
    return respond(
        reply(
            {
                "sessionToken": session.token,
                "validityInSecondsST": session_validity,
                "masterToken": session.master_token,
                "validityInSecondsMT": master_validity,
                # 4.x reads this one (and would keep None without it).
                "masterValidityInSeconds": master_validity,
                "sessionId": session.session_id,
            }
        )
    )


def _seconds(validity: float) -> int:
    """A validity as the login reply states it: whole seconds, at least one."""
    return max(1, round(validity))


async def telemetry(emu: Emulator, request: Request) -> Response:
    await request.body()
    return respond(reply())


def count_faulted_login(emu: Emulator, path: str, headers: Headers, body: bytes) -> None:
    """A login answered by an injected fault failed too: count it for its user."""
    if path != LOGIN_ROUTE:
        return
    user = emu.user
    try:
        if headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        data = json.loads(body)["data"]
        user = str(data.get("LOGIN_NAME") or user)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    emu.registry.failed_logins[user.upper()] += 1


def routes(emu: Emulator) -> list[Route]:
    return [
        Route(LOGIN_ROUTE, bind(emu, login), methods=["POST"]),
        Route("/session", bind(emu, logout), methods=["POST"]),
        Route("/session/heartbeat", bind(emu, heartbeat), methods=["POST"]),
        Route("/session/token-request", bind(emu, token_request), methods=["POST"]),
        Route("/telemetry/send", bind(emu, telemetry), methods=["POST"]),
    ]
