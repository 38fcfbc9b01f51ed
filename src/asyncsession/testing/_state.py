"""The emulator's server-side state: sessions, queries, and their lifecycle.

Pure bookkeeping with no HTTP and no SQL engine, so it stays readable and testable.
Everything here runs on the server's event loop except ``Query.cancel_requested``, which
worker threads poll (a ``threading.Event``).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import secrets
import threading
import time
import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ._protocol import (
    MASTER_EXPIRED,
    MASTER_TOKEN_VALIDITY,
    NOT_LOGGED_IN,
    SESSION_EXPIRED,
    SESSION_TOKEN_VALIDITY,
)

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
    # Abort requests received for this query (by query id, by request id, SYSTEM$CANCEL_QUERY),
    # counted whether or not the query was still running: a client that aborts twice shows.
    abort_requests: int = 0
    # When its statement's execution returned (its worker, a thread or a task, is free).
    # ``status`` turns ABORTED at once; this says whether the work really stopped.
    worker_end_time: float | None = None

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
            # A worker thread is still executing it in DuckDB (an abort interrupts it).
            "executing": self.interrupt is not None,
            "abort_requests": self.abort_requests,
            "worker_stopped": self.worker_end_time is not None,
            "worker_end_time": self.worker_end_time,
        }


@dataclass
class Transaction:
    """A session's open transaction (BEGIN .. COMMIT/ROLLBACK)."""

    transaction_id: int
    name: str | None
    start_time: float = field(default_factory=time.time)
    # Held by whichever statement uses the session's pinned SQL connection: the
    # transaction's statements run one at a time, in arrival order.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


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
    transaction: Transaction | None = None
    # Token clock (time.monotonic): when the session token was issued, when the session
    # last made an authenticated request; a master token expired once stays expired.
    token_issued: float = field(default_factory=time.monotonic)
    last_active: float = field(default_factory=time.monotonic)
    master_expired: bool = False
    heartbeats: int = 0
    renewals: int = 0

    @property
    def query_tag(self) -> str:
        return str(self.parameters.get("QUERY_TAG", ""))

    @property
    def autocommit(self) -> bool:
        value = self.parameters.get("AUTOCOMMIT", True)
        return value if isinstance(value, bool) else str(value).upper() not in ("FALSE", "0")

    @property
    def statement_timeout(self) -> float:
        return float(self.parameters.get("STATEMENT_TIMEOUT_IN_SECONDS", 0) or 0)

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        txn = self.transaction
        return {
            "session_id": self.session_id,
            "user": self.user,
            "parameters": self.parameters,
            "transaction_id": None if txn is None else txn.transaction_id,
            # Expired by expire_tokens() (issued at -inf): JSON has no infinity.
            "token_age": now - self.token_issued if math.isfinite(self.token_issued) else None,
            "idle": now - self.last_active,
            "master_expired": self.master_expired,
            "heartbeats": self.heartbeats,
            "renewals": self.renewals,
        }


class Refused(Exception):
    """A token the server does not accept, with Snowflake's code for why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Registry:
    """Every session and query the server knows, indexed the ways the routes look them up."""

    HISTORY_LIMIT = 10_000

    def __init__(
        self,
        *,
        session_token_validity: float = SESSION_TOKEN_VALIDITY,
        master_token_validity: float = MASTER_TOKEN_VALIDITY,
    ) -> None:
        self._session_ids = itertools.count(1_000_001)
        self._last_transaction_id = 0
        self.sessions: dict[int, Session] = {}
        self.by_token: dict[str, Session] = {}
        self.by_master_token: dict[str, Session] = {}
        self.queries: OrderedDict[str, Query] = OrderedDict()
        self.by_request_id: dict[tuple[int, str], Query] = {}
        # Aborts that arrived before their query did (the client gave up early).
        self.pre_aborted: dict[tuple[int, str], float] = {}
        self.session_token_validity = session_token_validity
        self.master_token_validity = master_token_validity
        # Per user (upper-cased login name), for tests of pools and keep-alive.
        self.logins: Counter[str] = Counter()
        self.failed_logins: Counter[str] = Counter()
        self.heartbeats: Counter[str] = Counter()
        # Abort requests received per request id (a query may not exist for one yet).
        self.abort_requests_by_request_id: dict[str, int] = {}

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

    def authenticate(self, token: str, *, master: bool = False) -> Session:
        """The session ``token`` (or master token) belongs to, if it is accepted now.

        As Snowflake: a session token older than its validity is refused with 390112 (the
        client renews it with the master token); a session idle for longer than the
        master token's validity is dead, 390114, for every request from then on; an
        unknown token (logged out, deleted, replaced by a renewal) is 390104. Every
        accepted request, heartbeats included, counts as activity.
        """
        session = (self.by_master_token if master else self.by_token).get(token)
        if session is None:
            raise Refused(NOT_LOGGED_IN, "User must login again to access the service.")
        now = time.monotonic()
        if not session.master_expired:
            # A stale session token is answered 390112 first, even when the session has
            # been idle past the master validity: the renewal is what learns it died.
            if not master and now - session.token_issued > self.session_token_validity:
                raise Refused(SESSION_EXPIRED, "Session token expired.")
            session.master_expired = now - session.last_active > self.master_token_validity
        if session.master_expired:
            raise Refused(
                MASTER_EXPIRED, "Master token can never be renewed - authentication required."
            )
        session.last_active = now
        return session

    def renew_token(self, session: Session) -> None:
        """A new session token (the old one stops working at once)."""
        self.by_token.pop(session.token, None)
        session.token = secrets.token_urlsafe(24)
        session.token_issued = time.monotonic()
        session.renewals += 1
        self.by_token[session.token] = session

    def expire_tokens(self) -> int:
        """Expire every session token now (master tokens stay valid, so clients renew)."""
        for session in self.sessions.values():
            session.token_issued = -math.inf
        return len(self.sessions)

    def delete_session(self, session: Session) -> None:
        self.sessions.pop(session.session_id, None)
        self.by_token.pop(session.token, None)
        self.by_master_token.pop(session.master_token, None)

    def new_transaction(self, name: str | None) -> Transaction:
        # Snowflake: "a unique start time (includes milliseconds), which serves as the ID".
        self._last_transaction_id = max(int(time.time() * 1000), self._last_transaction_id + 1)
        return Transaction(transaction_id=self._last_transaction_id, name=name)

    # queries
    def new_query(
        self,
        session: Session,
        sql_text: str,
        request_id: str | None,
        query_tag: str | None = None,
    ) -> Query:
        """A new running query; ``query_tag`` is a per-statement tag (else the session's)."""
        query = Query(
            query_id=str(uuid.uuid4()),
            request_id=request_id,
            session=session,
            sql_text=sql_text,
            query_tag=session.query_tag if query_tag is None else query_tag,
        )
        self.queries[query.query_id] = query
        if request_id:
            self.by_request_id[(session.session_id, request_id)] = query
            if self.pre_aborted.pop((session.session_id, request_id), None) is not None:
                query.abort_requests += 1
                query.abort()
        self._trim()
        return query

    def find_by_request(self, session: Session, request_id: str) -> Query | None:
        return self.by_request_id.get((session.session_id, request_id))

    def abort_by_request(self, session: Session, request_id: str) -> bool:
        counts = self.abort_requests_by_request_id
        counts[request_id] = counts.get(request_id, 0) + 1
        query = self.find_by_request(session, request_id)
        if query is None:
            self.pre_aborted[(session.session_id, request_id)] = time.monotonic()
            return False
        query.abort_requests += 1
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
                self.abort_requests_by_request_id.pop(oldest.request_id, None)
        horizon = time.monotonic() - 300
        for key in [k for k, t in self.pre_aborted.items() if t < horizon]:
            del self.pre_aborted[key]
