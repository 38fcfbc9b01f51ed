"""``_http``: 4.x's status requests and result fetches on the event loop, both backends.

Against the emulator through the real 4.x connector (which makes every other request,
and the requests ``LoopHttp`` hands back), and, for the wire format the emulator does
not use (chunked, gzip, interim responses, a closed idle connection), against a scripted
HTTP server in the test.
"""

from __future__ import annotations

import contextlib
import gc
import gzip
import socket
import threading
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import anyio.abc
import pytest

from asyncsession import AsyncSession, QueryCancelledError
from asyncsession._http import LoopHttp, Target, Unavailable
from asyncsession._session import core_of
from asyncsession.testing import LocalSnowflake
from tests.helpers import CONNECTOR_MAJOR, both_backends, session_for, until

pytestmark = [pytest.mark.anyio, both_backends]

four_only = pytest.mark.skipif(CONNECTOR_MAJOR >= 5, reason="the loop path is 4.x's")

SHORT = "select system$wait(50, 'MILLISECONDS')"


def loop_http(session: AsyncSession) -> LoopHttp:
    http = core_of(session).runner.http
    assert http is not None, "no request went on the loop"
    return http


async def submitted(sf: LocalSnowflake, **options: Any) -> AsyncSession:
    """A session whose queries are all submitted (status requests and result fetches)."""
    session = await session_for(sf, **options)
    core_of(session).runner.sync_slots = 0
    return session


# ---- against the emulator ---------------------------------------------------------------
@four_only
async def test_submitted_queries_reuse_a_few_keep_alive_connections(
    local_snowflake: LocalSnowflake,
) -> None:
    async with await submitted(local_snowflake) as session:
        for i in range(5):
            rows = await session.sql(f"select {i} as n").collect()
            assert rows[0][0] == i
        http = loop_http(session)
        assert http.opened == 1  # one after another: one connection, kept alive
        first = http.answered
        assert first >= 10  # a status request and a result fetch per query at least
        results = await session.collect_many([SHORT] * 40)
        assert all(rows[0][0] == "waited 50 milliseconds" for rows in results)
        assert http.opened <= 16
        assert http.answered > first
        assert http.unavailable == http.handed_back == 0
        assert core_of(session).runner.poller.requests > 0
    assert http.closed
    assert http.open_connections == 0


@four_only
async def test_the_switch_keeps_everything_on_the_connectors_calls(
    local_snowflake: LocalSnowflake,
) -> None:
    async with await submitted(local_snowflake) as session:
        core_of(session).runner.loop_http = False
        assert (await session.sql("select 7").collect())[0][0] == 7
        assert core_of(session).runner.http is None


@four_only
async def test_an_expired_token_is_renewed_by_the_connectors_own_call(
    emulator: LocalSnowflake,
) -> None:
    # A server of its own: expire_tokens() expires every session's token.
    sf = emulator
    async with await submitted(sf) as session:
        assert (await session.sql("select 1").collect())[0][0] == 1
        http = loop_http(session)
        # A status request: the query runs when the token expires.
        job = await session.sql("select system$wait(600, 'MILLISECONDS')").collect_nowait()
        await until(lambda: any(q["query_id"] == job.query_id for q in sf.running_queries()))
        renewals = sf.session(session.session_id)["renewals"]
        sf.expire_tokens()
        assert (await job.result())[0][0] == "waited 600 milliseconds"
        assert http.handed_back >= 1
        assert sf.session(session.session_id)["renewals"] > renewals
        # A result fetch: the query has ended when the token expires.
        handed_back, renewals = http.handed_back, sf.session(session.session_id)["renewals"]
        sf.expire_tokens()
        runner = core_of(session).runner
        rows = await runner.fetch(job.query_id, lambda cursor: cursor.fetchall())
        assert rows == [("waited 600 milliseconds",)]
        assert http.handed_back == handed_back + 1
        assert sf.session(session.session_id)["renewals"] > renewals
        # And on the loop again with the new token.
        answered = http.answered
        assert (await session.sql("select 2").collect())[0][0] == 2
        assert http.answered > answered


@four_only
async def test_an_error_reply_is_raised_as_the_connector_raises_it(
    local_snowflake: LocalSnowflake,
) -> None:
    from snowflake.connector.errors import ProgrammingError

    async with await submitted(local_snowflake) as session:
        with pytest.raises(ProgrammingError) as caught:
            await session.sql("select * from no_such_table").collect()
        assert caught.value.sfqid is not None
        assert loop_http(session).answered >= 2


@four_only
async def test_a_failed_request_is_made_again_by_the_connector(
    shared_emulator: LocalSnowflake,
) -> None:
    sf = shared_emulator
    async with await submitted(sf) as session:
        assert (await session.sql("select 1").collect())[0][0] == 1
        http = loop_http(session)
        sf.fail_next("/monitoring/queries", status=503, count=1)
        sf.fail_next("/result", status=503, count=1)
        assert (await session.sql("select 3").collect())[0][0] == 3
        assert http.unavailable >= 2  # answered 503 here; the connector retried


class _Proxy:
    """A forward HTTP proxy for plain-HTTP requests, one request per connection: what
    ``requests`` sends through ``HTTP_PROXY``. Counts the paths it forwarded."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.paths: list[str] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = client.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
            path = "/" + target.split("://", 1)[1].split("/", 1)[1]
            self.paths.append(path)
            headers = [h for h in lines[1:] if not h.lower().startswith(("connection:", "proxy-"))]
            length = next(
                (int(h.split(":")[1]) for h in headers if h.lower().startswith("content-length")),
                0,
            )
            while len(body) < length:
                body += client.recv(65536)
            forwarded = "\r\n".join([f"{method} {path} {version}", *headers, "Connection: close"])
            with socket.create_connection(("127.0.0.1", self.upstream)) as upstream:
                upstream.sendall(forwarded.encode("latin-1") + b"\r\n\r\n" + body)
                while chunk := upstream.recv(65536):
                    client.sendall(chunk)

    def close(self) -> None:
        self._server.close()
        self._accepting.join(5)
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def proxy(local_snowflake: LocalSnowflake) -> Iterator[_Proxy]:
    proxy = _Proxy(local_snowflake.port)
    yield proxy
    proxy.close()


@four_only
async def test_a_proxy_from_the_environment_leaves_every_request_to_the_connector(
    local_snowflake: LocalSnowflake, proxy: _Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
    async with await submitted(local_snowflake) as session:
        assert (await session.sql("select 4").collect())[0][0] == 4
        http = core_of(session).runner.http
        assert http is not None
        assert http.opened == http.answered == 0
    assert any(p.startswith("/monitoring/queries/") for p in proxy.paths)
    assert any(p.endswith("/result") for p in proxy.paths)


@four_only
async def test_a_proxy_parameter_leaves_every_request_to_the_connector(
    local_snowflake: LocalSnowflake, proxy: _Proxy
) -> None:
    options = {"proxy_host": "127.0.0.1", "proxy_port": str(proxy.port)}
    async with await submitted(local_snowflake, **options) as session:
        assert (await session.sql("select 5").collect())[0][0] == 5
        http = core_of(session).runner.http
        assert http is not None
        assert http.opened == http.answered == 0
    assert any(p.endswith("/result") for p in proxy.paths)


@four_only
async def test_a_status_request_cancelled_mid_flight_discards_its_connection(
    shared_emulator: LocalSnowflake,
) -> None:
    sf = shared_emulator
    async with await submitted(sf) as session:
        assert (await session.sql("select 1").collect())[0][0] == 1
        http = loop_http(session)
        assert http.idle == 1
        sf.blackhole("/monitoring/queries")  # the request is read, never answered
        with anyio.move_on_after(0.5) as scope:
            await session.sql("select system$wait(30)").collect()
        assert scope.cancelled_caught
        # The unanswered request's connection was closed, not put back to be read later.
        assert http.open_connections == http.idle
        sf.clear_faults()
        assert (await session.sql("select 6").collect())[0][0] == 6
        assert http.unavailable == 0


@four_only
async def test_cancel_all_wakes_a_waiter_whose_status_request_is_out(
    shared_emulator: LocalSnowflake,
) -> None:
    sf = shared_emulator
    async with await submitted(sf) as session:
        assert (await session.sql("select 1").collect())[0][0] == 1
        http = loop_http(session)
        sf.blackhole("/monitoring/queries")
        outcome: list[BaseException] = []

        async def waiter() -> None:
            try:
                await session.sql("select system$wait(30)").collect()
            except QueryCancelledError as e:
                outcome.append(e)

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            await until(lambda: len(session.running_queries.query_ids) == 1)
            await until(lambda: http.open_connections > http.idle)  # its status request
            with anyio.fail_after(10):
                await session.cancel_all()
        assert len(outcome) == 1
        assert http.open_connections == http.idle
        sf.clear_faults()
        assert (await session.sql("select 8").collect())[0][0] == 8


@four_only
async def test_closing_the_session_closes_its_connections(local_snowflake: LocalSnowflake) -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        session = await submitted(local_snowflake)
        await session.collect_many([SHORT] * 20)
        http = loop_http(session)
        assert http.open_connections >= 1
        await session.aclose()
        assert http.closed
        assert http.open_connections == 0
        gc.collect()
    assert not [w for w in seen if issubclass(w.category, ResourceWarning)]
    # Closed: what comes after (a job's fetch) is the connector's, never a new connection.
    with pytest.raises(Unavailable):
        await http.get(Target("http", "127.0.0.1", local_snowflake.port), "/", [], 5)


# ---- against a scripted server ----------------------------------------------------------
Script = Callable[[anyio.abc.SocketStream, bytes], Awaitable[bool]]


async def _serve(script: Script, requests: list[bytes], stream: anyio.abc.SocketStream) -> None:
    async with stream:
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                try:
                    data += await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    return
            head, _, data = data.partition(b"\r\n\r\n")
            requests.append(head)
            if not await script(stream, head):
                return


class _Server:
    def __init__(self, port: int, requests: list[bytes]) -> None:
        self.target = Target("http", "127.0.0.1", port)
        self.requests = requests


@contextlib.asynccontextmanager
async def _scripted(script: Script) -> AsyncIterator[_Server]:
    """A server answering each request with ``script`` (False: close the connection)."""
    requests: list[bytes] = []

    async def handle(stream: anyio.abc.SocketStream) -> None:
        await _serve(script, requests, stream)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle, tg)
        yield _Server(listener.extra(anyio.abc.SocketAttribute.local_port), requests)
        tg.cancel_scope.cancel()


def _response(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = "\r\n".join([f"HTTP/1.1 {status}", *headers])
    return head.encode() + b"\r\n\r\n" + body


async def test_content_length_chunked_and_gzip_bodies_on_one_connection() -> None:
    zipped = gzip.compress(b'{"a": 3}')
    bodies = iter(
        [
            _response(b'{"a": 1}', "Content-Length: 8"),
            _response(
                b'5;ext=1\r\n{"a":\r\n3\r\n 2}\r\n0\r\nX-Trailer: t\r\n\r\n',
                "Transfer-Encoding: chunked",
            ),
            _response(zipped, "Content-Encoding: gzip", f"Content-Length: {len(zipped)}"),
            _response(b"", status="100 Continue") + _response(b'{"a": 4}', "Content-Length: 8"),
        ]
    )

    async def script(stream: anyio.abc.SocketStream, head: bytes) -> bool:
        await stream.send(next(bodies))
        return True

    http = LoopHttp()
    async with _scripted(script) as server:
        headers = [("Authorization", 'Snowflake Token="t"')]
        for expected in (1, 2, 3, 4):
            reply = await http.get(server.target, "/x?y=1", headers, 5)
            assert reply.json() == {"a": expected}
        assert http.opened == 1
        assert http.answered == 4
        assert server.requests[0].startswith(b"GET /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:")
        assert b'Authorization: Snowflake Token="t"' in server.requests[0]
        await http.aclose()


async def test_connection_close_and_a_body_to_eof_are_not_reused() -> None:
    replies = iter(
        [
            (_response(b'{"a": 1}', "Content-Length: 8", "Connection: close"), False),
            (_response(b'{"a": 2}'), False),  # no length: the body ends with the connection
            (_response(b'{"a": 3}', "Content-Length: 8"), True),
        ]
    )

    async def script(stream: anyio.abc.SocketStream, head: bytes) -> bool:
        reply, keep = next(replies)
        await stream.send(reply)
        return keep

    http = LoopHttp()
    async with _scripted(script) as server:
        for expected in (1, 2, 3):
            assert (await http.get(server.target, "/", [], 5)).json() == {"a": expected}
        assert http.opened == 3
        assert http.idle == 1
        await http.aclose()


async def test_an_idle_connection_the_server_closed_is_replaced_once() -> None:
    async def script(stream: anyio.abc.SocketStream, head: bytes) -> bool:
        await stream.send(_response(b"{}", "Content-Length: 2"))
        return False  # closes after each answer, without saying so

    http = LoopHttp()
    async with _scripted(script) as server:
        for _ in range(3):
            assert (await http.get(server.target, "/", [], 5)).json() == {}
        assert http.opened == 3
        assert http.unavailable == 0
        await http.aclose()


async def test_not_200_a_timeout_and_a_refused_connection_are_unavailable() -> None:
    async def script(stream: anyio.abc.SocketStream, head: bytes) -> bool:
        if b"/slow" in head:
            await anyio.sleep_forever()
        await stream.send(_response(b"{}", "Content-Length: 2", status="503 Unavailable"))
        return True

    http = LoopHttp()
    async with _scripted(script) as server:
        with pytest.raises(Unavailable, match="HTTP 503"):
            await http.get(server.target, "/", [], 5)
        assert http.idle == 1  # a complete response: the connection is still good
        with pytest.raises(Unavailable, match="no reply within"):
            await http.get(server.target, "/slow", [], 0.2)
        assert http.open_connections == 0
        with socket.socket() as unused:
            unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]
        with pytest.raises(Unavailable):
            await http.get(Target("http", "127.0.0.1", port), "/", [], 5)
        assert http.unavailable == 3
        await http.aclose()


async def test_a_request_cancelled_mid_body_never_reuses_its_connection() -> None:
    release = anyio.Event()

    async def script(stream: anyio.abc.SocketStream, head: bytes) -> bool:
        if b"/half" in head:
            await stream.send(_response(b'{"half', "Content-Length: 20"))
            await release.wait()
            await stream.send(b'": true, "x": 1}    ')  # the rest, after the cancellation
            return True
        await stream.send(_response(b'{"whole": 1}', "Content-Length: 12"))
        return True

    http = LoopHttp()
    async with _scripted(script) as server:
        with anyio.move_on_after(0.3) as scope:
            await http.get(server.target, "/half", [], 5)
        assert scope.cancelled_caught
        assert http.open_connections == 0  # discarded, not idle
        release.set()
        assert (await http.get(server.target, "/", [], 5)).json() == {"whole": 1}
        assert http.opened == 2
        await http.aclose()


async def test_requests_beyond_the_connections_wait_for_one() -> None:
    inside = 0
    most = 0

    async def script(stream: anyio.abc.SocketStream, head: bytes) -> bool:
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        await anyio.sleep(0.02)
        inside -= 1
        await stream.send(_response(b"{}", "Content-Length: 2"))
        return True

    http = LoopHttp(connections=3)
    async with _scripted(script) as server:
        async with anyio.create_task_group() as requests:
            for _ in range(12):
                requests.start_soon(http.get, server.target, "/", [], 5)
        assert most <= 3
        assert http.opened == 3
        assert http.answered == 12
        await http.aclose()


@pytest.fixture
def tls_files(tmp_path: Any) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_file), str(key_file)


async def test_https_verifies_with_the_ca_bundle_requests_would_use(
    tls_files: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import ssl

    from anyio.streams.tls import TLSListener

    cert_file, key_file = tls_files
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)

    async def handle(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    try:
                        data += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
                _, _, data = data.partition(b"\r\n\r\n")
                await stream.send(_response(b'{"tls": true}', "Content-Length: 13"))

    listener = TLSListener(
        await anyio.create_tcp_listener(local_host="127.0.0.1"),
        server_context,
        standard_compatible=False,
    )
    port = listener.listener.extra(anyio.abc.SocketAttribute.local_port)
    target = Target("https", "127.0.0.1", port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle, tg)
        http = LoopHttp()
        monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
        monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
        with pytest.raises(Unavailable):  # not in certifi's bundle: refused
            await http.get(target, "/", [], 5)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", cert_file)
        for _ in range(2):
            assert (await http.get(target, "/", [], 5)).json() == {"tls": True}
        assert http.opened == 1  # kept alive (the refused one never opened)
        await http.aclose()
        tg.cancel_scope.cancel()
