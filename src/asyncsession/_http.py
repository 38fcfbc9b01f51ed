"""A minimal HTTP/1.1 client on the event loop, for 4.x's status requests and result fetches.

On 4.x every request the connector sends holds a thread for its round trip (it uses
``requests``). A submitted query's status requests (``GET /monitoring/queries/{qid}``)
and its result fetch (``GET /queries/{qid}/result``) are plain GETs with the session
token, so ``LoopHttp`` sends them itself, over anyio streams (asyncio and trio), on a few
keep-alive connections per session: waiting for them holds no thread.

It sends only what it can send as the connector would (``rest_request``); anything else
is ``Unavailable`` and the caller makes the connector's own call instead, in a thread,
as before: a proxy (connection parameters, or the environment as ``requests`` reads it),
TLS checks it cannot make (OCSP, CRL, ``insecure_mode``), an external-session token, a
closed connection; then a reply other than 200, a connection error or a timeout. A reply
whose code is the connector's business (a session token to renew, a session gone) is
the caller's to hand to the connector (``_executor``, ``_driver``).

A request cancelled on the loop discards its connection: a connection goes back to the
pool only after a complete response that allows keep-alive, never half-read.

Over 500 lines for one concern, an HTTP/1.1 client: the request building that mirrors
the connector (headers, fallbacks) and the response reading (Content-Length, chunked,
close-delimited, gzip) are the two halves of the same wire contract, tested together
(``tests/test_http.py``); when it grows, the response parser is the piece to move out.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import random
import re
import ssl
import sys
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import anyio
import anyio.abc

#: Keep-alive connections per session at most (requests beyond wait for one).
DEFAULT_CONNECTIONS = 16
#: Bound of one request when the connection sets no socket timeout (the connector's
#: own per-attempt default, ``DEFAULT_SOCKET_CONNECT_TIMEOUT``).
DEFAULT_TIMEOUT = 60.0
#: A connection idle for longer is closed rather than reused (servers drop idle ones).
IDLE_SECONDS = 30.0

_MAX_HEAD = 64 * 1024
_RECEIVE = 64 * 1024

JSON = "application/json"
#: What 4.x accepts for requests of its "sfsql" client (``cursor.query_result``).
SNOWFLAKE_JSON = "application/snowflake"


class Unavailable(Exception):
    """This request cannot be made, or was not answered plainly, on the loop: the caller
    makes the connector's own call instead."""


@dataclass(frozen=True)
class Target:
    """Where a connection's requests go: ``connection.rest``'s server URL."""

    scheme: str
    host: str
    port: int

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


@dataclass
class Reply:
    """A complete response: status, headers (lower-case names), body as sent."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body decoded (``Content-Encoding`` undone) and parsed; ``Unavailable`` if it
        cannot be. For a large body, call it in a worker thread."""
        encoding = self.headers.get("content-encoding", "").strip().lower()
        try:
            if encoding == "gzip":
                raw = gzip.decompress(self.body)
            elif encoding == "deflate":
                raw = zlib.decompress(self.body)
            elif encoding in ("", "identity"):
                raw = self.body
            else:
                raise Unavailable(f"unsupported Content-Encoding {encoding!r}")
            return json.loads(raw)
        except (OSError, EOFError, zlib.error, ValueError) as e:
            raise Unavailable(f"unreadable reply body: {e}") from e


class _Stale(Unavailable):
    """A reused connection failed before any byte of the response came: the server had
    closed it while idle (the request is sent again on a new connection)."""


#: What failing I/O raises on either backend (anyio wraps TLS errors as broken streams).
_IO_ERRORS = (
    OSError,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    anyio.EndOfStream,
    ssl.SSLError,
)


@dataclass(eq=False)
class _Connection:
    stream: anyio.abc.ByteStream
    target: Target
    buffer: bytearray = field(default_factory=bytearray)
    idle_since: float = 0.0
    received: bool = False

    async def _fill(self) -> None:
        chunk = await self.stream.receive(_RECEIVE)  # EndOfStream at EOF
        self.received = True
        self.buffer += chunk

    async def _until(self, delimiter: bytes, limit: int) -> bytes:
        start = 0
        while (end := self.buffer.find(delimiter, start)) < 0:
            if len(self.buffer) > limit:
                raise Unavailable("response head too long")
            start = max(0, len(self.buffer) - len(delimiter) + 1)
            await self._fill()
        line = bytes(self.buffer[:end])
        del self.buffer[: end + len(delimiter)]
        return line

    async def _exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            await self._fill()
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    async def _to_eof(self) -> bytes:
        while True:
            try:
                await self._fill()
            except anyio.EndOfStream:
                break
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def exchange(self, request: bytes) -> tuple[Reply, bool]:
        """Send ``request``, read the whole response: (reply, whether to keep the connection)."""
        self.received = False
        if self.buffer:  # bytes nobody asked for: the connection is not what we think
            raise Unavailable("unexpected bytes on an idle connection")
        await self.stream.send(request)
        while True:
            version, status, headers = _parse_head(await self._until(b"\r\n\r\n", _MAX_HEAD))
            if not 100 <= status < 200:
                break  # an interim response (100 Continue, ...) is followed by the real one
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep = "keep-alive" in tokens if version == "HTTP/1.0" else "close" not in tokens
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._chunked()
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise Unavailable("bad Content-Length") from None
            if length < 0:
                raise Unavailable("bad Content-Length")
            body = await self._exactly(length)
        elif status in (204, 304):
            body = b""
        else:
            body, keep = await self._to_eof(), False
        return Reply(status, headers, body), keep

    async def _chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            line = await self._until(b"\r\n", 1024)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise Unavailable("bad chunk size") from None
            if size < 0:
                raise Unavailable("bad chunk size")
            if size == 0:
                while await self._until(b"\r\n", _MAX_HEAD):  # trailers, then an empty line
                    pass
                return b"".join(parts)
            parts.append(await self._exactly(size))
            if await self._exactly(2) != b"\r\n":
                raise Unavailable("chunk not followed by CRLF")


def _parse_head(head: bytes) -> tuple[str, int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise Unavailable(f"bad status line {lines[0][:100]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise Unavailable("bad header line")
        key = name.strip().lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return parts[0], int(parts[1]), headers


async def _discard(connection: _Connection) -> None:
    # Forcefully: it may be half-read, and this runs in cancelled scopes too.
    await anyio.aclose_forcefully(connection.stream)


class LoopHttp:
    """A session's keep-alive connections, opened lazily on the loop, closed with it.

    For tests and benchmarks: ``opened`` counts connections opened, ``answered``
    requests answered with a 200, ``unavailable`` those that were not (made again by
    the connector), ``handed_back`` replies the caller gave the connector to handle.
    """

    def __init__(self, *, connections: int = DEFAULT_CONNECTIONS) -> None:
        self._limit = connections
        self._slots: anyio.Semaphore | None = None
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        #: Idle too long or for another target: closed at the next checkpoint.
        self._stale: list[_Connection] = []
        self.closed = False
        self.opened = 0
        self.answered = 0
        self.unavailable = 0
        self.handed_back = 0

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def open_connections(self) -> int:
        return len(self._idle) + len(self._busy)

    async def get(
        self, target: Target, path: str, headers: list[tuple[str, str]], seconds: float
    ) -> Reply:
        """One GET, bounded by ``seconds``; a 200 ``Reply`` or ``Unavailable`` (closed,
        failed, timed out, not 200)."""
        try:
            reply = await self._get(target, path, headers, seconds)
        except Unavailable:
            self.unavailable += 1
            raise
        self.answered += 1
        return reply

    async def _get(
        self, target: Target, path: str, headers: list[tuple[str, str]], seconds: float
    ) -> Reply:
        if self.closed:
            raise Unavailable("closed")
        lines = [f"GET {path} HTTP/1.1", f"Host: {target.authority}"]
        lines += [f"{name}: {value}" for name, value in headers]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if self._slots is None:
            self._slots = anyio.Semaphore(self._limit)
        with anyio.move_on_after(seconds):
            async with self._slots:
                try:
                    return await self._exchange(target, request)
                except _IO_ERRORS as e:
                    raise Unavailable(f"{type(e).__name__}: {e}") from e
        raise Unavailable(f"no reply within {seconds:g} s")

    async def _exchange(self, target: Target, request: bytes) -> Reply:
        while self._stale:
            await _discard(self._stale.pop())
        while True:
            connection = self._take(target)
            reused = connection is not None
            if connection is None:
                connection = await self._open(target)
            self._busy.add(connection)
            keep = False
            try:
                try:
                    reply, keep = await connection.exchange(request)
                except _IO_ERRORS as e:
                    if reused and not connection.received:
                        raise _Stale(str(e)) from e
                    raise
            except _Stale:
                continue  # (discarded below) once more, on a new connection
            finally:
                self._busy.discard(connection)
                if keep and not self.closed:
                    connection.idle_since = anyio.current_time()
                    self._idle.append(connection)
                else:
                    await _discard(connection)
            if reply.status != 200:
                raise Unavailable(f"HTTP {reply.status}")
            return reply

    def _take(self, target: Target) -> _Connection | None:
        now = anyio.current_time()
        while self._idle:
            connection = self._idle.pop()  # the most recently used: the likeliest alive
            if connection.target == target and now - connection.idle_since < IDLE_SECONDS:
                return connection
            self._stale.append(connection)  # closed before the next connection opens
        return None

    async def _open(self, target: Target) -> _Connection:
        if target.scheme == "https":
            context = await _tls_context()
            stream: anyio.abc.ByteStream = await anyio.connect_tcp(
                target.host,
                target.port,
                tls=True,
                ssl_context=context,
                tls_standard_compatible=False,
            )
        else:
            stream = await anyio.connect_tcp(target.host, target.port)
        self.opened += 1
        return _Connection(stream, target)

    async def aclose(self) -> None:
        """Close every connection (idle or in use: a request in flight then fails)."""
        self.closed = True
        connections = [*self._idle, *self._busy, *self._stale]
        self._idle.clear()
        self._busy.clear()
        self._stale.clear()
        for connection in connections:
            await _discard(connection)


# ---- TLS --------------------------------------------------------------------------------
_context: ssl.SSLContext | None = None
_context_key: tuple[str | None, Any] | None = None


def _ca_file() -> str | None:
    """The CA bundle ``requests`` verifies with: its environment variables, else certifi's."""
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        return bundle
    try:
        import certifi
    except ImportError:  # pragma: no cover - the connector depends on certifi
        return None
    return str(certifi.where())


async def _tls_context() -> ssl.SSLContext:
    """A verifying context with the connector's TLS floor; built in a thread once (loading
    a CA bundle takes tens of milliseconds)."""
    global _context, _context_key
    ca_file = _ca_file()
    key = (ca_file, os.environ.get("SNOWFLAKE_MIN_TLS_VERSION"))
    if _context is None or _context_key != key:
        from ._threads import run_blocking

        _context = await run_blocking(lambda: _build_context(ca_file), anyio.CapacityLimiter(1))
        _context_key = key
    return _context


def _build_context(ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    # As the connector's own contexts: a chain may end at any certificate the bundle trusts.
    context.verify_flags |= getattr(ssl, "VERIFY_X509_PARTIAL_CHAIN", 0)
    try:
        from snowflake.connector.ssl_wrap_socket import _raise_version_floor
    except ImportError:  # pragma: no cover - a release without the floor
        pass
    else:
        _raise_version_floor(context)
    return context


# ---- what 4.x's SnowflakeRestful would send ---------------------------------------------
def rest_request(
    connection: Any, path: str, *, accept: str
) -> tuple[Target, str, list[tuple[str, str]], float]:
    """Target, path with query, headers and timeout of the GET 4.x's ``rest.request(path,
    method="get")`` sends for ``connection``; ``Unavailable`` if it would not be sent as
    plainly (see the module docstring)."""
    rest = getattr(connection, "rest", None)
    if rest is None:
        raise Unavailable("the connection is closed")
    token = rest.token
    if token is None or getattr(rest, "external_session_id", None) is not None:
        raise Unavailable("no plain session token")
    target = _target(rest)
    if target is None:
        raise Unavailable("unknown server URL")
    url = f"{target.scheme}://{target.authority}{path}"
    if getattr(connection, "proxy_host", None) is not None or _environment_proxy(url):
        raise Unavailable("a proxy is configured")
    if getattr(connection, "_insecure_mode", False):
        raise Unavailable("insecure_mode")
    if target.scheme == "https" and not _plain_tls():
        raise Unavailable("OCSP or CRL checks are on")
    if _is_snowflake_host(target.host):
        guid = str(uuid.UUID(int=random.getrandbits(128), version=4))
        path += ("&" if "?" in path else "?") + "request_guid=" + guid
    headers = [*_fixed_headers(accept), ("Authorization", f'Snowflake Token="{token}"')]
    service = getattr(connection, "service_name", None)
    if service:
        headers.append(("X-Snowflake-Service", str(service)))
    headers += _trace_headers()
    if any("\r" in v or "\n" in v for _, v in headers):
        raise Unavailable("a header value with a line break")
    return target, path, headers, _timeout(connection)


def quoted(query_id: str) -> str:
    return quote(query_id)


def _target(rest: Any) -> Target | None:
    scheme = getattr(rest, "_protocol", None)
    host = getattr(rest, "_host", None)
    port = getattr(rest, "_port", None)
    if scheme not in ("http", "https") or not isinstance(host, str) or not host or port is None:
        return None
    try:
        return Target(scheme, host, int(port))
    except (TypeError, ValueError):
        return None


def _timeout(connection: Any) -> float:
    socket_timeout = getattr(connection, "socket_timeout", None)
    network_timeout = getattr(connection, "network_timeout", None)
    timeout = float(socket_timeout) if socket_timeout else DEFAULT_TIMEOUT
    return min(timeout, float(network_timeout)) if network_timeout else timeout


@functools.cache
def _fixed(accept: str) -> tuple[tuple[str, str], ...]:
    from snowflake.connector.network import PYTHON_CONNECTOR_USER_AGENT

    return (
        ("User-Agent", PYTHON_CONNECTOR_USER_AGENT),
        ("Accept-Encoding", "gzip, deflate"),
        ("Accept", accept),
        ("Connection", "keep-alive"),
        ("Content-Type", JSON),
    )


def _fixed_headers(accept: str) -> list[tuple[str, str]]:
    return list(_fixed(accept))


def _environment_proxy(url: str) -> bool:
    """Whether ``requests`` (the connector's vendored copy) would send ``url`` through a
    proxy from the environment (``HTTP(S)_PROXY``, ``ALL_PROXY``, ``NO_PROXY``, any case).

    Asked again whenever those variables change (what it reads of the URL is its scheme,
    host and port): ~20 us a request instead of ~100 us.
    """
    settings = tuple(
        (k, v) for k, v in os.environ.items() if k[-6:].lower() == "_proxy" or k == "REQUEST_METHOD"
    )
    authority, scheme = url.split("/", 3)[2], url.split(":", 1)[0]
    if sys.platform in ("darwin", "win32"):  # the system's settings count too: ask each time
        return _proxied.__wrapped__(authority, scheme, settings)
    return bool(settings) and _proxied(authority, scheme, settings)


@functools.lru_cache(maxsize=64)
def _proxied(authority: str, scheme: str, settings: tuple[tuple[str, str], ...]) -> bool:
    try:
        from snowflake.connector.vendored.requests.utils import (
            get_environ_proxies,
            select_proxy,
        )
    except ImportError:  # pragma: no cover - a release without the vendored copy
        return True
    url = f"{scheme}://{authority}/"
    return bool(select_proxy(url, get_environ_proxies(url)))  # type: ignore[no-untyped-call]


def _plain_tls() -> bool:
    """Whether the connector makes no OCSP or CRL checks (its process-wide settings)."""
    try:
        from snowflake.connector import ssl_wrap_socket
        from snowflake.connector.constants import OCSPMode
    except ImportError:  # pragma: no cover
        return False
    if getattr(ssl_wrap_socket, "FEATURE_OCSP_MODE", None) != OCSPMode.DISABLE_OCSP_CHECKS:
        return False
    crl = getattr(ssl_wrap_socket, "FEATURE_CRL_CONFIG", None)
    mode = getattr(getattr(crl, "cert_revocation_check_mode", None), "name", None)
    return mode == "DISABLED"


@functools.cache
def _host_pattern() -> str:
    try:
        from snowflake.connector.constants import _SNOWFLAKE_HOST_SUFFIX_REGEX
    except ImportError:  # pragma: no cover
        return r"snowflakecomputing(\.[a-zA-Z]{1,63}){1,2}$"
    return str(_SNOWFLAKE_HOST_SUFFIX_REGEX)


def _is_snowflake_host(host: str) -> bool:
    return re.search(_host_pattern(), host) is not None


@functools.cache
def _propagator() -> Any:
    try:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except Exception:
        return None
    return TraceContextTextMapPropagator()


def _trace_headers() -> list[tuple[str, str]]:
    """The W3C trace headers 4.x injects when OpenTelemetry is installed and tracing."""
    propagator = _propagator()
    if propagator is None:
        return []
    carrier: dict[str, str] = {}
    try:
        propagator.inject(carrier)
    except Exception:
        return []
    return list(carrier.items())
