"""Injected faults: added latency, failing routes and black holes, applied to every route.

A new kind of fault is a field of ``Faults`` (what is armed), a branch in
``FaultMiddleware`` (what it does to a request) and a key in the admin ``faults`` route.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ._engine import CHUNK_ROUTE
from ._protocol import ADMIN_ROUTE


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

    def add(self, route: str, status: int | None, count: int | None) -> None:
        self.rules.append(FaultRule(route=route, status=status, remaining=count))

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

    def __init__(
        self,
        app: ASGIApp,
        faults: Faults,
        on_fault: Callable[[str, Headers, bytes], None] | None = None,
    ) -> None:
        self.app = app
        self.faults = faults
        # Told of every request a fault answered, with its body (e.g. to count logins).
        self.on_fault = on_fault

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if not path or (path.startswith(ADMIN_ROUTE) and not path.startswith(CHUNK_ROUTE)):
            await self.app(scope, receive, send)
            return
        if self.faults.latency:
            await asyncio.sleep(self.faults.latency)
        rule = self.faults.match(path)
        if rule is None:
            await self.app(scope, receive, send)
            return
        if self.on_fault is not None:
            self.on_fault(path, Headers(scope=scope), await _read_body(receive))
        if rule.status is None:
            await self.faults.released.wait()
            status = 503
        else:
            status = rule.status
        body = json.dumps({"success": False, "message": "injected fault"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)
