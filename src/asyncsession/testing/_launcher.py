"""``LocalSnowflake``: start, inspect, fault and stop the emulator process.

The server runs in its own process (its own Python, if need be: fakesnow needs
connector 4.x, while the client under test may be 5.x). It dies with its launcher: it
exits when its standard input closes, and ``atexit`` stops any still running.

Over 450 lines because it is one thing: ``LocalSnowflake``, whose inspection and fault
methods are thin, documented calls of the server's admin API (``_admin``).
"""

from __future__ import annotations

import atexit
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import anyio.to_thread

from ._protocol import (
    ADMIN_HEADER,
    ADMIN_TOKEN_ENV,
    MASTER_TOKEN_VALIDITY,
    READY_PREFIX,
    SESSION_TOKEN_VALIDITY,
)

PYTHON_ENV = "ASYNCSESSION_EMULATOR_PYTHON"

_live: set[LocalSnowflake] = set()
_live_lock = threading.Lock()

T = TypeVar("T")


class EmulatorError(RuntimeError):
    """The emulator could not be started or did not answer."""


class LocalSnowflake:
    """A local Snowflake emulator on 127.0.0.1, for tests, demos and examples.

    ``with LocalSnowflake() as sf:`` (or ``async with``) starts it on a free port;
    ``sf.connection_parameters`` works for ``snowflake.connector.connect(**p)`` and for
    ``Session.builder.configs(p)``.

    Inspection: ``queries()``, ``query(id)``, ``running_queries()``, ``sessions()``,
    ``session(id)``, ``counters()``. Faults and server-side events: ``set_latency()``,
    ``fail_next()``, ``blackhole()``, ``clear_faults()``, ``expire_tokens()``,
    ``set_token_validity()``, ``delete_session()``, ``kill()``, ``restart()``.
    """

    def __init__(
        self,
        *,
        latency_ms: float = 0.0,
        user: str = "test",
        password: str = "test",
        database: str = "TEST_DB",
        schema: str = "PUBLIC",
        warehouse: str = "TEST_WH",
        role: str = "TEST_ROLE",
        port: int = 0,
        python: str | None = None,
        startup_timeout: float = 60.0,
        session_token_validity: float = SESSION_TOKEN_VALIDITY,
        master_token_validity: float = MASTER_TOKEN_VALIDITY,
    ) -> None:
        """``session_token_validity`` / ``master_token_validity``: token lifetimes in seconds
        (Snowflake's 1 h and 4 h by default). A session token older than its validity is
        refused with 390112 (the connector renews it); a session idle for longer than the
        master validity is dead (390114). Small values let a test make a session die of
        idleness in seconds; ``set_token_validity()`` changes them while running."""
        _check_validity("session_token_validity", session_token_validity)
        _check_validity("master_token_validity", master_token_validity)
        self.session_token_validity = session_token_validity
        self.master_token_validity = master_token_validity
        self.latency_ms = latency_ms
        self.user = user
        self.password = password
        self.database = database
        self.schema = schema
        self.warehouse = warehouse
        self.role = role
        self.port = port
        self.python = python or os.environ.get(PYTHON_ENV) or sys.executable
        self.startup_timeout = startup_timeout
        self._admin_token = secrets.token_urlsafe(16)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def __repr__(self) -> str:
        state = f"port={self.port}" if self.is_running else "stopped"
        return f"<LocalSnowflake {state}>"

    # ---- lifecycle ---------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> LocalSnowflake:
        if self.is_running:
            return self
        if self._log is not None:
            self._log.close()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the server
        cmd = [
            self.python,
            "-m",
            "asyncsession.testing._server",
            "--port",
            str(self.port),
            "--user",
            self.user,
            "--password",
            self.password,
            "--latency-ms",
            str(self.latency_ms),
            "--session-token-validity",
            str(self.session_token_validity),
            "--master-token-validity",
            str(self.master_token_validity),
            "--watch-stdin",
        ]
        env = {**os.environ, ADMIN_TOKEN_ENV: self._admin_token}
        env.setdefault("PYTHONUNBUFFERED", "1")
        process = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env
        )
        self._process = process
        with _live_lock:
            _live.add(self)
        try:
            self.port = self._read_port(process)
        except BaseException:
            self.stop()
            raise
        return self

    def _read_port(self, process: subprocess.Popen[bytes]) -> int:
        assert process.stdout is not None
        found: list[int] = []

        def read() -> None:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.decode(errors="replace")
                if line.startswith(READY_PREFIX):
                    found.append(int(json.loads(line[len(READY_PREFIX) :])["port"]))
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(self.startup_timeout)
        if not found:
            hint = (
                f"set {PYTHON_ENV} to a Python whose environment has "
                "'asyncsession[testing]' and snowflake-connector-python 4.x"
            )
            try:
                code: int | None = process.wait(0.5)
            except subprocess.TimeoutExpired:
                code = None
            what = (
                f"exited with code {code}"
                if code is not None
                else (f"did not start within {self.startup_timeout:g} s")
            )
            raise EmulatorError(
                f"the local Snowflake emulator {what} "
                f"(python: {self.python}; {hint}). Its output:\n{self.server_log()[-3000:]}"
            )
        return found[0]

    def server_log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        text: str = self._log.read().decode(errors="replace")
        return text

    def stop(self) -> None:
        process, self._process = self._process, None
        with _live_lock:
            _live.discard(self)
        if process is not None:
            _terminate(process)
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL), as a crash would; ``restart()`` brings it back."""
        if self._process is not None:
            self._process.send_signal(signal.SIGKILL)
            self._process.wait()
            _close_pipes(self._process)

    def restart(self) -> None:
        """Start a fresh server (empty state) on the same port."""
        self.kill()
        self._process = None
        self.start()

    def __enter__(self) -> LocalSnowflake:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> LocalSnowflake:
        return await anyio.to_thread.run_sync(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.stop)

    # ---- connection --------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def connection_parameters(self) -> dict[str, Any]:
        """For ``snowflake.connector.connect(**p)`` and ``Session.builder.configs(p)``."""
        return {
            "account": "local",
            "user": self.user,
            "password": self.password,
            "host": "127.0.0.1",
            "port": self.port,
            "protocol": "http",
            "database": self.database,
            "schema": self.schema,
            "warehouse": self.warehouse,
            "role": self.role,
        }

    def connections_toml(self, name: str = "local") -> str:
        """A ready-to-paste connections.toml section for this emulator."""
        lines = [f"[{name}]"]
        for key, value in self.connection_parameters.items():
            lines.append(f"{key} = {json.dumps(value)}")
        return "\n".join(lines) + "\n"

    # ---- inspection and faults -----------------------------------------------------
    def _admin(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        if not self.is_running:
            raise EmulatorError("the local Snowflake emulator is not running")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={ADMIN_HEADER: self._admin_token, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def queries(self, status: str | None = None) -> list[dict[str, Any]]:
        """Every query the server knows (all sessions), optionally only those with ``status``.

        Each is a dict: ``query_id``, ``request_id``, ``session_id``, ``sql_text``,
        ``status``, ``query_tag``, ``start_time``, ``end_time``, ``error_code``,
        ``abort_requests`` (abort requests received for it), ``worker_stopped`` and
        ``worker_end_time`` (when its statement's execution really returned).
        """
        suffix = "" if status is None else f"?status={status}"
        result: list[dict[str, Any]] = self._admin("GET", "/_emulator/queries" + suffix)["queries"]
        return result

    def running_queries(self) -> list[dict[str, Any]]:
        return self.queries("RUNNING")

    def query(self, query_id: str) -> dict[str, Any]:
        for q in self.queries():
            if q["query_id"] == query_id:
                return q
        raise KeyError(query_id)

    def sessions(self) -> list[dict[str, Any]]:
        """The live sessions: ``session_id``, ``user``, ``parameters``, ``transaction_id``
        (the open transaction, or None), ``idle`` and ``token_age`` (seconds; None once
        ``expire_tokens()`` expired it),
        ``master_expired``, ``heartbeats`` and ``renewals``."""
        result: list[dict[str, Any]] = self._admin("GET", "/_emulator/sessions")["sessions"]
        return result

    def set_latency(self, ms: float) -> None:
        """Add ``ms`` milliseconds to every request (the stand-in for a network round trip)."""
        self._admin("POST", "/_emulator/faults", {"latency_ms": ms})

    def fail_next(self, route: str, status: int = 503, count: int = 1) -> None:
        """Answer the next ``count`` requests whose path contains ``route`` with ``status``."""
        self._admin("POST", "/_emulator/faults", {"route": route, "status": status, "count": count})

    def blackhole(self, route: str) -> None:
        """Accept requests whose path contains ``route`` and never answer (until cleared)."""
        self._admin("POST", "/_emulator/faults", {"route": route, "blackhole": True})

    def clear_faults(self) -> None:
        """Disarm every fault, drop the added latency, and reset the fault counts."""
        self._admin("POST", "/_emulator/faults", {"clear": True})

    def fault_counts(self) -> dict[str, Any]:
        """What was armed since the last ``clear_faults()`` and what fired.

        ``rules``: one entry per armed rule (``route``, ``status``, ``blackhole``, ``count``
        as armed, ``fired``, ``remaining``), used-up ones included; ``fired_by_route``
        (route as armed → faults it injected); ``fired_by_query`` (query id → faults
        injected into requests for that query: by the id in the path, or by the
        query-request's request id); ``fired_by_request_id``.
        """
        result: dict[str, Any] = self._admin("GET", "/_emulator/fault-counts")
        return result

    def abort_requests(self) -> dict[str, dict[str, int]]:
        """Abort requests the server received: ``by_query`` (query id → every abort for it:
        by query id, by request id, ``SYSTEM$CANCEL_QUERY``) and ``by_request_id``
        (request id → ``/queries/v1/abort-request`` posts, the query known or not yet).

        Faults come first: an abort request a fault answered (or black-holed) never
        reached the server and is counted by ``fault_counts()`` instead.
        """
        result: dict[str, dict[str, int]] = self._admin("GET", "/_emulator/abort-counts")
        return result

    def worker_stopped(self, query_id: str) -> bool:
        """Whether the query's statement really stopped: its worker returned (it ended, or an
        abort stopped it). ``status`` says ABORTED as soon as the abort arrives."""
        return bool(self.query(query_id)["worker_stopped"])

    def expire_tokens(self) -> int:
        """Expire every session token; clients must renew with their master token."""
        expired: int = self._admin("POST", "/_emulator/expire-tokens", {})["expired"]
        return expired

    def set_token_validity(
        self, *, session: float | None = None, master: float | None = None
    ) -> dict[str, float]:
        """Change the session / master token validity (seconds) of the running server.

        Applies at once to every session, existing ones included (a session token issued
        more than ``session`` seconds ago is now expired). Returns both values in force.
        """
        if session is not None:
            _check_validity("session", session)
        if master is not None:
            _check_validity("master", master)
        result: dict[str, float] = self._admin(
            "POST", "/_emulator/token-validity", {"session": session, "master": master}
        )
        if session is not None:
            self.session_token_validity = session
        if master is not None:
            self.master_token_validity = master
        return result

    def delete_session(self, session_id: int) -> int:
        """End a session on the server, as if an administrator killed it.

        Its running queries are aborted, its open transaction rolled back, and every later
        request with its tokens is refused with 390104 ("User must login again"), as
        Snowflake answers for a session that no longer exists. Returns how many queries
        were aborted; ``KeyError`` if the server has no such session.
        """
        try:
            aborted: int = self._admin(
                "POST", "/_emulator/delete-session", {"session_id": int(session_id)}
            )["aborted"]
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise KeyError(session_id) from None
            raise
        return aborted

    def counters(self) -> dict[str, dict[str, int]]:
        """Login and heartbeat counts since the server started.

        ``{"logins": {USER: n}, "failed_logins": {USER: n}, "heartbeats": {USER: n},
        "heartbeats_by_session": {"<session id>": n}}``; users are upper-cased. A login
        answered by an injected fault (``fail_next``/``blackhole`` on the login route)
        counts as failed. Sessions that ended are no longer in ``heartbeats_by_session``.
        """
        result: dict[str, dict[str, int]] = self._admin("GET", "/_emulator/counters")
        return result

    def session(self, session_id: int) -> dict[str, Any]:
        """One live session as ``sessions()`` lists it (``transaction_id``, ``idle``,
        ``token_age``, ``master_expired``, ``heartbeats``, ``renewals``, ...)."""
        for s in self.sessions():
            if s["session_id"] == session_id:
                return s
        raise KeyError(session_id)

    def wait_until(
        self,
        predicate: Callable[[LocalSnowflake], T],
        timeout: float = 10.0,
        interval: float = 0.01,
    ) -> T:
        """Poll ``predicate(self)`` until it is truthy; raise TimeoutError at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate(self)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout:g} s")
            time.sleep(interval)


def _check_validity(name: str, seconds: float) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError(f"{name} must be a number of seconds > 0, not {seconds!r}")


def _close_pipes(process: subprocess.Popen[bytes]) -> None:
    for pipe in (process.stdin, process.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        # Closing stdin asks the server to exit; SIGTERM and SIGKILL make sure.
        _close_pipes(process)
        try:
            process.wait(2)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.wait(3)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    _close_pipes(process)


@atexit.register
def _stop_all() -> None:
    with _live_lock:
        live = list(_live)
    for emulator in live:
        emulator.stop()
