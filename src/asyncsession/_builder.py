"""``Session.builder``: the Snowpark builder, made async."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio

from ._closing import Creation
from ._config import ResolvedConfig, normalize_options, redact, resolve
from ._driver import Driver, get_driver
from ._errors import ConfigurationError
from ._library_options import DEFAULT_CANCEL_TIMEOUT, DEFAULT_MAX_CONCURRENT_QUERIES
from ._pool_options import PoolOptions, check_pool_options
from ._session import AsyncSession
from ._threads import WorkerCall, run_blocking

if TYPE_CHECKING:
    from ._lease import PoolCreation

logger = logging.getLogger("asyncsession")


class SessionBuilder:
    """Collects options; ``await builder.create()`` logs in (in a worker thread)."""

    def __init__(self) -> None:
        self._options: dict[str, object] = {}
        self._app_tag: str | None = None

    def __repr__(self) -> str:
        return f"<SessionBuilder options={redact(self._options)!r}>"

    def config(self, key: str, value: object) -> SessionBuilder:
        """Set one option (case-insensitive name), e.g. ``config("connection_name", "dev")``."""
        if not isinstance(key, str):
            raise ConfigurationError(f"option names must be str, not {type(key).__name__}")
        return self.configs({key: value})

    def configs(self, options: Mapping[str, object]) -> SessionBuilder:
        """Merge a dict of options (``snowflake.connector.connect`` parameters and ours)."""
        if not isinstance(options, Mapping):
            raise ConfigurationError(
                f"configs() takes a dict of options, not {type(options).__name__}"
            )
        merged = dict(self._options)
        for key, value in normalize_options(options).items():
            merged[key] = value
        self._options = merged
        return self

    def app_name(self, app_name: str, format_json: bool = False) -> SessionBuilder:
        """Tag the session's queries with the application name (``APPNAME=…``), as Snowpark."""
        if not isinstance(app_name, str) or not app_name:
            raise ConfigurationError(f"app_name must be a non-empty str, not {app_name!r}")
        self._app_tag = json.dumps({"APPNAME": app_name}) if format_json else f"APPNAME={app_name}"
        return self

    def create(self) -> SessionCreation:
        """Log in. Await it, or use it as ``async with builder.create() as session``."""
        return SessionCreation(dict(self._options), self._app_tag)

    # Snowpark spelling; ours is always a fresh session.
    getOrCreate = create

    def create_pool(
        self,
        *,
        min_size: int = PoolOptions.min_size,
        max_size: int = PoolOptions.max_size,
        timeout: float = PoolOptions.timeout,
        max_waiting: int = PoolOptions.max_waiting,
        max_lifetime: float = PoolOptions.max_lifetime,
        max_idle: float = PoolOptions.max_idle,
        health_check_after: float | None = PoolOptions.health_check_after,
        max_login_delay: float = PoolOptions.max_login_delay,
        max_concurrent_logins: int = PoolOptions.max_concurrent_logins,
        **unknown: object,
    ) -> PoolCreation:
        """A ``SessionPool`` of sessions made with these options (as ``create()`` makes one).

        Await it, or use ``async with builder.create_pool(...) as pool``. ``min_size``
        sessions are logged in before it returns (at most ``max_concurrent_logins`` at
        once; if one fails, that error is raised and nothing stays logged in). Bad pool
        options raise one ``ConfigurationError`` naming the option, before any login.
        See ``SessionPool`` and ``PoolOptions`` for what each option does.
        """
        from ._lease import PoolCreation
        from ._pool import open_pool

        checked = check_pool_options(
            {
                "min_size": min_size,
                "max_size": max_size,
                "timeout": timeout,
                "max_waiting": max_waiting,
                "max_lifetime": max_lifetime,
                "max_idle": max_idle,
                "health_check_after": health_check_after,
                "max_login_delay": max_login_delay,
                "max_concurrent_logins": max_concurrent_logins,
                **unknown,
            }
        )
        options, app_tag = dict(self._options), self._app_tag
        return PoolCreation(lambda: open_pool(options, app_tag, checked))


class SessionCreation(Creation[AsyncSession]):
    """Awaitable (gives the session) and async context manager (closes it on exit)."""

    def __init__(self, options: dict[str, object], app_tag: str | None) -> None:
        super().__init__(lambda: create_session(options, app_tag))


async def create_session(options: dict[str, object], app_tag: str | None) -> AsyncSession:
    driver = get_driver()
    config = await _resolve_in_thread(options)
    if config.library_options.get("local_testing"):
        from ._local import local_connection_parameters

        params, release = await local_connection_parameters()
        config = ResolvedConfig(
            connect_kwargs={**params, **config.connect_kwargs},
            library_options=config.library_options,
            source="local emulator",
        )
    else:
        release = None
    try:
        kwargs = _connect_kwargs(config, app_tag)
        drain = config.library_options.get("cancel_timeout", DEFAULT_CANCEL_TIMEOUT)
        connection = await _login(driver, kwargs, drain)
    except BaseException:
        if release is not None:
            with anyio.CancelScope(shield=True):
                await release()
        raise
    lib = config.library_options
    return AsyncSession(
        connection,
        driver=driver,
        config=config,
        cancel_timeout=lib.get("cancel_timeout", DEFAULT_CANCEL_TIMEOUT),
        max_concurrent_queries=lib.get("max_concurrent_queries", DEFAULT_MAX_CONCURRENT_QUERIES),
        query_tag=_initial_tag(kwargs),
        autocommit=_initial_autocommit(kwargs),
        on_close=() if release is None else (release,),
    )


async def _resolve_in_thread(options: dict[str, object]) -> ResolvedConfig:
    # Reads files: keep it off the event loop. Warnings raised there reach the caller.
    return await run_blocking(lambda: resolve(options), anyio.CapacityLimiter(1))


def _connect_kwargs(config: ResolvedConfig, app_tag: str | None) -> dict[str, Any]:
    kwargs = dict(config.connect_kwargs)
    # session.sql(query, params) binds "?" placeholders on the server (never client-side).
    kwargs.setdefault("paramstyle", "qmark")
    # Heartbeats keep an idle session's master token alive (else it dies after 4 h idle);
    # an explicit False (options or connections.toml) opts out.
    if kwargs.get("client_session_keep_alive") is None:
        kwargs["client_session_keep_alive"] = True
    # The session's tag: session_parameters' QUERY_TAG (any case) > the ``query_tag``
    # option (5.x only; 4.x ignores it) > app_name. Sent as session_parameters' QUERY_TAG,
    # which both generations honour, so ``session.query_tag`` is what the server uses.
    option_tag = kwargs.pop("query_tag", None)
    parameters = dict(kwargs.get("session_parameters") or {})
    for key in [k for k in parameters if str(k).upper() == "QUERY_TAG" and k != "QUERY_TAG"]:
        parameters.setdefault("QUERY_TAG", parameters.pop(key))
    tag = option_tag if option_tag is not None else app_tag
    if tag is not None:
        parameters.setdefault("QUERY_TAG", tag)
    if parameters:
        kwargs["session_parameters"] = parameters
    return kwargs


def _initial_tag(kwargs: dict[str, Any]) -> str | None:
    parameters = kwargs.get("session_parameters") or {}
    for key, value in parameters.items():
        if str(key).upper() == "QUERY_TAG":
            return str(value)
    return None


def _initial_autocommit(kwargs: dict[str, Any]) -> bool:
    """Whether the session starts with AUTOCOMMIT on (Snowflake's default)."""
    if kwargs.get("autocommit") is False:
        return False
    for key, value in (kwargs.get("session_parameters") or {}).items():
        if str(key).upper() == "AUTOCOMMIT":
            return str(value).strip().upper() not in ("FALSE", "0", "OFF", "NO")
    return True


async def _login(driver: Driver, kwargs: dict[str, Any], drain_seconds: float) -> Any:
    """Connect in a worker thread: even a browser SSO flow never blocks the event loop.

    If the awaiting task is cancelled mid-login, the login finishes in its thread and that
    connection is then closed, so no server session is left behind; the cancelled task
    waits up to ``drain_seconds`` for that (a closing pool then leaves none logged in).
    """
    lock = threading.Lock()
    abandoned = False
    made: list[Any] = []

    def login() -> Any:
        connection = driver.connect(dict(kwargs))
        with lock:
            if abandoned:
                _close_quietly(driver, connection)
            else:
                made.append(connection)
        return connection

    call = WorkerCall(login)
    try:
        return await call.start(anyio.CapacityLimiter(1))
    except anyio.get_cancelled_exc_class():
        with lock:
            abandoned = True
        with anyio.CancelScope(shield=True):
            if made:  # logged in just as we were cancelled
                await run_blocking(
                    lambda: _close_quietly(driver, made[0]), anyio.CapacityLimiter(1)
                )
            else:  # the thread logs out what it gets; give it a moment to finish
                with anyio.move_on_after(drain_seconds):
                    await call.wait_finished()
        raise


def _close_quietly(driver: Driver, connection: Any) -> None:
    try:
        driver.logout(connection)
    except Exception as e:
        logger.warning("closing a connection after a cancelled login failed: %s", e)
