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

    A submission is what ``cursor.execute_async`` does, with the core's async driver for
    its one request; a result is what ``cursor.query_result`` loads, awaited: the core
    waits for the query to end without a thread of ours, then a worker loads the reply
    into a cursor (``load_result``: for a multi-statement reply, that is a request more).
    """

    def __init__(self) -> None:
        from snowflake.connector._internal.api_client.client_api import async_core_driver
        from snowflake.connector._internal.statement_utils import statement

        self._core = async_core_driver
        self._statement = statement

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

    async def submit(
        self,
        connection: Any,
        sql_text: str,
        params: Any,
        statement_params: dict[str, Any] | None,
    ) -> str:
        """Submit with ``asyncExec``; return the query id (one request, no thread)."""
        cursor = connection.cursor()
        try:
            parameters = cursor._collect_statement_params(
                skip_upload_on_content_match=False, statement_params=statement_params
            )
            query, binding_params = cursor._prepare_query(sql_text, params)
            with self._statement(connection.conn_handle, query) as statement:
                cursor._apply_statement_parameters(statement, parameters)
                bindings = (
                    cursor._build_query_bindings(binding_params, query)
                    if binding_params is not None
                    else None
                )
                response = await self._core.statement_execute_async(
                    stmt_handle=statement, bindings=bindings
                )
        finally:
            cursor.close()
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
