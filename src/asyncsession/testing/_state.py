"""The emulator's server-side state: sessions, queries, and their lifecycle.

Pure bookkeeping with no HTTP and no SQL engine, so it stays readable and testable.
Everything here runs on the server's event loop except ``Query.cancel_requested``, which
worker threads poll (a ``threading.Event``).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

# Statuses as the monitoring endpoint reports them.
RUNNING = "RUNNING"
SUCCESS = "SUCCESS"
ABORTED = "ABORTED"
FAILED = "FAILED_WITH_ERROR"
STILL_RUNNING = frozenset({RUNNING, "QUEUED", "RESUMING_WAREHOUSE", "BLOCKED", "NO_DATA"})


@dataclass
class QueryError:
    code: int
    message: str
    sqlstate: str

    def as_response(self, query_id: str | None) -> dict[str, Any]:
        code = f"{self.code:06d}"
        return {
            "data": {"errorCode": code, "sqlState": self.sqlstate, "queryId": query_id},
            "code": code,
            "message": self.message,
            "success": False,
        }


CANCELED = QueryError(604, "SQL execution canceled", "57014")


@dataclass
class Query:
    query_id: str
    request_id: str | None
    session: Session
    sql_text: str
    query_tag: str
    start_time: float = field(default_factory=time.time)
    end_time: float | None = None
    status: str = RUNNING
    # Set once the query has ended; ``response`` is then the full JSON reply.
    response: dict[str, Any] | None = None
    error: QueryError | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    # Polled by worker threads (SYSTEM$WAIT inside DuckDB) and awaited by the light path.
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    interrupt: Any = None  # callable that interrupts the DuckDB statement, when one runs

    @property
    def running(self) -> bool:
        return self.status in STILL_RUNNING

    def finish(self, status: str, response: dict[str, Any]) -> None:
        if not self.running:
            return
        self.status = status
        self.response = response
        self.end_time = time.time()
        self.done.set()

    def fail(self, error: QueryError, status: str = FAILED) -> None:
        if self.running:
            self.error = error
            self.finish(status, error.as_response(self.query_id))

    def abort(self, error: QueryError = CANCELED, status: str = ABORTED) -> bool:
        """Stop the query now; its worker notices through ``cancel_requested``."""
        if not self.running:
            return False
        self.cancel_requested.set()
        self.cancelled.set()
        if self.interrupt is not None:
            try:
                self.interrupt()
            except Exception:
                pass
        self.fail(error, status)
        return True

    def describe(self) -> dict[str, Any]:
        return {
            "query_id": self.query_id,
            "request_id": self.request_id,
            "session_id": self.session.session_id,
            "sql_text": self.sql_text,
            "status": self.status,
            "query_tag": self.query_tag,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "error_code": None if self.error is None else f"{self.error.code:06d}",
        }


@dataclass
class Session:
    session_id: int
    user: str
    token: str
    master_token: str
    database: str | None
    schema: str | None
    warehouse: str | None
    role: str | None
    parameters: dict[str, Any] = field(default_factory=dict)
    last_query_ids: list[str] = field(default_factory=list)
    engine: Any = None  # the SQL engine's per-session state (a connection pool)

    @property
    def query_tag(self) -> str:
        return str(self.parameters.get("QUERY_TAG", ""))

    @property
    def statement_timeout(self) -> float:
        return float(self.parameters.get("STATEMENT_TIMEOUT_IN_SECONDS", 0) or 0)


class Registry:
    """Every session and query the server knows, indexed the ways the routes look them up."""

    HISTORY_LIMIT = 10_000

    def __init__(self) -> None:
        self._session_ids = itertools.count(1_000_001)
        self.sessions: dict[int, Session] = {}
        self.by_token: dict[str, Session] = {}
        self.by_master_token: dict[str, Session] = {}
        # Session tokens expired on purpose (``expire_tokens``): answered 390112, not 390104.
        self.expired_tokens: set[str] = set()
        self.queries: OrderedDict[str, Query] = OrderedDict()
        self.by_request_id: dict[tuple[int, str], Query] = {}
        # Aborts that arrived before their query did (the client gave up early).
        self.pre_aborted: dict[tuple[int, str], float] = {}

    # sessions
    def new_session(self, user: str, **where: str | None) -> Session:
        session = Session(
            session_id=next(self._session_ids),
            user=user,
            token=secrets.token_urlsafe(24),
            master_token=secrets.token_urlsafe(24),
            **where,  # type: ignore[arg-type]
        )
        self.sessions[session.session_id] = session
        self.by_token[session.token] = session
        self.by_master_token[session.master_token] = session
        return session

    def renew_token(self, session: Session, old_token: str | None = None) -> None:
        if old_token:
            self.expired_tokens.discard(old_token)
        self.by_token.pop(session.token, None)
        session.token = secrets.token_urlsafe(24)
        self.by_token[session.token] = session

    def expire_tokens(self) -> int:
        """Invalidate every session token (master tokens stay valid, so clients renew)."""
        count = len(self.by_token)
        self.expired_tokens.update(self.by_token)
        self.by_token.clear()
        return count

    def delete_session(self, session: Session) -> None:
        self.sessions.pop(session.session_id, None)
        self.by_token.pop(session.token, None)
        self.by_master_token.pop(session.master_token, None)

    # queries
    def new_query(self, session: Session, sql_text: str, request_id: str | None) -> Query:
        query = Query(
            query_id=str(uuid.uuid4()),
            request_id=request_id,
            session=session,
            sql_text=sql_text,
            query_tag=session.query_tag,
        )
        self.queries[query.query_id] = query
        if request_id:
            self.by_request_id[(session.session_id, request_id)] = query
            if self.pre_aborted.pop((session.session_id, request_id), None) is not None:
                query.abort()
        self._trim()
        return query

    def find_by_request(self, session: Session, request_id: str) -> Query | None:
        return self.by_request_id.get((session.session_id, request_id))

    def abort_by_request(self, session: Session, request_id: str) -> bool:
        query = self.find_by_request(session, request_id)
        if query is None:
            self.pre_aborted[(session.session_id, request_id)] = time.monotonic()
            return False
        return query.abort()

    def running(self, session_id: int | None = None) -> list[Query]:
        return [
            q
            for q in self.queries.values()
            if q.running and (session_id is None or q.session.session_id == session_id)
        ]

    def _trim(self) -> None:
        while len(self.queries) > self.HISTORY_LIMIT:
            _, oldest = next(iter(self.queries.items()))
            if oldest.running:
                break
            self.queries.popitem(last=False)
            if oldest.request_id:
                self.by_request_id.pop((oldest.session.session_id, oldest.request_id), None)
        horizon = time.monotonic() - 300
        for key in [k for k, t in self.pre_aborted.items() if t < horizon]:
            del self.pre_aborted[key]
