"""What differs between connector generations, behind one typed ``Driver`` protocol.

The executor (``_executor``) runs a query either with one round trip (a synchronous
``execute`` in a worker thread, aborted by *request id*, which exists before the query
id does) or submitted with ``asyncExec`` (query id at once, aborted by it):

- 4.x lets the caller choose the request id (``_statement_params={"requestId": …}``) and
  aborts with what ``connection._cancel_query(sql, request_id)`` sends; its retries of a
  failing request are bounded by ``_backoff``.
- 5.x generates the request id in its Rust core and logs it on the calling thread before
  sending the request; we capture that log record (for the one-round-trip path only),
  and post the abort through the core's own HTTP client. A submission its core answers
  with no query id (it drops the server's code) is followed by one probe that asks the
  server whether the session is gone (``Connector5.session_refusal``). Under asyncio,
  ``Connector5.native`` (``_native.NativeCore``) submits, awaits results and asks for
  status through the core's own awaitables instead.

Everything else here is blocking and runs in worker threads (see ``_threads``).

Over 600 lines for one concern, the connector calls behind ``Driver``: the protocol, the
two generations' implementations and the 5.x request-id capture each need the others
to be read (what one generation does differently is the point). The 5.x awaitable calls
are in ``_native`` and 4.x's loop-side requests in ``_loop_rest``/``_http``; the next
piece to move out is the 5.x request-id capture (``_RequestIdCapture``).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import random
import re
import threading
import uuid
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urlencode

import snowflake.connector
from snowflake.connector.errors import DatabaseError, Error, InterfaceError, ProgrammingError

from ._backoff import bounded_backoff_policy
from ._errors import (
    CANCELED_ERRNO,
    SESSION_GONE_ERRNOS,
    is_session_gone,
    is_unanswered_submission,
    is_unreadable_status,
)
from ._native import NativeCore

logger = logging.getLogger("asyncsession")

#: The 4.x cursor's steps ``Connector4.load_result`` takes after its own request.
_RESULT_STEPS = ("_is_inline_chunk_incomplete", "_refetch", "_init_result_and_meta")
#: A query still running (sync) / submitted (async): the connector's ping-pong business.
_IN_PROGRESS_CODES = frozenset({333333, 333334})

#: How long the connector may retry posting one abort before giving up.
ABORT_RETRY_SECONDS = 30

#: Attempts of one failing request before the call raises (5.x's own default for its
#: ``retry_max_attempts``; 4.x has no such bound, so the 4.x driver adds it).
DEFAULT_RETRY_MAX_ATTEMPTS = 6


@functools.cache
def connector_major() -> int:
    """Major version of the installed snowflake-connector-python (the one probe)."""
    return int(importlib.metadata.version("snowflake-connector-python").split(".")[0])


class QueryHandle(Protocol):
    """What a driver needs to know about a query it runs or aborts."""

    sql_text: str
    request_id: str | None
    query_id: str | None
    request_id_known: threading.Event


class ConnectorCursor(Protocol):
    """The connector cursor calls asyncsession makes (both generations have them)."""

    @property
    def sfqid(self) -> str | None: ...
    @property
    def description(self) -> Any: ...
    def execute(self, command: str, params: Any = ..., **kwargs: Any) -> Any: ...
    def execute_async(self, command: str, params: Any = ..., **kwargs: Any) -> Any: ...
    def query_result(self, qid: str) -> Any: ...
    def abort_query(self, qid: str) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchmany(self, size: int = ...) -> list[Any]: ...
    def fetchall(self) -> list[Any]: ...
    def close(self) -> Any: ...


class ConnectorConnection(Protocol):
    """The connector connection calls asyncsession makes (both generations have them)."""

    @property
    def session_id(self) -> Any: ...
    def cursor(self) -> Any: ...
    def get_query_status(self, sf_qid: str) -> Any: ...
    def get_query_status_throw_if_error(self, sf_qid: str) -> Any: ...
    def is_still_running(self, status: Any) -> bool: ...
    def close(self) -> None: ...


class Driver(Protocol):
    """Everything asyncsession asks of a connector generation; blocking, run in workers.

    ``Connector4`` and ``Connector5`` implement it; unit tests of the abort logic replace
    it with a fake (tests/test_abort_logic.py).
    """

    generation: int
    #: The 5.x core's awaitable calls (``_native``), or ``None`` (4.x, or a 5.x release
    #: whose cursor we do not know).
    native: NativeCore | None

    def connect(self, kwargs: dict[str, Any]) -> Any:
        """Log in; return the connection."""

    def prepare(self, handle: QueryHandle) -> None:
        """Called on the event loop before the query's worker starts."""

    def execute(
        self,
        cursor: Any,
        handle: QueryHandle,
        params: Sequence[Any] | None,
        statement_params: dict[str, Any] | None = None,
    ) -> None:
        """Run the query with one round trip; the server holds the reply until it ends."""

    def submit(
        self,
        cursor: Any,
        handle: QueryHandle,
        params: Sequence[Any] | None,
        statement_params: dict[str, Any] | None = None,
    ) -> str:
        """Submit without waiting (``asyncExec``, one short round trip); return the query id."""

    def query_status(self, connection: Any, query_id: str) -> tuple[str, bool]:
        """One status round trip: (status name, still running)."""

    def session_refusal(self, connection: Any, error: Error) -> Error | None:
        """After a submission or status request failed with no server code (5.x): the
        server's refusal of the session if that was the cause (one probe), else ``None``."""

    def fetch_result(self, cursor: Any, query_id: str) -> None:
        """Load an ended query's result into ``cursor`` (one round trip)."""

    def abort(self, connection: Any, handle: QueryHandle) -> None:
        """Ask the server to abort the query (by query id once known, else by request id)."""

    def cancel_session(self, connection: Any) -> None:
        """Abort every query of the connection's session with one request."""

    def logout(self, connection: Any) -> None:
        """Log the session out (after its queries were aborted)."""


class _Common:
    """What both generations do the same way."""

    generation = 0
    native: NativeCore | None = None

    def connect(self, kwargs: dict[str, Any]) -> Any:
        return snowflake.connector.connect(**kwargs)

    def prepare(self, handle: QueryHandle) -> None:
        pass

    def logout(self, connection: Any) -> None:
        connection.close()

    def submit(
        self,
        cursor: Any,
        handle: QueryHandle,
        params: Sequence[Any] | None,
        statement_params: dict[str, Any] | None = None,
    ) -> str:
        cursor.execute_async(handle.sql_text, params, _statement_params=statement_params or None)
        query_id: str = cursor.sfqid
        handle.query_id = query_id
        return query_id

    def query_status(self, connection: Any, query_id: str) -> tuple[str, bool]:
        status = connection.get_query_status(query_id)
        return str(status.name), bool(connection.is_still_running(status))

    def session_refusal(self, connection: Any, error: Error) -> Error | None:
        return None

    def fetch_result(self, cursor: Any, query_id: str) -> None:
        # GET /queries/{qid}/result: one round trip for an ended query, in both generations
        # (get_results_from_sfqid would poll status, and on 4.x run a RESULT_SCAN query).
        cursor.query_result(query_id)

    def abort_query_id(self, connection: Any, query_id: str) -> None:
        # SQL rather than POST /queries/{qid}/abort-request: both generations retry a
        # query-request that fails with a 5xx; 5.x's abort_query() does not.
        cursor = connection.cursor()
        try:
            cursor.execute(f"select system$cancel_query('{_quote(query_id)}')")
        finally:
            cursor.close()

    def cancel_session(self, connection: Any) -> None:
        # Whether SYSTEM$CANCEL_ALL_QUERIES run in the session it cancels also cancels
        # itself is undocumented: a 604 here means it did, after cancelling the others.
        cursor = connection.cursor()
        try:
            cursor.execute(f"select system$cancel_all_queries({int(connection.session_id)})")
        except ProgrammingError as e:
            if e.errno != CANCELED_ERRNO:
                raise
        finally:
            cursor.close()


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "''")


class Connector4(_Common):
    generation = 4

    def connect(self, kwargs: dict[str, Any]) -> Any:
        from snowflake.connector.connection import DEFAULT_BACKOFF_POLICY

        attempts = kwargs.pop("retry_max_attempts", None) or DEFAULT_RETRY_MAX_ATTEMPTS
        policy = kwargs.get("backoff_policy") or DEFAULT_BACKOFF_POLICY
        kwargs["backoff_policy"] = bounded_backoff_policy(policy, attempts)
        try:
            return snowflake.connector.connect(**kwargs)
        finally:
            _forget_platform_detection()

    def logout(self, connection: Any) -> None:
        # 4.x keeps the session logged in while any query it submitted with asyncExec
        # reports RUNNING (and asks the server about every one it ever submitted). Ours
        # were just aborted; a session that aclose() leaves logged in is a leak.
        async_query_ids = getattr(connection, "_async_sfqids", None)
        if isinstance(async_query_ids, dict):
            async_query_ids.clear()
        connection.close()

    def prepare(self, handle: QueryHandle) -> None:
        # Chosen up front, so an abort can be sent whenever the task is cancelled. Not
        # uuid4(): on the event loop, its os.urandom() releases the GIL, and getting it
        # back from busy worker threads can take a switch interval (5 ms) or more.
        handle.request_id = str(uuid.UUID(int=random.getrandbits(128), version=4))
        handle.request_id_known.set()

    def execute(
        self,
        cursor: Any,
        handle: QueryHandle,
        params: Sequence[Any] | None,
        statement_params: dict[str, Any] | None = None,
    ) -> None:
        parameters = {**(statement_params or {}), "requestId": handle.request_id}
        cursor.execute(handle.sql_text, params, _statement_params=parameters)
        handle.query_id = cursor.sfqid

    def submit(
        self,
        cursor: Any,
        handle: QueryHandle,
        params: Sequence[Any] | None,
        statement_params: dict[str, Any] | None = None,
    ) -> str:
        # Our request id here too: the submission can be aborted before its reply.
        parameters = {**(statement_params or {})}
        if handle.request_id is not None:
            parameters["requestId"] = handle.request_id
        return super().submit(cursor, handle, params, parameters)

    def query_status(self, connection: Any, query_id: str) -> tuple[str, bool]:
        # get_query_status() reads a refused request (no "queries" in its reply: the
        # session is gone) as FAILED_WITH_ERROR; the raw reply has the server's code.
        status, reply = connection._get_query_status(query_id)
        refusal = status_refusal(reply)
        if refusal is not None:
            raise refusal
        return str(status.name), bool(connection.is_still_running(status))

    @staticmethod
    def loop_rest() -> bool:
        """Whether status and result replies fetched elsewhere (``_http``, on the event
        loop) can be read as this release's connector reads its own."""
        return _has_result_steps()

    @staticmethod
    def read_status_reply(connection: Any, reply: Any) -> tuple[str, bool] | None:
        """A monitoring reply as ``_get_query_status`` reads it: (status name, still
        running); ``None`` for one the connector's own call must handle (a refusal, whose
        session token it renews or whose error it raises; anything unexpected)."""
        from snowflake.connector.constants import QueryStatus

        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("queries"), list):
            return None
        queries = data["queries"]
        name = queries[0].get("status") if queries and isinstance(queries[0], dict) else "NO_DATA"
        if not isinstance(name, str):
            return None
        try:
            status = QueryStatus[name]
        except KeyError:
            return None  # the connector raises KeyError: its call does so again
        return str(status.name), bool(connection.is_still_running(status))

    @staticmethod
    def reply_needs_connector(reply: Any) -> bool:
        """Whether a result reply is the connector's to handle (a session token to renew,
        a session gone, a query still running, or not the shape it expects)."""
        if not isinstance(reply, dict) or ("data" in reply and not isinstance(reply["data"], dict)):
            return True
        code = _int_or_none(reply.get("code"))
        return code in SESSION_GONE_ERRNOS or code in _IN_PROGRESS_CODES

    @staticmethod
    def load_result(cursor: Any, ret: dict[str, Any]) -> None:
        """In a worker: load ``GET /queries/{qid}/result``'s reply into ``cursor``, as 4.x's
        ``cursor.query_result`` does after its request (the same steps, the same error)."""
        cursor._sfqid = (
            ret["data"]["queryId"] if "data" in ret and "queryId" in ret["data"] else None
        )
        cursor._sqlstate = (
            ret["data"]["sqlState"] if "data" in ret and "sqlState" in ret["data"] else None
        )
        if ret.get("success"):
            data = ret.get("data")
            if cursor._is_inline_chunk_incomplete(data):
                data = cursor._refetch(data)
            cursor._init_result_and_meta(data)
        else:
            err = ret["message"]
            code = ret.get("code", -1)
            if "data" in ret:
                err += ret["data"].get("errorMessage", "")
            errvalue = {
                "msg": err,
                "errno": int(code),
                "sqlstate": cursor._sqlstate,
                "sfqid": cursor._sfqid,
            }
            Error.errorhandler_wrapper(cursor.connection, cursor, ProgrammingError, errvalue)

    def abort(self, connection: Any, handle: QueryHandle) -> None:
        if handle.query_id is not None:
            self.abort_query_id(connection, handle.query_id)
        elif handle.request_id is not None:
            # What connection._cancel_query() sends, but with a bound on the connector's
            # retries (else unbounded): an unreachable server must not keep this thread
            # (and so the process) alive forever.
            url = "/queries/v1/abort-request?" + urlencode({"requestId": str(uuid.uuid4())})
            body = {"sqlText": handle.sql_text, "requestId": handle.request_id}
            connection.rest.request(url, body, timeout=ABORT_RETRY_SECONDS)


@functools.cache
def _has_result_steps() -> bool:
    from snowflake.connector.cursor import SnowflakeCursor

    return all(hasattr(SnowflakeCursor, step) for step in _RESULT_STEPS)


def status_refusal(reply: Any) -> DatabaseError | None:
    """The server's refusal of the session in a 4.x status reply (no "queries" in it)."""
    data = reply.get("data") or {}
    if "queries" in data:
        return None
    code = _int_or_none(reply.get("code"))
    if code not in SESSION_GONE_ERRNOS:
        return None
    return DatabaseError(
        msg=str(reply.get("message") or "session gone"), errno=code, sqlstate=data.get("sqlState")
    )


def _forget_platform_detection() -> None:
    """Empty 4.x's ``detect_platforms`` cache, which grows by one entry per login.

    It is a ``functools.cache`` keyed by a fresh ``SessionManager`` clone per login, so it
    never hits and keeps every login's session manager alive (a leak the soak test found).
    """
    try:
        from snowflake.connector.platform_detection import detect_platforms
    except ImportError:  # pragma: no cover - not in this connector release
        return
    cache_clear = getattr(detect_platforms, "cache_clear", None)
    if cache_clear is not None:
        cache_clear()


_CORE_LOGGER = "snowflake.connector._core"
# A string: ``re`` compiles (and caches) it on first use, not at import.
_SYNC_REQUEST = r"Executing sync query request_id=([0-9a-fA-F-]{36})"


class _RequestIdCapture(logging.Filter):
    """Records the request id the 5.x core logs, per thread, and hides what we made visible.

    The core emits its request-id line only when INFO is enabled on its logger, so we
    enable it, but only while a one-round-trip query waits for that line: each record the
    core delivers to Python runs Python code inside the core's tracing dispatch, and a
    garbage collection started there may run a finalizer that calls the core again, which
    panics (docs/upstream/5x-tracing-panic.md). Forced for good, every INFO record of every
    connection went through that; now one record per one-round-trip query does.
    """

    def __init__(self, core: logging.Logger) -> None:
        super().__init__()
        self.core = core
        self.forced_level: int | None = None  # INFO while we force it
        self.saved_level = logging.NOTSET  # the core logger's own level before that
        self.waiting: dict[int, QueryHandle] = {}
        self.lock = threading.Lock()

    def _intended_level(self) -> int:
        # While the level is the one we forced, the user's is the one it had before.
        if self.forced_level is not None and self.core.level == self.forced_level:
            if self.saved_level != logging.NOTSET:
                return self.saved_level
            parent = self.core.parent
            return parent.getEffectiveLevel() if parent is not None else logging.WARNING
        return self.core.getEffectiveLevel()

    def begin(self, ident: int, handle: QueryHandle) -> None:
        """Thread ``ident`` starts a one-round-trip query: its request id line must show."""
        with self.lock:
            self.waiting[ident] = handle
            if self.forced_level is None and self.core.getEffectiveLevel() > logging.INFO:
                self.saved_level = self.core.level
                self.forced_level = logging.INFO
                self.core.setLevel(logging.INFO)

    def end(self, ident: int) -> None:
        """Thread ``ident`` got its request id, or its query ended without one."""
        with self.lock:
            if self.waiting.pop(ident, None) is None or self.waiting:
                return
            if self.forced_level is not None:
                if self.core.level == self.forced_level:  # else the user set one meanwhile
                    self.core.setLevel(self.saved_level)
                self.forced_level = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and record.thread is not None:
            with self.lock:
                handle = self.waiting.get(record.thread)
            if handle is not None and (m := re.search(_SYNC_REQUEST, record.getMessage())):
                handle.request_id = m[1]
                handle.request_id_known.set()
                self.end(record.thread)
        return record.levelno >= self._intended_level()


class Connector5(_Common):
    generation = 5
    _capture: _RequestIdCapture | None = None
    _install_lock = threading.Lock()

    def __init__(self) -> None:
        from snowflake.connector._internal.api_client.client_api import core_driver

        self._core = core_driver
        self.native = NativeCore.load()
        self._install()

    @classmethod
    def _install(cls) -> None:
        with cls._install_lock:
            if cls._capture is not None:
                return
            core = logging.getLogger(_CORE_LOGGER)
            capture = _RequestIdCapture(core)
            core.addFilter(capture)
            cls._capture = capture

    def logout(self, connection: Any) -> None:
        connection.close()
        # Closed, its __del__ would still call the core (is_closed()) wherever the garbage
        # collector frees it, even inside the core's log callback, where a call into the
        # core panics (docs/upstream/5x-tracing-panic.md). Nothing is left to clean up.
        connection.auto_cleanup = False

    def connect(self, kwargs: dict[str, Any]) -> Any:
        # Without an explicit value 5.x warns on every connect; we always log out on close,
        # after aborting our queries ourselves.
        kwargs.setdefault("enable_server_session_keep_alive_auto_detection", False)
        return snowflake.connector.connect(**kwargs)

    def execute(
        self,
        cursor: Any,
        handle: QueryHandle,
        params: Sequence[Any] | None,
        statement_params: dict[str, Any] | None = None,
    ) -> None:
        capture = self._capture
        assert capture is not None
        ident = threading.get_ident()
        capture.begin(ident, handle)
        try:
            cursor.execute(handle.sql_text, params, _statement_params=statement_params or None)
        finally:
            capture.end(ident)
            handle.request_id_known.set()
        handle.query_id = cursor.sfqid

    def submit(
        self,
        cursor: Any,
        handle: QueryHandle,
        params: Sequence[Any] | None,
        statement_params: dict[str, Any] | None = None,
    ) -> str:
        try:
            return super().submit(cursor, handle, params, statement_params)
        except Error as e:
            refusal = self.session_refusal(cursor.connection, e)
            if refusal is None:
                raise
            raise refusal from e

    def query_status(self, connection: Any, query_id: str) -> tuple[str, bool]:
        try:
            return super().query_status(connection, query_id)
        except Error as e:
            refusal = self.session_refusal(connection, e)
            if refusal is None:
                raise
            raise refusal from e

    def session_refusal(self, connection: Any, error: Error) -> Error | None:
        if not (is_unanswered_submission(error) or is_unreadable_status(error)):
            return None
        # The server's own answer (390104, …) instead of the core's code-less one: the
        # statement never ran, and is_session_gone() judges the probe's error.
        return _session_refusal(connection)

    def abort(self, connection: Any, handle: QueryHandle) -> None:
        if handle.query_id is not None:
            self.abort_query_id(connection, handle.query_id)
            return
        if handle.request_id is None:
            # The core has not logged the request id yet: it will within microseconds of
            # sending, unless the query already ended.
            handle.request_id_known.wait(1.0)
        if handle.request_id is not None:
            body = json.dumps({"sqlText": handle.sql_text, "requestId": handle.request_id})
            self._core.connection_send_http(
                conn_handle=connection.conn_handle,
                method="POST",
                url="/queries/v1/abort-request",
                headers={"Content-Type": "application/json", "Accept": "application/json"},
                body=body.encode(),
            )
        else:
            raise InterfaceError(msg="could not learn the request id of the query to abort")


#: Asked once after 5.x submits with no query id back: a statement with no effect, refused
#: as the submission was if the session is gone (the pool's health check asks the same).
PROBE_SQL = "select 1"


def _session_refusal(connection: Any) -> Error | None:
    """The server's error if it refuses ``connection``'s session as gone, else ``None``.

    One synchronous round trip, whose refusal carries the server's code on both
    generations. Any other outcome (it runs, or fails otherwise) says nothing more.
    """
    cursor = connection.cursor()
    try:
        cursor.execute(PROBE_SQL)
    except Error as e:
        return e if is_session_gone(e) else None
    finally:
        cursor.close()
    return None


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


_driver: Connector4 | Connector5 | None = None


def get_driver() -> Driver:
    global _driver
    if _driver is None:
        _driver = Connector5() if connector_major() >= 5 else Connector4()
    return _driver
