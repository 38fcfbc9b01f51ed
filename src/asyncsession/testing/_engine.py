"""The emulator's SQL engine: fakesnow on DuckDB, extended from outside.

fakesnow gives one DuckDB connection per session, so two queries at once on a session
collide. Here each session owns a small pool of fakesnow connections over one shared
in-memory DuckDB; a query borrows one, after syncing the session's current database and
schema into it, and hands back any ``USE`` it ran. Everything in this module is
synchronous and runs in the server's worker threads.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import snowflake.connector.errors as sf_errors
import sqlglot.errors
from duckdb import sqltypes
from fakesnow.arrow import to_sf
from fakesnow.converter import from_binding
from fakesnow.fakes import FakeSnowflakeConnection
from fakesnow.instance import FakeSnow
from fakesnow.rowtype import describe_as_rowtype
from fakesnow.statement_type import DML_TYPE_IDS, statement_type_id

from ._results import ResultStore, arrow_result
from ._state import CANCELED, Query, QueryError, Session

# Queries executing on DuckDB, by id, for SQL functions that need theirs (SYSTEM$WAIT).
# DuckDB calls a Python function on a thread of its own, not the worker that executes the
# statement, so the statement passes its query id to the function (see _with_query_id).
_executing: dict[str, Query] = {}
_WAIT_CALL = re.compile(r"\bsystem\$wait\s*\(", re.IGNORECASE)
# String literals and quoted identifiers, which a rewrite must leave as they are.
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")

WAIT_UNITS = {
    "SECONDS": 1.0,
    "SECOND": 1.0,
    "MILLISECONDS": 1e-3,
    "MILLISECOND": 1e-3,
    "MICROSECONDS": 1e-6,
    "NANOSECONDS": 1e-9,
    "MINUTES": 60.0,
    "HOURS": 3600.0,
}


def wait_seconds(amount: float, unit: str | None) -> float:
    factor = WAIT_UNITS.get((unit or "SECONDS").upper())
    if factor is None:
        raise QueryFailed(
            QueryError(
                100_069,
                f"Invalid time unit '{unit}' for SYSTEM$WAIT; expected one of "
                + ", ".join(sorted(WAIT_UNITS)),
                "22023",
            )
        )
    return max(0.0, float(amount) * factor)


class QueryFailed(Exception):
    def __init__(self, error: QueryError) -> None:
        super().__init__(error.message)
        self.error = error


def _with_query_id(sql_text: str, query_id: str) -> str:
    """``system$wait(n)`` → ``system$wait_for_query('<query id>', n)``, outside quotes."""
    call = f"system$wait_for_query('{query_id}', "
    pieces, end = [], 0
    for quoted in _QUOTED.finditer(sql_text):
        pieces.append(_WAIT_CALL.sub(call, sql_text[end : quoted.start()]))
        pieces.append(quoted[0])
        end = quoted.end()
    pieces.append(_WAIT_CALL.sub(call, sql_text[end:]))
    return "".join(pieces)


def _without_query_id(name: str, query_id: str) -> str:
    return name.replace(f"system$wait_for_query\"('{query_id}', ", 'system$wait"(')


def _system_wait(query_id: str | None, amount: float, unit: str | None = None) -> str:
    """SYSTEM$WAIT inside an arbitrary statement: sleeps, but stops when its query is aborted."""
    query = _executing.get(query_id) if query_id is not None else None
    deadline = time.monotonic() + wait_seconds(amount, unit)
    while (left := deadline - time.monotonic()) > 0:
        if query is None:
            time.sleep(min(left, 0.05))
        elif query.cancel_requested.wait(min(left, 0.05)):
            raise QueryFailed(CANCELED)
    return f"waited {amount:g} seconds"


@dataclass
class SessionEngine:
    """One session's pool of fakesnow connections and its current database and schema.

    While the session has a transaction open, one connection is ``pinned``: every
    statement of the session runs on it (the caller serialises them), so the
    transaction's writes are visible to the session alone until COMMIT.
    """

    fs: FakeSnow
    database: str | None
    schema: str | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    idle: list[FakeSnowflakeConnection] = field(default_factory=list)
    pinned: FakeSnowflakeConnection | None = None
    # Serialises ending the pinned transaction: a deleted session's rollback (in a worker)
    # can meet close() (on the loop, when its last query ends) on the same connection.
    ending: threading.Lock = field(default_factory=threading.Lock)

    def borrow(self) -> FakeSnowflakeConnection:
        with self.lock:
            conn = self.idle.pop() if self.idle else None
            database, schema = self.database, self.schema
        if conn is None:
            return self.fs.connect(database, schema)
        if (conn.database, conn.schema) != (database, schema):
            _use(conn, database, schema)
        return conn

    def give_back(self, conn: FakeSnowflakeConnection, changed_context: bool) -> None:
        with self.lock:
            if changed_context:
                self.database, self.schema = conn.database, conn.schema
            if conn is not self.pinned:
                self.idle.append(conn)

    # transactions
    def begin(self) -> None:
        conn = self.borrow()
        conn._duck_conn.begin()
        # fakesnow's own bookkeeping then commits the transaction before DDL, as
        # Snowflake does, and reports it through ``_in_transaction``.
        conn._autocommit, conn._in_transaction = False, True
        self.pinned = conn

    def end(self, commit: bool) -> bool:
        """COMMIT (or ROLLBACK) the pinned connection's transaction and unpin it.

        False when a COMMIT had to roll back: DuckDB aborts a whole transaction when one
        of its statements fails, where Snowflake rolls back only that statement.
        """
        with self.ending:
            conn = self.pinned
            if conn is None:
                return True
            committed = False
            try:
                if commit and not _aborted(conn):
                    conn._duck_conn.commit()
                    committed = True
                else:
                    conn._duck_conn.rollback()
            finally:
                if not committed:
                    with contextlib.suppress(duckdb.Error):  # a failed COMMIT rolled back
                        conn._duck_conn.rollback()
                self._unpin(conn)
            return committed or not commit

    def _unpin(self, conn: FakeSnowflakeConnection) -> None:
        conn._autocommit, conn._in_transaction = True, False
        with self.lock:
            self.pinned = None
            self.idle.append(conn)

    def close(self) -> None:
        if self.pinned is not None:
            with contextlib.suppress(duckdb.Error):
                self.end(commit=False)
        with self.lock:
            idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


def _aborted(conn: FakeSnowflakeConnection) -> bool:
    """Whether DuckDB has aborted the connection's transaction (an earlier statement failed)."""
    try:
        conn._duck_conn.execute("SELECT 1").fetchall()
    except duckdb.TransactionException:
        return True
    return False


def _use(conn: FakeSnowflakeConnection, database: str | None, schema: str | None) -> None:
    if database and schema:
        conn.cursor().execute(f'USE SCHEMA "{database}"."{schema}"')
    elif database:
        conn.cursor().execute(f'USE DATABASE "{database}"')


class Engine:
    def __init__(self) -> None:
        self.fs = FakeSnow()
        self.results = ResultStore()
        # Registered once on the shared DuckDB; visible to every session's connections.
        self.fs.duck_conn.create_function(
            "system$wait",
            lambda amount: _system_wait(None, amount),
            [sqltypes.DOUBLE],
            sqltypes.VARCHAR,
            side_effects=True,
        )
        self.fs.duck_conn.create_function(
            "system$wait_for_query",
            lambda query_id, amount: _system_wait(query_id, amount),
            [sqltypes.VARCHAR, sqltypes.DOUBLE],
            sqltypes.VARCHAR,
            side_effects=True,
        )

    def open_session(self, database: str | None, schema: str | None) -> SessionEngine:
        engine = SessionEngine(self.fs, database and database.upper(), schema and schema.upper())
        conn = engine.borrow()  # creates the database and schema on login, as fakesnow does
        engine.database, engine.schema = conn.database, conn.schema
        engine.give_back(conn, changed_context=False)
        return engine

    def execute(
        self,
        session: Session,
        query: Query,
        sql_text: str,
        bindings: dict[str, Any] | None,
        register: dict[str, pa.Table] | None = None,
        pinned: bool = False,
    ) -> dict[str, Any]:
        """Run one statement; return the reply's ``data`` or raise QueryFailed.

        ``pinned``: on the session's transaction connection (the caller holds the
        transaction's lock); else on a pooled one.
        """
        engine: SessionEngine = session.engine
        conn = engine.pinned if pinned else None
        conn = conn or engine.borrow()
        before = (conn.database, conn.schema)
        duck = conn._duck_conn
        query.interrupt = duck.interrupt
        _executing[query.query_id] = query
        sql_text = _with_query_id(sql_text, query.query_id)
        try:
            for name, table in (register or {}).items():
                duck.register(name, table)
            cur = conn.cursor()
            params, batch = _params(bindings)
            rowcount = 0
            if batch is None:
                cur.execute(sql_text, binding_params=params, server=True)
            else:
                for row in batch:
                    cur.execute(sql_text, binding_params=row, server=True)
                    rowcount += cur.rowcount or 0
            if query.cancel_requested.is_set():
                raise QueryFailed(CANCELED)
            return _result_data(conn, cur, query, batch is not None, rowcount, self.results)
        except QueryFailed:
            raise
        except sf_errors.Error as e:
            if query.cancel_requested.is_set():
                raise QueryFailed(CANCELED) from None
            raise QueryFailed(
                QueryError(e.errno or 100_000, e.raw_msg or str(e), e.sqlstate or "22000")
            ) from None
        except Exception as e:
            if query.cancel_requested.is_set():
                raise QueryFailed(CANCELED) from None
            raise QueryFailed(_translate(e)) from None
        finally:
            _executing.pop(query.query_id, None)
            query.interrupt = None
            for name in register or {}:
                with contextlib.suppress(Exception):  # best effort; the name is per query
                    duck.unregister(name)
            engine.give_back(conn, changed_context=(conn.database, conn.schema) != before)
            if conn is engine.pinned and not conn._in_transaction:
                engine._unpin(conn)  # DDL committed the transaction (fakesnow did, as Snowflake)

    def close_session(self, session: Session) -> None:
        if session.engine is not None:
            session.engine.close()


def _params(bindings: dict[str, Any] | None) -> tuple[Any, list[tuple[Any, ...]] | None]:
    if not bindings:
        return None, None
    if not all(k.isdigit() for k in bindings):
        return {name: from_binding(b) for name, b in bindings.items()}, None
    ordered = [bindings[str(pos)] for pos in range(1, len(bindings) + 1)]
    if any(isinstance(b.get("value"), list) for b in ordered):
        columns = [[from_binding({**b, "value": v}) for v in b["value"]] for b in ordered]
        return None, list(zip(*columns, strict=True))
    return tuple(from_binding(b) for b in ordered), None


def _result_data(
    conn: FakeSnowflakeConnection,
    cur: Any,
    query: Query,
    is_batch: bool,
    batch_rowcount: int,
    results: ResultStore,
) -> dict[str, Any]:
    expr = cur._last_transformed
    type_id = statement_type_id(expr) if expr is not None else 0x1000
    table: pa.Table | None = cur._arrow_table
    if cur.sfqid and (cached := conn.results_cache.get(cur.sfqid)) is not None:
        # RESULT_SCAN(LAST_QUERY_ID()) looks results up by our query id.
        conn.results_cache[query.query_id] = cached
    rowtype = describe_as_rowtype(cur._describe_last_sql()) if table is not None else []
    for column in rowtype:  # the name the statement had before _with_query_id
        column["name"] = _without_query_id(column["name"], query.query_id)
    result: dict[str, Any]
    if is_batch and type_id in DML_TYPE_IDS:
        result = {"queryResultFormat": "json", "rowset": [[str(batch_rowcount)]]}
    elif table is not None and type_id in DML_TYPE_IDS:
        # Clients read affected-row counts from a JSON rowset.
        result = {
            "queryResultFormat": "json",
            "rowset": [[None if v is None else str(v) for v in row] for row in _rows(table)],
        }
    elif table is not None and table.num_rows:
        result = arrow_result(query.query_id, _mask_null_structs(to_sf(table, rowtype)), results)
    else:
        result = {"queryResultFormat": "arrow", "rowsetBase64": ""}
    total = 1 if is_batch else (table.num_rows if table is not None else 0)
    return {
        "rowtype": rowtype,
        "total": total,
        "returned": total,
        "statementTypeId": type_id,
        "finalDatabaseName": conn.database,
        "finalSchemaName": conn.schema,
        **result,
    }


def _mask_null_structs(table: pa.Table) -> pa.Table:
    """Mark timestamp structs null where fakesnow left null children (5.x rejects those)."""
    columns = []
    for column in table.columns:
        if pa.types.is_struct(column.type):
            chunks = []
            for chunk in column.chunks:
                first = chunk.field(0)
                if not first.null_count:
                    chunks.append(chunk)
                    continue
                children = [
                    chunk.field(i).fill_null(pa.scalar(0, chunk.type.field(i).type))
                    for i in range(chunk.type.num_fields)
                ]
                chunks.append(
                    pa.StructArray.from_arrays(
                        children, fields=list(chunk.type), mask=first.is_null()
                    )
                )
            column = pa.chunked_array(chunks, type=column.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=table.schema)


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    return list(zip(*[c.to_pylist() for c in table.columns], strict=True))


_CATALOG = re.compile(r"Catalog Error|Binder Error", re.IGNORECASE)


def _translate(e: Exception) -> QueryError:
    """Map an engine exception to Snowflake's error JSON instead of an HTTP 500."""
    text = str(e).strip() or type(e).__name__
    if isinstance(e, sqlglot.errors.ParseError):
        return QueryError(1003, f"SQL compilation error:\nsyntax error {text}", "42000")
    if isinstance(e, (duckdb.CatalogException, duckdb.BinderException)) or _CATALOG.search(text):
        return QueryError(2003, f"SQL compilation error:\n{text}", "42S02")
    if isinstance(e, duckdb.ParserException):
        return QueryError(1003, f"SQL compilation error:\n{text}", "42000")
    if isinstance(e, NotImplementedError):
        return QueryError(2, f"Unsupported by the local emulator: {text}", "0A000")
    if isinstance(e, duckdb.InterruptException):
        return CANCELED
    return QueryError(100_000, text, "22000")
