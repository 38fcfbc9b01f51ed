"""Injected faults: added latency, failing routes and black holes, applied to every route.

A new kind of fault is a field of ``Faults`` (what is armed), a branch in
``FaultMiddleware`` (what it does to a request) and a key in the admin ``faults`` route.

Every fault that fires is counted, per armed rule, per route, and per query (by the query
id in the path, or the ``requestId`` of a query-request), so a test can show that the
burst it injected really happened. ``clear()`` disarms the rules and resets the counts.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ._protocol import ADMIN_ROUTE
from ._results import CHUNK_ROUTE

QUERY_REQUEST_ROUTE = "/queries/v1/query-request"
# A query id in a path: /queries/{qid}/..., /monitoring/queries//{qid}, chunks/{qid}/{n}.
_QUERY_ID_IN_PATH = re.compile(
    r"(?:/queries/+|" + re.escape(CHUNK_ROUTE) + r"/)([0-9a-fA-F]{8}-[0-9a-fA-F-]{27})"
)


@dataclass
class FaultRule:
    route: str
    status: int | None  # None: black hole
    remaining: int | None  # None: until cleared
    count: int | None = None  # as armed
    fired: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "status": self.status,
            "blackhole": self.status is None,
            "count": self.count,
            "fired": self.fired,
            "remaining": self.remaining,
        }


@dataclass
class Faults:
    latency: float = 0.0
    rules: list[FaultRule] = field(default_factory=list)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    # Every rule armed since the last clear(), used up or not, and what fired where.
    armed: list[FaultRule] = field(default_factory=list)
    fired_by_route: dict[str, int] = field(default_factory=dict)
    fired_by_query_id: dict[str, int] = field(default_factory=dict)
    fired_by_request_id: dict[str, int] = field(default_factory=dict)

    def match(self, path: str, query_string: bytes = b"") -> FaultRule | None:
        for rule in self.rules:
            if path.startswith(rule.route) or rule.route in path:
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self.rules.remove(rule)
                self._count(rule, path, query_string)
                return rule
        return None

    def _count(self, rule: FaultRule, path: str, query_string: bytes) -> None:
        rule.fired += 1
        _bump(self.fired_by_route, rule.route)
        if m := _QUERY_ID_IN_PATH.search(path):
            _bump(self.fired_by_query_id, m[1])
        # A query-request's requestId is its query's (an abort-request's is its own).
        request_ids = parse_qs(query_string.decode("latin-1")).get("requestId")
        if request_ids and path.startswith(QUERY_REQUEST_ROUTE):
            _bump(self.fired_by_request_id, request_ids[0])

    def add(self, route: str, status: int | None, count: int | None) -> None:
        rule = FaultRule(route=route, status=status, remaining=count, count=count)
        self.rules.append(rule)
        self.armed.append(rule)

    def clear(self) -> None:
        self.rules.clear()
        self.armed.clear()
        self.fired_by_route.clear()
        self.fired_by_query_id.clear()
        self.fired_by_request_id.clear()
        self.latency = 0.0
        self.released.set()
        self.released = asyncio.Event()

    def describe(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency * 1000,
            "rules": [rule.describe() for rule in self.armed],
            "fired_by_route": dict(self.fired_by_route),
            "fired_by_query_id": dict(self.fired_by_query_id),
            "fired_by_request_id": dict(self.fired_by_request_id),
        }


def _bump(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


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
        rule = self.faults.match(path, scope.get("query_string", b""))
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
