"""``session.sql(...)``: a lazy query and the ways to get its results."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar, overload

import anyio

from ._errors import SessionClosedError
from ._row import Row, RowBatch
from ._statement_options import StatementOptions

if TYPE_CHECKING:
    import pandas
    import pyarrow

    from ._executor import QueryRunner
    from ._job import AsyncJob
    from ._session import AsyncSession

T = TypeVar("T")

#: Rows fetched per worker-thread hop when streaming rows.
STREAM_BATCH_ROWS = 10_000


def _check_params(params: Sequence[Any] | None) -> list[Any] | None:
    if params is None:
        return None
    if isinstance(params, (str, bytes)) or not isinstance(params, Sequence):
        raise TypeError(
            f"params must be a list or tuple of values for the ? placeholders, "
            f"not {type(params).__name__}"
        )
    return list(params)


def _fields(cursor: Any) -> tuple[str, ...]:
    return tuple(d[0] for d in cursor.description or ())


def _rows(cursor: Any, rows: list[Any]) -> list[Row]:
    return Row._batch_factory(_fields(cursor))(rows)


class SqlQuery:
    """A SQL statement with its parameters; awaiting one of its methods runs it.

    Its per-statement options (``query_tag``, ``timeout``, ``statement_params`` given to
    ``session.sql()``) go with every way of running it: results, streams and jobs.
    """

    __slots__ = ("_options", "_params", "_runner", "_session", "_sql")

    def __init__(
        self,
        session: AsyncSession,
        runner: QueryRunner,
        sql: str,
        params: Sequence[Any] | None = None,
        options: StatementOptions | None = None,
    ) -> None:
        if not isinstance(sql, str) or not sql.strip():
            raise ValueError(f"query must be a non-empty SQL string, not {sql!r}")
        #: Only handed to the jobs it starts (``AsyncJob.session``); it runs through ``runner``.
        self._session = session
        self._runner = runner
        self._sql = sql
        self._params = _check_params(params)
        self._options = options

    def __repr__(self) -> str:
        return f"<SqlQuery {self._sql[:80]!r}>"

    @property
    def sql_text(self) -> str:
        return self._sql

    async def _run(self, consume: Callable[[Any], T], operation: str) -> T:
        return await self._runner.run(
            self._sql, self._params, consume, operation=operation, options=self._options
        )

    async def _open_cursor(self) -> Any:
        """Run it and keep its cursor open, for a stream to fetch from."""
        return await self._runner.run(
            self._sql,
            self._params,
            _keep,
            operation="stream a query",
            keep_cursor=True,
            options=self._options,
        )

    async def collect(self) -> list[Row]:
        """All rows, as ``Row`` objects."""
        return await self._run(lambda c: _rows(c, c.fetchall()), "collect a query")

    @overload
    async def first(self, n: None = None) -> Row | None: ...
    @overload
    async def first(self, n: int) -> list[Row]: ...

    async def first(self, n: int | None = None) -> Row | list[Row] | None:
        """The first row (``None`` if there is none), or the first ``n`` rows as a list."""
        if n is None:
            rows = await self._run(lambda c: _rows(c, c.fetchmany(1)), "fetch the first row")
            return rows[0] if rows else None
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, not {n!r}")
        return await self._run(lambda c: _rows(c, c.fetchmany(n)), "fetch the first rows")

    async def to_pandas(self) -> pandas.DataFrame:
        return await self._run(lambda c: c.fetch_pandas_all(), "fetch a pandas DataFrame")

    async def to_arrow(self) -> pyarrow.Table:
        def fetch(cursor: Any) -> pyarrow.Table:
            table = cursor.fetch_arrow_all(force_return_table=True)
            return table

        return await self._run(fetch, "fetch an Arrow table")

    def to_local_iterator(self, *, batch_rows: int = STREAM_BATCH_ROWS) -> ResultStream[Row]:
        """Stream rows with bounded memory: ``async for row in q.to_local_iterator()``.

        Fetches ``batch_rows`` rows per worker-thread hop; a step within a batch neither
        suspends nor fetches. ``to_row_batches()`` hands over a batch at a time instead.
        """
        return ResultStream(
            self._runner, self._open_cursor, _tuple_batches(batch_rows), flatten=True
        )

    def to_row_batches(self, *, batch_rows: int = STREAM_BATCH_ROWS) -> ResultStream[RowBatch]:
        """Stream rows a ``RowBatch`` (up to ``batch_rows`` rows) at a time, bounded memory.

        One ``await`` per batch. A ``RowBatch`` holds the driver's tuples and makes each
        ``Row`` as it is read; ``batch.tuples()`` skips the Rows altogether.
        """
        return ResultStream(
            self._runner, self._open_cursor, _row_batches(batch_rows), flatten=False
        )

    def to_arrow_batches(self) -> ResultStream[pyarrow.Table]:
        return ResultStream(
            self._runner, self._open_cursor, lambda c: iter(c.fetch_arrow_batches()), flatten=False
        )

    def to_pandas_batches(self) -> ResultStream[pandas.DataFrame]:
        return ResultStream(
            self._runner, self._open_cursor, lambda c: iter(c.fetch_pandas_batches()), flatten=False
        )

    async def collect_nowait(self) -> AsyncJob:
        """Submit the query and return at once; the ``AsyncJob`` tracks it."""
        from ._job import AsyncJob

        query = await self._runner.submit_job(self._sql, self._params, self._options)
        return AsyncJob(self._session, self._runner, query)


class ResultStream(Generic[T]):
    """An async iterator over a query's results that holds one batch at a time.

    The query runs on first iteration. Close it (``async with`` or ``aclose()``) if you
    stop early; exhausting it closes it too.
    """

    def __init__(
        self,
        runner: QueryRunner,
        open_cursor: Callable[[], Awaitable[Any]],
        batches: Callable[[Any], Iterator[Any]],
        *,
        flatten: bool,
    ) -> None:
        self._runner = runner
        #: Runs the query (``SqlQuery._open_cursor``) on first iteration.
        self._open_cursor = open_cursor
        self._make_batches = batches
        self._flatten = flatten
        self._cursor: Any = None
        self._batches: Iterator[Any] | None = None
        # Flattened streams buffer the driver's plain tuples and make each Row only as it
        # is handed out: a Row is a GC-tracked object, and a whole batch of them alive at
        # once gets promoted to the oldest generation and makes the collector walk the
        # heap again and again (most of the time a 1 M-row stream took); a Row made per
        # step dies by refcount before any collection sees it.
        self._pending: Iterator[Any] = iter(())
        self._make: Callable[[Any], Any] = _identity
        self._closed = False

    def __aiter__(self) -> ResultStream[T]:
        return self

    async def __anext__(self) -> T:
        # The per-row path: no await, no checkpoint until the buffer runs dry (as before:
        # the loop is only yielded to when a batch is fetched).
        try:
            return next(self._pending)  # type: ignore[no-any-return]
        except StopIteration:
            pass
        return await self._refill()

    async def _refill(self) -> T:
        while True:
            if self._closed:
                raise StopAsyncIteration
            batch = await self._next_batch()
            if batch is _END:
                await self.aclose()
                raise StopAsyncIteration
            if not self._flatten:
                return batch  # type: ignore[no-any-return]
            # map() makes each Row from C as it is stepped to: ~4 % less CPU per step
            # than calling the factory from __anext__.
            self._pending = map(self._make, batch)
            try:
                return next(self._pending)  # type: ignore[no-any-return]
            except StopIteration:
                continue  # an empty batch: fetch the next one

    async def _next_batch(self) -> Any:
        runner = self._runner
        if self._cursor is None:
            self._cursor = await self._open_cursor()
            self._batches = self._make_batches(self._cursor)
            if self._flatten:
                self._make = Row._factory(_fields(self._cursor))
        batches = self._batches
        assert batches is not None
        try:
            return await runner.in_thread(lambda: next(batches, _END))
        except Exception as e:
            # 5.x refuses to fetch batches once the connection is closed ("Cursor is
            # closed"): say why, as every other operation on a closed session does.
            if runner.closed:
                raise SessionClosedError("stream a query") from e
            raise

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pending = iter(())
        cursor, self._cursor = self._cursor, None
        if cursor is not None:
            with anyio.CancelScope(shield=True):
                await self._runner.control(cursor.close)

    async def __aenter__(self) -> ResultStream[T]:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


_END: Any = object()


def _check_batch_rows(batch_rows: int) -> None:
    if not isinstance(batch_rows, int) or isinstance(batch_rows, bool) or batch_rows < 1:
        raise ValueError(f"batch_rows must be a positive int, not {batch_rows!r}")


def _tuple_batches(batch_rows: int) -> Callable[[Any], Iterator[list[Any]]]:
    """The driver's own row tuples, ``batch_rows`` per hop (Rows are made per step)."""
    _check_batch_rows(batch_rows)

    def batches(cursor: Any) -> Iterator[list[Any]]:
        while rows := cursor.fetchmany(batch_rows):
            yield rows

    return batches


def _row_batches(batch_rows: int) -> Callable[[Any], Iterator[RowBatch]]:
    _check_batch_rows(batch_rows)

    def batches(cursor: Any) -> Iterator[RowBatch]:
        fields = _fields(cursor)
        make = Row._factory(fields)  # one factory for the result: one Row class
        while rows := cursor.fetchmany(batch_rows):
            yield RowBatch._of(rows, fields, make)

    return batches


def _keep(cursor: Any) -> Any:
    return cursor


def _identity(item: Any) -> Any:
    return item


QueryInput: TypeAlias = str | SqlQuery | tuple[str, Sequence[Any]]


def _as_query(session: AsyncSession, item: QueryInput) -> SqlQuery:
    if isinstance(item, SqlQuery):
        return item
    if isinstance(item, str):
        return session.sql(item)
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
        return session.sql(item[0], item[1])
    raise TypeError(
        f"each query must be a SQL string, a (sql, params) tuple or session.sql(...), "
        f"not {type(item).__name__}"
    )


#: ``collect_many`` lets the loop turn after starting this many tasks.
SPAWNS_PER_TURN = 16


async def collect_many(
    session: AsyncSession, queries: Sequence[QueryInput], *, limit: int | None = None
) -> list[list[Any]]:
    """Collect many queries concurrently; the first failure aborts the rest and is raised."""
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"limit must be a positive int or None, not {limit!r}")
    items = [_as_query(session, q) for q in queries]
    results: list[list[Any]] = [[] for _ in items]
    limiter = anyio.CapacityLimiter(limit or max(1, len(items)))

    async def one(index: int, query: SqlQuery) -> None:
        async with limiter:
            results[index] = await query.collect()

    try:
        async with anyio.create_task_group() as tg:
            for index, query in enumerate(items):
                tg.start_soon(one, index, query)
                if index % SPAWNS_PER_TURN == SPAWNS_PER_TURN - 1:
                    # Starting a thousand tasks in one go would hold the loop for tens
                    # of milliseconds; the executor's turnstile admits 16 a turn anyway.
                    await anyio.lowlevel.checkpoint()
    except BaseExceptionGroup as group:
        # anyio semantics, but hand back the failure itself when there is just one.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
    return results


# Shown under its public name (``asyncsession`` imports this module on first use, see
# __init__.py), also when this module is imported before that name is looked up.
ResultStream.__module__ = "asyncsession"
SqlQuery.__module__ = "asyncsession"
