"""``AsyncSession``: one logged-in Snowflake session, usable from many tasks at once."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import anyio

from ._closing import ClosesOnExit
from ._config import ResolvedConfig, redact
from ._core import SessionCore
from ._driver import Driver
from ._library_options import DEFAULT_CANCEL_TIMEOUT, DEFAULT_MAX_CONCURRENT_QUERIES
from ._own_statements import ignore_result, session_id_for_log
from ._registry import RunningQueries
from ._statement_options import statement_options
from ._transaction import Transaction

if TYPE_CHECKING:
    from ._builder import SessionBuilder
    from ._job import AsyncJob
    from ._query import QueryInput, SqlQuery

logger = logging.getLogger("asyncsession")

T = TypeVar("T")


# Strings: ``re`` compiles (and caches) them on first use, not at import.
_IDENTIFIER = r'^(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")+")$'
#: Snowflake query ids are UUID-shaped (01b2c3d4-0000-1234-0000-000123456789).
_QUERY_ID = r"(?i)^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


class _BuilderProperty:
    """``Session.builder`` returns a fresh builder on every access, as in Snowpark."""

    def __get__(self, instance: object, owner: type | None = None) -> SessionBuilder:
        from ._builder import SessionBuilder

        return SessionBuilder()


class AsyncSession(ClosesOnExit):
    """An async Snowflake session. Create it with ``await Session.builder....create()``.

    Queries run through its executor (``_executor``), held by its ``SessionCore``
    (``_core``: what its queries, transactions and pool share). If the task awaiting
    a query is cancelled, the query is aborted on the server (bounded by
    ``cancel_timeout``) and the cancellation re-raised. ``aclose()`` aborts everything
    still running and logs out.
    """

    builder: ClassVar[SessionBuilder] = _BuilderProperty()  # type: ignore[assignment]

    def __init__(
        self,
        connection: Any,
        *,
        driver: Driver,
        config: ResolvedConfig,
        cancel_timeout: float = DEFAULT_CANCEL_TIMEOUT,
        max_concurrent_queries: int = DEFAULT_MAX_CONCURRENT_QUERIES,
        query_tag: str | None = None,
        autocommit: bool = True,
        on_close: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self._driver = driver
        self._config = config
        self._query_tag = query_tag
        self._core = SessionCore(
            connection,
            driver=driver,
            cancel_timeout=cancel_timeout,
            max_concurrent_queries=max_concurrent_queries,
            autocommit=autocommit,
        )
        #: Its queries' runner (``self._core.runner``), which nearly every method uses.
        self._runner = self._core.runner
        self._close_done: anyio.Event | None = None
        #: Run after logout (e.g. release the embedded emulator of ``local_testing``).
        self._on_close = tuple(on_close)

    def __repr__(self) -> str:
        params = redact(self._config.connect_kwargs)
        state = "closed" if self.is_closed else f"session_id={self.session_id}"
        where = params.get("account") or params.get("host")
        return f"<AsyncSession {state} account={where!r} user={params.get('user')!r}>"

    # ---- properties ------------------------------------------------------------------
    @property
    def connection(self) -> Any:
        """The underlying ``snowflake.connector`` connection."""
        return self._core.connection

    @property
    def session_id(self) -> int:
        return self._core.session_id

    @property
    def is_closed(self) -> bool:
        return self._runner.closed

    @property
    def is_alive(self) -> bool:
        """False once closed, or once the server said the session is gone (no round trip:
        True means no statement has been refused yet, not that the server checked)."""
        return not self.is_closed and self._core.gone is None

    @property
    def in_transaction(self) -> bool:
        """Whether a transaction is (or may be) open: ``transaction()``'s, or a ``BEGIN``
        sent with ``sql()`` (tracked from the statements' text, no round trip)."""
        return self._core.state.in_transaction

    @property
    def cancel_timeout(self) -> float:
        return self._core.registry.cancel_timeout

    @property
    def max_concurrent_queries(self) -> int:
        return self._runner.max_concurrent_queries

    @property
    def running_queries(self) -> RunningQueries:
        """A snapshot of the queries this session has in flight (a tuple of ``RunningQuery``).

        ``query_id in session.running_queries`` is true for every query whose id the server
        has told (submitted queries and jobs: from submission); ``.without_id`` lists the
        one-round-trip queries whose reply has not come yet.
        """
        return self._runner.running

    @property
    def query_tag(self) -> str | None:
        return self._query_tag

    # ---- queries ---------------------------------------------------------------------
    def sql(
        self,
        query: str,
        params: Sequence[Any] | None = None,
        *,
        query_tag: str | None = None,
        timeout: float | None = None,
        statement_params: Mapping[str, str | int | float | bool] | None = None,
    ) -> SqlQuery:
        """A lazy query: nothing runs until ``collect()``, ``to_pandas()``, … is awaited.

        ``query_tag``, ``timeout`` (seconds, rounded up to whole seconds; the server stops
        the query, error 000630) and ``statement_params`` apply to this statement only.
        """
        from ._query import SqlQuery

        options = statement_options(query_tag, timeout, statement_params)
        return SqlQuery(self, self._runner, query, params, options)

    def transaction(self) -> Transaction:
        """``async with session.transaction():`` BEGIN … COMMIT, ROLLBACK on error or cancel.

        Statements of the task inside the block, and of tasks it starts there, run in the
        transaction; statements of other tasks wait until it ends. Not nestable (Snowflake
        has no savepoints); ``collect_nowait()`` inside it is a ``TransactionError``.
        """
        return Transaction(self, self._core)

    async def collect_many(
        self, queries: Sequence[QueryInput], *, limit: int | None = None
    ) -> list[list[Any]]:
        """Run many queries at once (at most ``limit`` in flight); results in input order.

        The first failure aborts the others on the server and is raised.
        """
        from ._query import collect_many

        return await collect_many(self, queries, limit=limit)

    # ---- jobs ------------------------------------------------------------------------
    async def create_async_job(self, query_id: str) -> AsyncJob:
        """Track a query submitted elsewhere (same user) by its id."""
        from ._job import AsyncJob

        self._runner.check_open("create an async job")
        if not isinstance(query_id, str) or not query_id.strip():
            raise ValueError(f"query_id must be a non-empty str, not {query_id!r}")
        if not re.match(_QUERY_ID, query_id.strip()):
            # The server would report such an id as NO_DATA ("not yet known"), forever.
            raise ValueError(f"query_id must be a Snowflake query id (a UUID), not {query_id!r}")
        return AsyncJob(self, self._runner, self._runner.track_job(query_id.strip()))

    # ---- context -------------------------------------------------------------------
    async def set_query_tag(self, tag: str | None) -> None:
        if tag is None or tag == "":
            await self._runner.run(
                "alter session unset query_tag", None, ignore_result, operation="set the query tag"
            )
        else:
            literal = tag.replace("\\", "\\\\").replace("'", "''")
            await self._runner.run(
                f"alter session set query_tag = '{literal}'",
                None,
                ignore_result,
                operation="set the query tag",
            )
        self._query_tag = tag or None

    async def get_current_database(self) -> str | None:
        return _as_text(
            await self._core.scalar("select current_database()", "get the current database")
        )

    async def get_current_schema(self) -> str | None:
        return _as_text(
            await self._core.scalar("select current_schema()", "get the current schema")
        )

    async def get_current_warehouse(self) -> str | None:
        return _as_text(
            await self._core.scalar("select current_warehouse()", "get the current warehouse")
        )

    async def get_current_role(self) -> str | None:
        return _as_text(await self._core.scalar("select current_role()", "get the current role"))

    async def get_current_account(self) -> str | None:
        return _as_text(
            await self._core.scalar("select current_account()", "get the current account")
        )

    async def get_current_user(self) -> str | None:
        return _as_text(await self._core.scalar("select current_user()", "get the current user"))

    async def use_database(self, name: str) -> None:
        await self._use("database", name)

    async def use_schema(self, name: str) -> None:
        await self._use("schema", name)

    async def use_warehouse(self, name: str) -> None:
        await self._use("warehouse", name)

    async def use_role(self, name: str) -> None:
        await self._use("role", name)

    async def _use(self, kind: str, name: str) -> None:
        parts = name.split(".") if isinstance(name, str) and '"' not in name else [name]
        if not isinstance(name, str) or not all(re.match(_IDENTIFIER, p) for p in parts):
            raise ValueError(
                f"invalid {kind} name {name!r}: use an unquoted identifier "
                '(letters, digits, _ and $) or a double-quoted one ("My Name")'
            )
        await self._runner.run(f"use {kind} {name}", None, ignore_result, operation=f"use a {kind}")

    # ---- cancellation and closing ----------------------------------------------------
    async def cancel_all(self) -> None:
        """Abort every query this session has running; their awaiters get QueryCancelledError.

        With several running, one ``SYSTEM$CANCEL_ALL_QUERIES`` goes first (it stops every
        query of the session, ours or not), then each of ours is confirmed.
        """
        await self._runner.abort_all("cancel_all()")

    async def aclose(self) -> None:
        """Refuse new queries, abort the running ones on the server, log out. Idempotent."""
        with anyio.CancelScope(shield=True):
            if self._close_done is not None:
                await self._close_done.wait()
                return
            self._runner.closed = True
            self._close_done = anyio.Event()
            self._core.gate.notify()  # statements waiting for a transaction: SessionClosedError
            try:
                await self._runner.abort_all("aclose()")
                await self._logout()
                await self._runner.close_http()
                for callback in self._on_close:
                    await callback()
            finally:
                self._close_done.set()

    close = aclose

    async def _logout(self) -> None:
        connection = self._core.connection
        with anyio.move_on_after(self.cancel_timeout) as scope:
            try:
                await self._runner.logout(lambda: self._driver.logout(connection))
            except Exception as e:
                logger.warning(
                    "logging out of session %s failed: %s", session_id_for_log(connection), e
                )
        if scope.cancelled_caught:
            logger.warning(
                "logging out of session %s did not finish within cancel_timeout=%gs",
                session_id_for_log(connection),
                self.cancel_timeout,
            )


#: The Snowpark name: ``from asyncsession import Session``.
Session = AsyncSession


def core_of(session: AsyncSession) -> SessionCore:
    """The session's ``SessionCore``: the seam a pool (``_pool``, ``_lease``) works through."""
    return session._core


def _as_text(value: Any) -> str | None:
    return None if value is None else str(value)
