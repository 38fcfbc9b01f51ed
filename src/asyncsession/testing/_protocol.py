"""Snowflake's wire protocol as the emulator speaks it: constants and reply bodies.

Plain data, no HTTP framework, so the launcher (which runs in the client's environment,
maybe without the server's dependencies) shares the constants it needs from here.
"""

from __future__ import annotations

from typing import Any

# The launcher <-> server handshake and admin credential.
READY_PREFIX = "ASYNCSESSION-EMULATOR-READY "
ADMIN_HEADER = "X-Emulator-Admin"
ADMIN_TOKEN_ENV = "ASYNCSESSION_EMULATOR_ADMIN_TOKEN"
ADMIN_ROUTE = "/_emulator"

# How long a synchronous query-request is held before answering 333333 (Snowflake: ~45 s).
SYNC_HOLD_SECONDS = 40.0
# How long GET /queries/{id}/result waits for a running query before answering 333333.
RESULT_HOLD_SECONDS = 10.0

# Reply codes.
ASYNC_CODE = "333334"
STILL_RUNNING_CODE = "333333"
BAD_CREDENTIALS = "390100"
NO_TOKEN = "390103"
NOT_LOGGED_IN = "390104"  # "User must login again": the session does not exist (any more)
SESSION_EXPIRED = "390112"  # the session token expired: renew it with the master token
MASTER_EXPIRED = "390114"  # the master token expired: only a new login helps
QUERY_NOT_FOUND = "000709"

# Token lifetimes Snowflake announces at login (seconds).
SESSION_TOKEN_VALIDITY = 3600.0
MASTER_TOKEN_VALIDITY = 14400.0

STATUS_OK = "Statement executed successfully."


def reply(
    data: Any = None, *, code: str | None = None, message: str | None = None
) -> dict[str, Any]:
    """A successful reply body."""
    return {"data": data, "code": code, "message": message, "success": True}


def error(code: str, message: str) -> dict[str, Any]:
    """A failed reply body (Snowflake answers most errors with HTTP 200 and this)."""
    return {"data": {"errorCode": code}, "code": code, "message": message, "success": False}


def in_progress(query_id: str, code: str) -> dict[str, Any]:
    """The reply for a query that has not ended: 333334 (async) or 333333 (still running)."""
    return reply(
        {
            "queryId": query_id,
            "getResultUrl": f"/queries/{query_id}/result",
            "queryAbortsAfterSecs": 300,
            "progressDesc": None,
        },
        code=code,
        message="Asynchronous execution in progress. Use provided query id to perform "
        "query monitoring and management.",
    )


def text_column(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "database": "",
        "schema": "",
        "table": "",
        "nullable": True,
        "type": "text",
        "byteLength": 16_777_216,
        "length": 16_777_216,
        "scale": None,
        "precision": None,
        "collation": None,
    }


def json_result(column: str, values: list[Any], type_id: int = 0x1000) -> dict[str, Any]:
    """A one-column JSON result, the form Snowflake uses for small system results."""
    return {
        "rowtype": [text_column(column)],
        "rowset": [[None if v is None else str(v)] for v in values],
        "total": len(values),
        "returned": len(values),
        "queryResultFormat": "json",
        "statementTypeId": type_id,
    }
