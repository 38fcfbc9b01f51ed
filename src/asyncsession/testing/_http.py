"""HTTP plumbing shared by the emulator's routes: request bodies, errors, route wrapping."""

from __future__ import annotations

import gzip
import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ._protocol import error

Handler = Callable[[Request], Awaitable[Response]]
C = TypeVar("C")


class BadRequest(Exception):
    """A request the emulator refuses: answered as Snowflake's error body with ``status``."""

    def __init__(self, message: str, status: int = 400, code: str = "000400") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def respond(body: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status)


async def read_body(request: Request) -> dict[str, Any]:
    """The request's JSON object (maybe gzip-encoded, as the connector sends it)."""
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


def guard(handler: Handler) -> Handler:
    """Answer a ``BadRequest`` raised by ``handler`` as Snowflake's error body."""

    async def route(request: Request) -> Response:
        try:
            return await handler(request)
        except BadRequest as e:
            return respond(error(e.code, str(e)), e.status)

    return route


def bind(context: C, handler: Callable[[C, Request], Awaitable[Response]]) -> Handler:
    """A route handler for ``handler(context, request)``, guarded."""

    async def route(request: Request) -> Response:
        return await handler(context, request)

    return guard(route)
