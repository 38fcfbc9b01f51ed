"""``AsyncJob``: a query submitted without waiting (``collect_nowait``), tracked by id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, NoReturn

import anyio
from snowflake.connector.errors import Error

from ._errors import CANCELED_ERRNO, QueryCancelledError, SessionClosedError, TransactionError
from ._registry import RunningQuery
from ._row import Row
from ._state import classify
from ._threads import WorkerCall

if TYPE_CHECKING:
    from ._session import AsyncSession
    from ._statement_options import StatementOptions

#: Status polling: first gap, growth factor and cap (seconds). Polls hold no thread
#: while they wait, only for the round trip itself.
POLL_FIRST = 0.01
POLL_GROWTH = 1.5
POLL_MAX = 0.5

ResultType = Literal["row", "pandas", "no_result"]


async def submit(
    session: AsyncSession,
    sql_text: str,
    params: Sequence[Any] | None,
    options: StatementOptions | None = None,
) -> AsyncJob:
    session._check_open("submit a query")
    if session._gate.inside():
        raise TransactionError(
            "collect_nowait() cannot run inside a transaction: Snowflake does not run async "
            "queries and transaction control in parallel on one session; await the query "
            "(collect(), …) instead"
        )
    counted = await session._gate.admit(lambda: session._check_open("submit a query"))
    try:
        return await _submit(session, sql_text, params, options)
    finally:
        session._gate.leave(counted)


async def _submit(
    session: AsyncSession,
    sql_text: str,
    params: Sequence[Any] | None,
    options: StatementOptions | None,
) -> AsyncJob:
    effect = classify(sql_text)
    statement_params = options.parameters() if options is not None else None
    driver = session._driver
    connection = session.connection
    registry = session._registry
    # Tracked while it is being submitted, so that a cancelled collect_nowait(), a
    # cancel_all() or an aclose() aborts it once its query id is known.
    submission = registry.add(sql_text)
    submission.submitting = True

    def work() -> str:
        cursor = connection.cursor()
        try:
            query_id: str = driver.submit(cursor, sql_text, params, statement_params)
            submission.query_id = query_id
            return query_id
        finally:
            cursor.close()

    # The submission itself is one short round trip; the query id comes back with it.
    # Session state: what the statement may change counts from its submission on (a job's
    # end is not tracked, so a BEGIN submitted this way counts as open).
    session._state.started(effect)
    session._state.finished(effect, False)
    query_id = await registry.run(submission, WorkerCall(work), session._control_limiter)
    if submission.cancel_reason is not None:  # aborted by cancel_all()/aclose() meanwhile
        raise QueryCancelledError(query_id, submission.cancel_reason)
    # The same object goes on as the job's: an abort already planned for the submission
    # (a cancel_all() whose abort task has not started yet) then aborts the job, and
    # says why.
    submission.submitting = False
    submission.call = None
    registry.track(submission)
    return AsyncJob(session, submission)


class AsyncJob:
    """A running (or finished) query, known by its id."""

    def __init__(self, session: AsyncSession, query: RunningQuery) -> None:
        assert query.query_id is not None
        self._session = session
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
        """One status round trip: (status name, ended); an ended job leaves the registry."""
        session = self._session
        session._check_open("poll a job")
        connection = session.connection
        try:
            status = await session._control(lambda: connection.get_query_status(self._query_id))
        except Error as e:  # e.g. "Connection is closed": aclose() won the race
            self._reraise(e)
        ended = not connection.is_still_running(status)
        if ended:
            self._session._registry.discard(self._query)
        return str(status.name), bool(ended)

    async def status(self) -> str:
        """The server's status name: RUNNING, QUEUED, SUCCESS, FAILED_WITH_ERROR, ABORTED, …"""
        return (await self._poll())[0]

    async def is_done(self) -> bool:
        return (await self._poll())[1]

    async def cancel(self) -> None:
        """Abort the query on the server; ``result()`` then raises QueryCancelledError."""
        self._session._check_open("cancel a job")
        await self._session._registry.abort(self._query, "job.cancel()")

    async def result(self, result_type: ResultType = "row") -> Any:
        """Wait for the query to end and return its result (rows by default).

        If the task awaiting this is cancelled, the query is aborted on the server, as for
        any other awaited query.
        """
        if result_type not in ("row", "pandas", "no_result"):
            raise ValueError(
                f"result_type must be 'row', 'pandas' or 'no_result', not {result_type!r}"
            )
        session = self._session
        session._check_open("wait for a job")
        try:
            await self._wait_done()
        except anyio.get_cancelled_exc_class():
            await session._registry.abort(self._query, "cancelled")
            raise
        except Error as e:
            self._reraise(e)
        session._registry.discard(self._query)
        if result_type == "no_result":
            await self._raise_if_failed()
            return None
        driver, connection, query_id = session._driver, session.connection, self._query_id

        def fetch() -> Any:
            cursor = connection.cursor()
            try:
                driver.fetch_results(cursor, query_id)
                if result_type == "pandas":
                    return cursor.fetch_pandas_all()
                rows = cursor.fetchall()  # 4.x fills description on the first fetch
                make = Row._factory(tuple(d[0] for d in cursor.description or ()))
                return [make(r) for r in rows]
            finally:
                cursor.close()

        try:
            return await session._in_thread(fetch)
        except Error as e:
            self._reraise(e)
        except Exception as e:
            # 5.x: closing the cursor of a connection closed under it can raise a raw
            # LookupError (the connector's error-handler context variable).
            if session.is_closed:
                raise SessionClosedError("wait for a job") from e
            raise

    async def _wait_done(self) -> None:
        gap = POLL_FIRST
        while not (await self._poll())[1]:
            await anyio.sleep(gap)
            gap = min(gap * POLL_GROWTH, POLL_MAX)

    async def _raise_if_failed(self) -> None:
        connection = self._session.connection
        try:
            await self._session._control(
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
        reason = self._query.cancel_reason
        if reason is not None and (error.errno == CANCELED_ERRNO or self._session.is_closed):
            return QueryCancelledError(self._query_id, reason)
        if self._session.is_closed:
            return SessionClosedError("wait for a job")
        return self._session._registry.translate(error)
