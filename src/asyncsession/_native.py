"""Where the 5.x connector's own awaitables meet the event loop (asyncio only).

Connector 5.x sends its requests from a native core; the core's async driver returns
awaitables that run as tasks of the core's own runtime and hold no Python thread while
they wait for the server. They complete through the running asyncio loop, so they work
under asyncio only: under trio (and on 4.x) the executor keeps its thread paths.

``NativeCall`` runs one such awaitable as an asyncio task of its own. Like a
``WorkerCall``'s thread, the task goes on when its awaiter is cancelled (a submission
must still return its query id, for the abort), and an aborter can await its end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio

if TYPE_CHECKING:
    import asyncio

T = TypeVar("T")


def asyncio_running() -> bool:
    """Whether the current task runs on an asyncio event loop (not trio)."""
    import sys

    asyncio = sys.modules.get("asyncio")  # not imported: no asyncio loop can run
    if asyncio is None:
        return False
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _retrieve(task: asyncio.Future[Any]) -> None:
    # An abandoned task's failure is its awaiter's business, who has gone: never logged
    # as "exception was never retrieved".
    if not task.cancelled():
        task.exception()


class NativeCall(Generic[T]):
    """One awaitable of the 5.x core, run as a task whose end can be awaited after abandonment."""

    __slots__ = ("_factory", "_skipped", "_task")

    def __init__(self, factory: Callable[[], Awaitable[T]]) -> None:
        self._factory = factory
        self._task: asyncio.Future[T] | None = None
        self._skipped = False

    async def start(self, limiter: anyio.CapacityLimiter | None = None) -> T:
        """Run the call (no thread, so no limiter); on cancellation the task goes on."""
        import asyncio

        if self._skipped:
            raise RuntimeError("call skipped: cancelled before it started")
        task = self._task = asyncio.ensure_future(self._factory())
        task.add_done_callback(_retrieve)
        return await asyncio.shield(task)

    def skip_if_not_started(self) -> bool:
        """Make sure the call never runs, if it has not started yet."""
        if self._task is not None:
            return False
        self._skipped = True
        return True

    @property
    def is_started(self) -> bool:
        return self._task is not None

    @property
    def is_finished(self) -> bool:
        return self._skipped or (self._task is not None and self._task.done())

    async def wait_finished(self) -> None:
        """Wait until the task has ended (the caller bounds this with a timeout)."""
        import asyncio

        if self._task is not None and not self._task.done():
            await asyncio.wait((self._task,))


#: The 5.x cursor's private steps ``NativeCore`` reuses around the one awaited call: if a
#: release lacks one, there is no native path (the thread paths work on every release).
_CURSOR_STEPS = (
    "_collect_statement_params",
    "_prepare_query",
    "_apply_statement_parameters",
    "_build_query_bindings",
    "_apply_result_set",
    "_handle_multi_statement_response",
    "reset",
)


class NativeCore:
    """The 5.x core's awaitable calls asyncsession makes on a (sync) connection's handle.

    A submission is what ``cursor.execute_async`` does: a worker prepares the statement
    (``prepare``), then the core's async driver sends its one request (``submit``); a
    result is what ``cursor.query_result`` loads, awaited: the core waits for the query
    to end without a thread of ours, then a worker loads the reply into a cursor
    (``load_result``: for a multi-statement reply, that is a request more).
    """

    def __init__(self) -> None:
        from snowflake.connector._internal.api_client.client_api import (
            async_core_driver,
            core_driver,
        )
        from snowflake.connector.cursor import SnowflakeCursor

        self._core = async_core_driver
        self._sync = core_driver
        pattern = getattr(SnowflakeCursor, "_BARE_DESC_SQL_RE", None)
        self._bare_desc: Callable[[str], bool] = (
            (lambda sql: pattern.match(sql) is not None) if pattern is not None else bool
        )

    @classmethod
    def load(cls) -> NativeCore | None:
        """The native core of the installed 5.x connector, or ``None`` if it has none we know."""
        try:
            from snowflake.connector.cursor import SnowflakeCursor

            if not all(hasattr(SnowflakeCursor, step) for step in _CURSOR_STEPS):
                return None
            return cls()
        except ImportError:
            return None

    def needs_preparing(
        self, sql_text: str, params: Any, statement_params: dict[str, Any] | None
    ) -> bool:
        """Whether a statement needs the cursor's steps (``prepare``, in a worker), or is
        sent as it is (``new_statement``, on the loop): no parameters, no per-statement
        options, and not a bare ``DESC`` (which the cursor rewrites)."""
        return params is not None or bool(statement_params) or self._bare_desc(sql_text)

    async def new_statement(self, connection: Any, sql_text: str) -> tuple[Any, Any, object]:
        """A statement handle for ``sql_text`` as it is, made with awaitable core calls."""
        response = await self._core.statement_new(conn_handle=connection.conn_handle)
        statement = response.stmt_handle
        try:
            await self._core.statement_set_query(statement, sql_text)
        except BaseException:
            await self._core.statement_release(stmt_handle=statement)
            raise
        return statement, None, None

    def prepare(
        self,
        connection: Any,
        sql_text: str,
        params: Any,
        statement_params: dict[str, Any] | None,
    ) -> tuple[Any, Any, object]:
        """In a worker: a statement handle, its bindings and the bytes they point into
        (kept alive until the request has gone), as ``cursor.execute_async``
        makes them. Every public 5.x call here (``cursor()``, ``close()``) asks the core for
        parameters, and a blocking core call gives up the GIL: on the event loop, getting
        it back behind busy threads would stall the loop for milliseconds per call."""
        cursor = connection.cursor()
        statement = None
        try:
            parameters = cursor._collect_statement_params(
                skip_upload_on_content_match=False, statement_params=statement_params
            )
            query, binding_params = cursor._prepare_query(sql_text, params)
            statement = self._sync.statement_new(conn_handle=connection.conn_handle).stmt_handle
            self._sync.statement_set_query(statement, query)
            cursor._apply_statement_parameters(statement, parameters)
            bindings = (
                cursor._build_query_bindings(binding_params, query)
                if binding_params is not None
                else None
            )
            # The bindings point into these bytes, which the cursor keeps until closed.
            bound_bytes = getattr(cursor, "_binding_data", None)
        except BaseException:
            if statement is not None:
                self._sync.statement_release(stmt_handle=statement)
            raise
        finally:
            cursor.close()
        return statement, bindings, bound_bytes

    async def submit(self, prepared: tuple[Any, Any, object]) -> str:
        """Submit a prepared statement with ``asyncExec``; return the query id (one request,
        no thread). The statement is released after, whatever happens."""
        statement, bindings, _bound_bytes = prepared
        try:
            response = await self._core.statement_execute_async(
                stmt_handle=statement, bindings=bindings
            )
        finally:
            await self._core.statement_release(stmt_handle=statement)
        query_id: str = response.query_id
        return query_id

    async def result(self, connection: Any, query_id: str) -> Any:
        """Wait for the query to end and return its result reply (its error if it failed)."""
        return await self._core.connection_get_query_result(
            conn_handle=connection.conn_handle, query_id=query_id
        )

    async def status(self, connection: Any, query_id: str) -> tuple[str, bool]:
        """One status request: (status name, still running), as ``query_status`` reads it."""
        from snowflake.connector.constants import QueryStatus

        response = await self._core.connection_get_query_status(
            conn_handle=connection.conn_handle, query_id=query_id
        )
        try:
            status = QueryStatus[response.status_name]
        except KeyError:
            status = QueryStatus.NO_DATA  # as the connector reads an unknown name
        return status.name, bool(connection.is_still_running(status))

    @staticmethod
    def load_result(cursor: Any, reply: Any) -> None:
        """In a worker: load a result reply into ``cursor`` (``cursor.query_result``'s steps)."""
        cursor.reset()
        if reply.HasField("multi"):
            cursor._handle_multi_statement_response(reply.multi, query=None, request_id=None)
        else:
            cursor._apply_result_set(reply.single, query=None)
        cursor._rownumber = -1
