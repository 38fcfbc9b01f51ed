"""asyncsession.fastapi: lifespan, dependency, and queries aborted on disconnect and timeout.

In-process through ``httpx.ASGITransport`` (asyncio and trio), and through a real uvicorn
server with a real client that hangs up mid-request. Every check of "aborted" is made on
the emulator, which is the server.
"""

from __future__ import annotations

import importlib.util
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI

from asyncsession import AsyncSession, Session, SessionBuilder
from asyncsession.fastapi import (
    CancelOnDisconnectMiddleware,
    SnowflakeSession,
    get_session,
    snowflake_lifespan,
)
from asyncsession.testing import LocalSnowflake
from tests.helpers import both_backends, running_in_session, until

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastapi_app.py"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("fastapi_app_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def builder_for(sf: LocalSnowflake, **options: Any) -> SessionBuilder:
    return Session.builder.configs({**sf.connection_parameters, **options})


def example_app(sf: LocalSnowflake) -> FastAPI:
    """The example in its shared-session mode (``tests/test_fastapi_pool.py``: pooled)."""
    app: FastAPI = load_example().create_app(builder_for(sf), pool=None)
    return app


def small_app(sf: LocalSnowflake, *, timeout: float | None = None) -> FastAPI:
    """A small app: a long query, a background task, under the middleware."""
    app = FastAPI(lifespan=snowflake_lifespan(builder_for(sf)))
    app.add_middleware(CancelOnDisconnectMiddleware, timeout=timeout)
    app.state.background_done = False

    @app.get("/wait")
    async def wait(session: SnowflakeSession, marker: str) -> int:
        await session.sql(f"select system$wait(30) -- {marker}").collect()
        return 1

    @app.get("/then-background")
    async def then_background(session: SnowflakeSession, tasks: BackgroundTasks) -> str:
        async def later() -> None:
            await session.sql("select system$wait(0.2)").collect()
            app.state.background_done = True

        tasks.add_task(later)
        return "ok"

    return app


@asynccontextmanager
async def serve_in_process(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """ASGITransport does not run the lifespan: enter it ourselves."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            yield client


def app_session(app: FastAPI) -> AsyncSession:
    session: AsyncSession = app.state.snowflake
    return session


def running_marked(sf: LocalSnowflake, marker: str) -> list[dict[str, Any]]:
    return [q for q in sf.running_queries() if marker in q["sql_text"]]


def http_scope(path: str, query: str = "") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"app")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
    }


def asgi_client() -> tuple[Any, Any, tuple[anyio.Event, list[dict[str, Any]]]]:
    """An ASGI server's receive and send, by hand: set the event to disconnect the client."""
    gone = anyio.Event()
    sent: list[dict[str, Any]] = []
    body_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    return receive, send, (gone, sent)


# ---- in process (asyncio and trio) ----------------------------------------------------


@pytest.mark.anyio
@both_backends
async def test_lifespan_creates_and_closes_the_session(local_snowflake: LocalSnowflake) -> None:
    seen: dict[str, Any] = {}

    @asynccontextmanager
    async def mine(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # The user's lifespan runs inside ours: the session is already there.
        seen["session"] = app.state.snowflake
        yield {"answer": 42}
        seen["closed_after_mine"] = app.state.snowflake.is_closed

    app = FastAPI(lifespan=snowflake_lifespan(builder_for(local_snowflake), lifespan=mine))
    async with app.router.lifespan_context(app) as state:
        session = app.state.snowflake
        assert isinstance(session, AsyncSession)
        assert state == {"snowflake": session, "answer": 42}
        assert seen["session"] is session
        session_id = session.session_id
        assert session_id in [s["session_id"] for s in local_snowflake.sessions()]
    assert seen["closed_after_mine"] is False
    assert session.is_closed
    assert not hasattr(app.state, "snowflake")
    assert session_id not in [s["session_id"] for s in local_snowflake.sessions()]


@pytest.mark.anyio
async def test_lifespan_takes_a_dict_and_rejects_others(local_snowflake: LocalSnowflake) -> None:
    app = FastAPI(lifespan=snowflake_lifespan(dict(local_snowflake.connection_parameters)))
    async with app.router.lifespan_context(app):
        assert (await app_session(app).sql("select 1").collect())[0][0] == 1
    with pytest.raises(TypeError, match=r"Session\.builder"):
        snowflake_lifespan("account=x")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_dependency_without_lifespan_explains() -> None:
    app = FastAPI()

    @app.get("/")
    async def endpoint(session: SnowflakeSession) -> int:
        return 1

    transport = httpx.ASGITransport(app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        with pytest.raises(RuntimeError, match="snowflake_lifespan"):
            await client.get("/")
    assert get_session.__name__ == "get_session"


@pytest.mark.anyio
@both_backends
async def test_example_endpoints(local_snowflake: LocalSnowflake) -> None:
    app = example_app(local_snowflake)
    async with serve_in_process(app) as client:
        response = await client.get("/numbers", params={"below": 4})
        assert response.status_code == 200
        assert response.json() == [{"N": n, "SQUARE": n * n} for n in range(4)]

        response = await client.get("/numbers.ndjson", params={"n": 25_000})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = response.text.splitlines()
        assert len(lines) == 25_000
        assert lines[0] == '{"N": 0, "LABEL": "row 0"}'
        assert lines[-1] == '{"N": 24999, "LABEL": "row 24999"}'

        assert (await client.get("/health")).json() == {"status": "ok"}
        assert (await client.get("/slow", params={"seconds": 0.05})).status_code == 200


@pytest.mark.anyio
@both_backends
async def test_request_timeout_aborts_the_query(local_snowflake: LocalSnowflake) -> None:
    app = example_app(local_snowflake)
    async with serve_in_process(app) as client:
        session_id = app_session(app).session_id
        response = await client.get("/slow", params={"seconds": 30, "max_seconds": 0.3})
        assert response.status_code == 504
        assert response.json()["detail"]["query_history"] == {
            "EXECUTION_STATUS": "FAILED_WITH_ERROR",
            "ERROR_CODE": "000604",
            "ERROR_MESSAGE": "SQL execution canceled",
        }
        mine = [q for q in local_snowflake.queries() if q["session_id"] == session_id]
        assert [q["status"] for q in mine if "system$wait(30" in q["sql_text"]] == ["ABORTED"]
        assert running_in_session(local_snowflake.connection_parameters, session_id) == []


@pytest.mark.anyio
@both_backends
async def test_middleware_timeout_answers_504_and_aborts(local_snowflake: LocalSnowflake) -> None:
    app = small_app(local_snowflake, timeout=0.3)
    marker = uuid.uuid4().hex
    async with serve_in_process(app) as client:
        response = await client.get("/wait", params={"marker": marker})
        assert response.status_code == 504
        assert response.json() == {"detail": "request timed out after 0.3 s"}
        (query,) = [q for q in local_snowflake.queries() if marker in q["sql_text"]]
        assert query["status"] == "ABORTED"
    with pytest.raises(ValueError, match="positive"):
        CancelOnDisconnectMiddleware(app, timeout=0)


@pytest.mark.anyio
@both_backends
async def test_disconnect_cancels_the_handler_and_aborts(local_snowflake: LocalSnowflake) -> None:
    """The ASGI protocol by hand: the client goes away while the query runs."""
    app = small_app(local_snowflake)
    marker = uuid.uuid4().hex
    receive, send, (gone, sent) = asgi_client()
    scope = http_scope("/wait", f"marker={marker}")
    async with app.router.lifespan_context(app):
        async with anyio.create_task_group() as tg:
            tg.start_soon(app, scope, receive, send)
            (query,) = await until(lambda: running_marked(local_snowflake, marker))
            gone.set()
        # The app returned (cancelled, nothing sent) and the query was aborted.
        assert sent == []
        assert local_snowflake.query(query["query_id"])["status"] == "ABORTED"
        assert app_session(app).running_queries == ()


@pytest.mark.anyio
@both_backends
async def test_disconnect_after_the_response_cancels_nothing(
    local_snowflake: LocalSnowflake,
) -> None:
    """httpx's transport reports a disconnect once the response is complete."""
    app = small_app(local_snowflake)
    async with serve_in_process(app) as client:
        assert (await client.get("/then-background")).json() == "ok"
        assert app.state.background_done


@pytest.mark.anyio
@both_backends
async def test_errors_pass_through_the_middleware() -> None:
    app = FastAPI()
    app.add_middleware(CancelOnDisconnectMiddleware)

    @app.get("/boom")
    async def boom() -> None:
        raise LookupError("boom")

    receive, send, _ = asgi_client()
    with pytest.raises(LookupError, match="boom"):  # as it is, not in an exception group
        await app(http_scope("/boom"), receive, send)


async def get_slow(client: httpx.AsyncClient) -> None:
    await client.get("/slow", params={"seconds": 30})


@pytest.mark.anyio
@both_backends
async def test_sync_endpoints_answer_while_50_queries_run(local_snowflake: LocalSnowflake) -> None:
    app = example_app(local_snowflake)
    limiter = anyio.to_thread.current_default_thread_limiter()
    async with serve_in_process(app) as client:
        session = app_session(app)

        def running() -> bool:
            mine = [
                q
                for q in local_snowflake.running_queries()
                if q["session_id"] == session.session_id
            ]
            return len(mine) >= 50

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(get_slow, client)
            await until(running)
            # Our queries hold none of anyio's default tokens (the sync endpoints' pool) ...
            assert limiter.borrowed_tokens == 0
            # ... so sync endpoints keep answering, many at once.
            with anyio.fail_after(5):
                async with anyio.create_task_group() as health:
                    for _ in range(int(limiter.total_tokens) + 10):
                        health.start_soon(client.get, "/health")
            assert limiter.borrowed_tokens == 0
            tg.cancel_scope.cancel()  # the 50 requests are cancelled: their queries aborted
        assert session.running_queries == ()
        assert running_in_session(local_snowflake.connection_parameters, session.session_id) == []


@pytest.mark.anyio
@both_backends
async def test_queries_run_while_the_default_thread_pool_is_exhausted(
    local_snowflake: LocalSnowflake,
) -> None:
    """Busy sync endpoints (every default token taken) do not stall Snowflake endpoints."""
    app = example_app(local_snowflake)
    limiter = anyio.to_thread.current_default_thread_limiter()
    release = threading.Event()

    async def hold_a_token() -> None:
        await anyio.to_thread.run_sync(release.wait)

    async with serve_in_process(app) as client, anyio.create_task_group() as tg:
        try:
            for _ in range(int(limiter.total_tokens)):
                tg.start_soon(hold_a_token)
            await until(lambda: limiter.available_tokens == 0)
            with anyio.fail_after(10):
                response = await client.get("/numbers", params={"below": 3})
                assert response.json()[2] == {"N": 2, "SQUARE": 4}
                lines = (await client.get("/numbers.ndjson", params={"n": 10})).text
                assert len(lines.splitlines()) == 10
        finally:
            release.set()


# ---- a real server and a real client --------------------------------------------------


@contextmanager
def uvicorn_server(app: FastAPI) -> Iterator[int]:
    """uvicorn in a thread on a free port of 127.0.0.1; stopped (lifespan shutdown) on exit.

    uvicorn is a dev dependency: without it this test fails (ImportError), never skips.
    """
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)  # polling uvicorn's flag, bounded
        assert server.started, "uvicorn did not start"
        yield port
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop"


def test_real_client_hanging_up_aborts_the_query(local_snowflake: LocalSnowflake) -> None:
    app = example_app(local_snowflake)
    with uvicorn_server(app) as port:
        session = app_session(app)
        session_id = session.session_id
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/numbers", params={"below": 3}).json()[2] == {"N": 2, "SQUARE": 4}

        def slow_running(sf: LocalSnowflake) -> list[dict[str, Any]]:
            return [
                q
                for q in sf.running_queries()
                if q["session_id"] == session_id and "system$wait(30" in q["sql_text"]
            ]

        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"GET /slow?seconds=30 HTTP/1.1\r\nHost: test\r\n\r\n")
            (query,) = local_snowflake.wait_until(slow_running)
        # The client hung up: the handler is cancelled and the query aborted on the server.
        local_snowflake.wait_until(lambda sf: sf.query(query["query_id"])["status"] == "ABORTED")
        assert running_in_session(local_snowflake.connection_parameters, session_id) == []
        assert httpx.get(f"{base}/health").json() == {"status": "ok"}
    # Shutdown ran the lifespan: the session is closed and logged out.
    assert session.is_closed
    assert session_id not in [s["session_id"] for s in local_snowflake.sessions()]


# ---- options and paths no other test takes ------------------------------------------------


@pytest.mark.anyio
async def test_lifespan_state_key_keeps_a_second_session_apart(
    local_snowflake: LocalSnowflake,
) -> None:
    @asynccontextmanager
    async def second(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with snowflake_lifespan(builder_for(local_snowflake), state_key="reports")(
            app
        ) as state:
            yield state

    app = FastAPI(lifespan=snowflake_lifespan(builder_for(local_snowflake), lifespan=second))
    async with app.router.lifespan_context(app) as state:
        default, reports = app.state.snowflake, app.state.reports
        assert state == {"snowflake": default, "reports": reports}
        assert isinstance(reports, AsyncSession)
        assert reports is not default
        on_server = {s["session_id"] for s in local_snowflake.sessions()}
        assert {default.session_id, reports.session_id} <= on_server
    assert not hasattr(app.state, "reports")
    assert reports.is_closed
    assert reports.session_id not in {s["session_id"] for s in local_snowflake.sessions()}


@pytest.mark.anyio
async def test_lifespan_none_uses_the_default_connection_of_connections_toml(
    local_snowflake: LocalSnowflake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / ".snowflake"
    home.mkdir()
    toml = home / "connections.toml"
    toml.write_text(local_snowflake.connections_toml("default"))
    toml.chmod(0o600)
    monkeypatch.setenv("SNOWFLAKE_HOME", str(home))
    monkeypatch.delenv("SNOWFLAKE_DEFAULT_CONNECTION_NAME", raising=False)
    app = FastAPI(lifespan=snowflake_lifespan(None))
    async with app.router.lifespan_context(app):
        session = app_session(app)
        assert session.session_id in [s["session_id"] for s in local_snowflake.sessions()]
        assert await session.get_current_database() == local_snowflake.database
    assert session.is_closed


@pytest.mark.anyio
@both_backends
async def test_a_post_body_passes_through_the_middleware(local_snowflake: LocalSnowflake) -> None:
    app = small_app(local_snowflake)

    @app.post("/echo")
    async def echo(session: SnowflakeSession, payload: dict[str, Any]) -> Any:
        rows = await session.sql("select ? as v", [payload["value"]]).collect()
        return {"value": rows[0].V, "size": len(payload["padding"])}

    padding = "x" * 200_000  # several receive() messages' worth through uvicorn-like servers
    async with serve_in_process(app) as client:
        response = await client.post("/echo", json={"value": "it's data", "padding": padding})
    assert response.status_code == 200
    assert response.json() == {"value": "it's data", "size": len(padding)}


@pytest.mark.anyio
@both_backends
async def test_a_disconnect_during_a_streamed_response_ends_its_query(
    local_snowflake: LocalSnowflake,
) -> None:
    """The client goes away after the first lines of a large NDJSON stream: the stream
    stops, its cursor and worker are released, and nothing of the session runs on."""
    app = example_app(local_snowflake)
    receive, send, (gone, sent) = asgi_client()
    scope = http_scope("/numbers.ndjson", "n=2000000")
    async with app.router.lifespan_context(app):
        session = app_session(app)
        async with anyio.create_task_group() as tg:
            tg.start_soon(app, scope, receive, send)
            await until(lambda: sum(m["type"] == "http.response.body" for m in sent) >= 3, 30)
            gone.set()
        bodies = [m for m in sent if m["type"] == "http.response.body"]
        assert sent[0]["type"] == "http.response.start"
        assert bodies[-1].get("more_body", False)  # cut off: the last line never came
        assert session.running_queries == ()
        assert running_in_session(local_snowflake.connection_parameters, session.session_id) == []
