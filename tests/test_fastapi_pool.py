"""asyncsession.fastapi with a pool: a session leased per request, returned after the response.

In process (``httpx.ASGITransport``, asyncio and trio), by hand at the ASGI level (a
client that disconnects), and through uvicorn with a raw socket that hangs up.
"""

from __future__ import annotations

import socket
import uuid
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI

from asyncsession import AsyncSession, ConfigurationError, SessionPool
from asyncsession.fastapi import (
    CancelOnDisconnectMiddleware,
    SnowflakePool,
    SnowflakeSession,
    snowflake_lifespan,
)
from asyncsession.testing import LocalSnowflake
from tests.helpers import both_backends, until
from tests.pool_support import builder_for, server_session_ids
from tests.test_fastapi import (
    asgi_client,
    http_scope,
    load_example,
    running_marked,
    serve_in_process,
    uvicorn_server,
)


def pooled_app(sf: LocalSnowflake, **pool: Any) -> FastAPI:
    app = FastAPI(
        lifespan=snowflake_lifespan(builder_for(sf), pool=pool or {"min_size": 1, "max_size": 3})
    )
    app.add_middleware(CancelOnDisconnectMiddleware)
    app.state.seen = []

    @app.get("/whoami")
    async def whoami(session: SnowflakeSession, hold: float = 0.0) -> dict[str, Any]:
        if hold:
            await session.sql(f"select system$wait({float(hold)})").collect()
        return {"session_id": session.session_id, "schema": await session.get_current_schema()}

    @app.get("/gate")
    async def gate(session: SnowflakeSession) -> int:
        app.state.seen.append(session.session_id)
        await app.state.gate.wait()
        return session.session_id

    @app.get("/use")
    async def use(session: SnowflakeSession, schema: str) -> str:
        await session.sql(f"create schema if not exists {schema}").collect()
        await session.use_schema(schema)
        return str(await session.get_current_schema())

    @app.get("/wait")
    async def wait(session: SnowflakeSession, marker: str) -> int:
        await session.sql(f"select system$wait(30) -- {marker}").collect()
        return 1

    @app.get("/stats")
    async def stats(pool: SnowflakePool) -> dict[str, Any]:
        return pool.stats()

    return app


async def get_ok(client: httpx.AsyncClient, path: str, **params: Any) -> None:
    response = await client.get(path, params=params)
    await response.aread()
    assert response.status_code == 200, response.text


def app_pool(app: FastAPI) -> SessionPool:
    pool: SessionPool = app.state.snowflake
    return pool


@pytest.mark.anyio
@both_backends
async def test_pool_lifespan_leases_a_session_per_request(local_snowflake: LocalSnowflake) -> None:
    app = pooled_app(local_snowflake)
    before = server_session_ids(local_snowflake)
    async with serve_in_process(app) as client:
        pool = app_pool(app)
        assert isinstance(pool, SessionPool)
        app.state.gate = anyio.Event()
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(get_ok, client, "/gate")
            await until(lambda: len(app.state.seen) == 3)
            assert len(set(app.state.seen)) == 3  # requests at once: a session each
            app.state.gate.set()
        stats = pool.stats()
        assert (stats["leased"], stats["size"]) == (0, 3)  # all returned after the response
    assert pool.is_closed
    assert server_session_ids(local_snowflake) == before


@pytest.mark.anyio
@both_backends
async def test_a_request_use_schema_does_not_leak(local_snowflake: LocalSnowflake) -> None:
    app = pooled_app(local_snowflake, min_size=1, max_size=1)
    schema = f"S_{uuid.uuid4().hex[:8]}".upper()
    async with serve_in_process(app) as client:
        assert (await client.get("/use", params={"schema": schema})).json() == schema
        assert (await client.get("/whoami")).json()["schema"] == "PUBLIC"


@pytest.mark.anyio
@both_backends
async def test_no_free_session_is_a_503(local_snowflake: LocalSnowflake) -> None:
    app = pooled_app(local_snowflake, min_size=1, max_size=1, timeout=0.2)
    async with serve_in_process(app) as client, anyio.create_task_group() as tg:
        tg.start_soon(lambda: get_ok(client, "/whoami", hold=1.0))
        await until(lambda: app_pool(app).stats()["leased"] == 1)
        response = await client.get("/whoami")
        assert response.status_code == 503
        assert "no pooled session became free within 0.2 s" in response.json()["detail"]


@pytest.mark.anyio
@both_backends
async def test_disconnect_aborts_the_query_and_returns_the_session(
    local_snowflake: LocalSnowflake,
) -> None:
    app = pooled_app(local_snowflake, min_size=1, max_size=1)
    marker = uuid.uuid4().hex
    receive, send, (gone, sent) = asgi_client()
    async with app.router.lifespan_context(app):
        pool = app_pool(app)
        async with anyio.create_task_group() as tg:
            tg.start_soon(app, http_scope("/wait", f"marker={marker}"), receive, send)
            (query,) = await until(lambda: running_marked(local_snowflake, marker))
            gone.set()
        assert sent == []
        assert local_snowflake.query(query["query_id"])["status"] == "ABORTED"
        stats = pool.stats()
        assert (stats["leased"], stats["idle"], stats["replaced"]) == (0, 1, 0)


@pytest.mark.anyio
async def test_pool_dependency(local_snowflake: LocalSnowflake) -> None:
    # asyncio only: on trio, httpx's ASGITransport leaves its request-body iterator
    # unexhausted after a very fast async endpoint (a ResourceWarning at GC; not ours).
    app = pooled_app(local_snowflake)
    async with serve_in_process(app) as client:
        stats = (await client.get("/stats")).json()
        assert (stats["min_size"], stats["max_size"], stats["leased"]) == (1, 3, 0)


@pytest.mark.anyio
async def test_bad_pool_options_fail_when_the_app_is_made(local_snowflake: LocalSnowflake) -> None:
    before = server_session_ids(local_snowflake)
    with pytest.raises(ConfigurationError, match="max_size"):
        snowflake_lifespan(builder_for(local_snowflake), pool={"min_size": 5, "max_size": 2})
    with pytest.raises(TypeError, match="pool="):
        snowflake_lifespan(builder_for(local_snowflake), pool=10)  # type: ignore[arg-type]
    assert server_session_ids(local_snowflake) == before


@pytest.mark.anyio
@both_backends
async def test_example_with_its_pool(local_snowflake: LocalSnowflake) -> None:
    app = load_example().create_app(builder_for(local_snowflake))
    async with serve_in_process(app) as client:
        assert isinstance(app.state.snowflake, SessionPool)
        response = await client.get("/numbers", params={"below": 3})
        assert response.json()[2] == {"N": 2, "SQUARE": 4}
        lines = (await client.get("/numbers.ndjson", params={"n": 5000})).text.splitlines()
        assert len(lines) == 5000  # streamed after the endpoint returned: the lease lasted
        response = await client.get("/slow", params={"seconds": 30, "max_seconds": 0.3})
        assert response.status_code == 504
        assert response.json()["detail"]["query_history"]["ERROR_CODE"] == "000604"
        stats = app.state.snowflake.stats()
        assert stats["leased"] == 0
        assert stats["min_size"] == 2
        if hasattr(AsyncSession, "transaction"):
            before = len((await client.get("/notes")).json())
            assert (await client.post("/notes", params={"text": "hi"})).json() == {
                "notes": before + 1
            }


def test_real_client_hanging_up_aborts_the_query_of_its_lease(
    local_snowflake: LocalSnowflake,
) -> None:
    app = load_example().create_app(builder_for(local_snowflake))
    before = server_session_ids(local_snowflake)
    marker = "system$wait(30"
    with uvicorn_server(app) as port:
        pool = app_pool(app)
        base = f"http://127.0.0.1:{port}"

        def slow_running(sf: LocalSnowflake) -> list[dict[str, Any]]:
            return [q for q in sf.running_queries() if marker in q["sql_text"]]

        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"GET /slow?seconds=30 HTTP/1.1\r\nHost: test\r\n\r\n")
            (query,) = local_snowflake.wait_until(slow_running)
        local_snowflake.wait_until(lambda sf: sf.query(query["query_id"])["status"] == "ABORTED")
        local_snowflake.wait_until(lambda sf: pool.stats()["leased"] == 0)
        assert httpx.get(f"{base}/health").json() == {"status": "ok"}
        assert pool.stats()["replaced"] == 0
    assert pool.is_closed
    assert server_session_ids(local_snowflake) == before
