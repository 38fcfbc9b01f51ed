"""FastAPI (and Starlette) integration: a session pool or one shared session; aborts on disconnect.

Install with ``pip install 'asyncsession[fastapi]'``::

    from fastapi import FastAPI
    from asyncsession import Session
    from asyncsession.fastapi import (
        CancelOnDisconnectMiddleware, SnowflakeSession, snowflake_lifespan,
    )

    builder = Session.builder.config("connection_name", "prod")
    app = FastAPI(lifespan=snowflake_lifespan(builder, pool={"min_size": 2, "max_size": 10}))
    app.add_middleware(CancelOnDisconnectMiddleware)

    @app.post("/orders")
    async def add_order(order: Order, session: SnowflakeSession) -> None:
        async with session.transaction():  # this request's own session: safe
            await session.sql("insert into orders values (?, ?)", [order.id, order.qty]).collect()

- ``snowflake_lifespan(builder, pool={...})`` opens a ``SessionPool`` at startup and
  closes it at shutdown (aborting whatever still runs); each request that asks for
  ``SnowflakeSession`` leases its own session, returned (reset) after the response is
  sent, so transactions, ``use_*`` and query tags never leak between requests. No free
  session within the pool's ``timeout``: the request gets ``503``.
- ``snowflake_lifespan(builder)`` (no ``pool``): one session shared by every request —
  fine for read-only services that change no session state.
- ``lifespan=`` composes your own lifespan; ``SnowflakeSession`` (``Annotated[AsyncSession,
  Depends(get_session)]``) hands the session to endpoints; ``SnowflakePool`` the pool.
- ``CancelOnDisconnectMiddleware`` cancels a request's handler when its client
  disconnects (ASGI servers such as uvicorn do not: the handler would run to its end),
  so the query it awaits is aborted on the server. ``timeout=`` bounds every request
  the same way and answers 504.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

import anyio

try:
    from fastapi import Depends, HTTPException, Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "asyncsession.fastapi needs FastAPI: pip install 'asyncsession[fastapi]'"
    ) from e

from ._builder import SessionBuilder
from ._errors import PoolTimeout, TooManyRequests
from ._pool import SessionPool
from ._session import AsyncSession

__all__ = [
    "DEFAULT_STATE_KEY",
    "CancelOnDisconnectMiddleware",
    "SnowflakePool",
    "SnowflakeSession",
    "get_pool",
    "get_session",
    "snowflake_lifespan",
]

#: Where the session (or pool) is kept: lifespan state (``request.state.snowflake``) and
#: ``app.state``.
DEFAULT_STATE_KEY = "snowflake"

Lifespan = Callable[[Any], AbstractAsyncContextManager[Mapping[str, Any] | None]]


def snowflake_lifespan(
    source: SessionBuilder | Mapping[str, object] | None = None,
    *,
    pool: Mapping[str, Any] | bool | None = None,
    lifespan: Lifespan | None = None,
    state_key: str = DEFAULT_STATE_KEY,
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """A lifespan for ``FastAPI(lifespan=...)`` that owns a ``SessionPool`` or one session.

    ``source`` is a ``Session.builder`` (configured), a dict of options, or ``None`` for
    the default connection of connections.toml. ``pool``: the ``create_pool()`` options
    (``{"min_size": 2, "max_size": 10}``; ``True`` for the defaults; checked now, before
    any login): each request leases its own session. Without it, one session serves
    every request. Created at startup (the app does not start if login fails), closed
    at shutdown: queries still running are aborted on the server, then everything logs
    out. ``lifespan`` (your own) runs inside, with the pool or session already in
    ``app.state``; the state it yields is merged. ``state_key``: the name in
    ``request.state`` and ``app.state`` (the dependencies read the default one).
    """
    if source is None:
        builder = SessionBuilder()
    elif isinstance(source, SessionBuilder):
        builder = source
    elif isinstance(source, Mapping):
        builder = SessionBuilder().configs(source)
    else:
        raise TypeError(
            "snowflake_lifespan() takes a Session.builder, a dict of options or None, "
            f"not {type(source).__name__}"
        )

    if pool is None or pool is False:
        opener: Callable[[], AbstractAsyncContextManager[Any]] = builder.create
    elif pool is True or isinstance(pool, Mapping):
        creation = builder.create_pool(**({} if pool is True else dict(pool)))
        opener = lambda: creation  # noqa: E731 - checked once, opened at startup
    else:
        raise TypeError(
            f"snowflake_lifespan(pool=) takes a dict of pool options or True, not {pool!r}"
        )

    @asynccontextmanager
    async def snowflake_session_lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        async with opener() as resource:
            app_state = getattr(app, "state", None)
            if app_state is not None:
                setattr(app_state, state_key, resource)
            try:
                state: dict[str, Any] = {state_key: resource}
                if lifespan is None:
                    yield state
                else:
                    async with lifespan(app) as user_state:
                        yield {**state, **(user_state or {})}
            finally:
                if app_state is not None and getattr(app_state, state_key, None) is resource:
                    delattr(app_state, state_key)

    return snowflake_session_lifespan


def _resource_from(request: Request, state_key: str) -> AsyncSession | SessionPool:
    resource = getattr(request.state, state_key, None)
    if resource is None:
        resource = getattr(request.app.state, state_key, None)
    if not isinstance(resource, (AsyncSession, SessionPool)):
        raise RuntimeError(
            "no Snowflake session for this app: create it with "
            "FastAPI(lifespan=snowflake_lifespan(...)) and make sure the lifespan runs "
            "(with httpx.ASGITransport, enter app.router.lifespan_context(app) yourself)"
        )
    return resource


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: a session leased for this request, or the shared one.

    With ``snowflake_lifespan(..., pool=...)``, the lease lasts until the response has
    been sent (a streamed body included), then the session goes back to the pool (its
    queries aborted, its transaction rolled back, its state reset). A lease that cannot
    be had within the pool's ``timeout`` answers ``503``. ``async`` on purpose: FastAPI
    runs a sync dependency in anyio's default thread pool, which belongs to the app's
    sync endpoints.
    """
    resource = _resource_from(request, DEFAULT_STATE_KEY)
    if isinstance(resource, AsyncSession):
        yield resource
        return
    try:
        lease = resource.session()
        session = await lease.__aenter__()
    except (PoolTimeout, TooManyRequests) as e:
        raise HTTPException(503, str(e)) from None
    try:
        yield session
    except BaseException as e:
        await lease.__aexit__(type(e), e, e.__traceback__)
        raise
    await lease.__aexit__(None, None, None)


async def get_pool(request: Request) -> SessionPool:
    """FastAPI dependency: the pool of ``snowflake_lifespan(..., pool=...)``."""
    resource = _resource_from(request, DEFAULT_STATE_KEY)
    if not isinstance(resource, SessionPool):
        raise RuntimeError("this app has one shared session: use snowflake_lifespan(pool=...)")
    return resource


#: ``async def endpoint(session: SnowflakeSession)``: this request's session, injected
#: (leased from the pool until the response is sent, or the one shared session).
SnowflakeSession = Annotated[AsyncSession, Depends(get_session, scope="request")]
#: ``async def endpoint(pool: SnowflakePool)``: the app's pool (e.g. for ``pool.stats()``).
SnowflakePool = Annotated[SessionPool, Depends(get_pool)]


class CancelOnDisconnectMiddleware:
    """ASGI middleware: cancel a request's handler when its client disconnects.

    ASGI servers report a disconnect only to an app that calls ``receive()``; a handler
    awaiting a query never does, so without this it runs to its end (and so does its
    query, on the warehouse). This middleware listens for ``http.disconnect`` alongside
    the handler and cancels it, and the cancelled await aborts the query on the server.

    Once the response is complete, a disconnect cancels nothing (background tasks run
    on). The request body is passed through with at most one message read ahead; a
    client gone mid-upload is seen when the app reads the body, as usual.

    ``timeout``: cancel any request still running after that many seconds; if no
    response was started yet, answer ``504 Gateway Timeout``.
    """

    def __init__(self, app: ASGIApp, *, timeout: float | None = None) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.app = app
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        response_started = False
        response_complete = False
        disconnected = False
        # One message of read-ahead keeps upload backpressure, and lets the watcher take
        # a GET's (never-read) empty body and go on to wait for the disconnect.
        to_app, from_server = anyio.create_memory_object_stream[Message](1)

        async def send_wrapper(message: Message) -> None:
            nonlocal response_started, response_complete
            kind = message["type"]
            if kind == "http.response.start":
                response_started = True
            elif (kind == "http.response.body" and not message.get("more_body", False)) or (
                kind in ("http.response.pathsend", "http.response.zerocopysend")
            ):
                response_complete = True
            await send(message)

        async def receive_wrapper() -> Message:
            try:
                return await from_server.receive()
            except anyio.EndOfStream:
                return {"type": "http.disconnect"}

        async def watch(cancel_scope: anyio.CancelScope) -> None:
            nonlocal disconnected
            async with to_app:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        disconnected = True
                        if not response_complete:
                            cancel_scope.cancel()
                        return
                    await to_app.send(message)

        # The app runs in this task; its errors are re-raised as they are (not grouped).
        error: Exception | None = None
        deadline = float("inf") if self.timeout is None else self.timeout
        async with from_server, anyio.create_task_group() as tg:
            tg.start_soon(watch, tg.cancel_scope)
            try:
                with anyio.move_on_after(deadline) as timer:
                    await self.app(scope, receive_wrapper, send_wrapper)
                if timer.cancelled_caught and not response_started and not disconnected:
                    await _gateway_timeout(send_wrapper, deadline)
            except Exception as e:  # a cancellation must reach the task group: not caught
                error = e
            finally:
                tg.cancel_scope.cancel()
        if error is not None:
            try:
                raise error
            finally:
                error = None


async def _gateway_timeout(send: Send, seconds: float) -> None:
    body = f'{{"detail":"request timed out after {seconds:g} s"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 504,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
