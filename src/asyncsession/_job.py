"""``AsyncJob``: a query submitted without waiting (``collect_nowait``), tracked by id."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, NoReturn

from snowflake.connector.errors import Error

from ._errors import QueryCancelledError, SessionClosedError
from ._registry import RunningQuery
from ._row import Row

if TYPE_CHECKING:
    from ._executor import QueryRunner
    from ._session import AsyncSession

ResultType = Literal["row", "pandas", "no_result"]


class AsyncJob:
    """A running (or finished) query, known by its id."""

    def __init__(self, session: AsyncSession, runner: QueryRunner, query: RunningQuery) -> None:
        assert query.query_id is not None
        self._session = session
        self._runner = runner
        self._query = query
        self._query_id: str = query.query_id

    def __repr__(self) -> str:
        return f"<AsyncJob query_id={self._query_id!r}>"

    @property
    def query_id(self) -> str:
        return self._query_id

    @property
    def session(self) -> AsyncSession:
        return self._session

    async def _poll(self) -> tuple[str, bool]:
        """One status request, in the session poller's pace: (status name, ended)."""
        runner = self._runner
        runner.check_open("poll a job")
        try:
            name, running = await runner.status(self._query)
        except Error as e:  # e.g. "Connection is closed": aclose() won the race
            self._reraise(e)
        return name, not running

    async def status(self) -> str:
        """The server's status name: RUNNING, QUEUED, SUCCESS, FAILED_WITH_ERROR, ABORTED, …"""
        return (await self._poll())[0]

    async def is_done(self) -> bool:
        return (await self._poll())[1]

    async def cancel(self) -> None:
        """Abort the query on the server; ``result()`` then raises QueryCancelledError."""
        self._runner.check_open("cancel a job")
        await self._runner.abort(self._query, "job.cancel()")

    async def result(self, result_type: ResultType = "row") -> Any:
        """Wait for the query to end and return its result (rows by default).

        Waiting shares the session's status poller with its other submitted queries. If
        the task awaiting this is cancelled, the query is aborted on the server, as for any
        other awaited query.
        """
        if result_type not in ("row", "pandas", "no_result"):
            raise ValueError(
                f"result_type must be 'row', 'pandas' or 'no_result', not {result_type!r}"
            )
        runner = self._runner
        runner.check_open("wait for a job")
        try:
            await runner.wait(self._query, "wait for a job")
        except Error as e:
            self._reraise(e)
        runner.registry.discard(self._query)
        if result_type == "no_result":
            await self._raise_if_failed()
            return None

        def consume(cursor: Any) -> Any:
            if result_type == "pandas":
                return cursor.fetch_pandas_all()
            rows = cursor.fetchall()  # 4.x fills description on the first fetch
            return Row._batch_factory(tuple(d[0] for d in cursor.description or ()))(rows)

        try:
            return await runner.fetch(self._query_id, consume)
        except Error as e:
            self._reraise(e)
        except Exception as e:
            # 5.x: closing the cursor of a connection closed under it can raise a raw
            # LookupError (the connector's error-handler context variable).
            if runner.closed:
                raise SessionClosedError("wait for a job") from e
            raise

    async def _raise_if_failed(self) -> None:
        connection = self._session.connection
        try:
            await self._runner.in_thread(
                lambda: connection.get_query_status_throw_if_error(self._query_id)
            )
        except Error as e:
            self._reraise(e)

    def _reraise(self, error: Error) -> NoReturn:
        translated = self._translate(error)
        if translated is error:
            raise error
        raise translated from error

    def _translate(self, error: Error) -> Exception:
        """Our error for a job aborted by us, whose session was closed under it, or died."""
        if isinstance(error, QueryCancelledError):
            return error
        return self._runner.translate(self._query, error, "wait for a job")


# Shown under its public name (``asyncsession`` imports this module on first use, see
# __init__.py), also when this module is imported before that name is looked up.
AsyncJob.__module__ = "asyncsession"
