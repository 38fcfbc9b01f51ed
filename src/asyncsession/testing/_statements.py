"""The statements the emulator answers itself, each a pattern beside its handler.

These are real Snowflake statements that fakesnow lacks or that must be cheap: a
``SYSTEM$WAIT`` here is a timer on the event loop, so hundreds run at once for almost
nothing. To add one, write a handler under ``@statement(pattern)``: it gets the
emulator, the query and the pattern's match, and returns the reply's ``data`` (or raises
``QueryFailed``). Statements no pattern matches run on DuckDB through fakesnow, with
query-history table functions replaced by a table (``_history``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from . import _history, _transactions
from ._context import Emulator
from ._engine import QueryFailed, wait_seconds
from ._literals import alias, parse_literal
from ._protocol import STATUS_OK, json_result
from ._state import CANCELED, Query, QueryError, Session

Handler = Callable[[Emulator, Query, "re.Match[str]"], Awaitable[dict[str, Any]]]

_END = r"\s*;?\s*$"
# Session parameters we give meaning to; others are accepted and stored.
INT_PARAMETERS = frozenset({"STATEMENT_TIMEOUT_IN_SECONDS", "LOCK_TIMEOUT"})
BOOL_PARAMETERS = frozenset({"AUTOCOMMIT"})
# Statement type ids the connector reads from a reply.
ALTER_SESSION_TYPE = 0x4000
USE_TYPE = 0x4300
TRANSACTION_TYPE = 0x5000  # TCL, as fakesnow answers BEGIN/COMMIT/ROLLBACK


_DML = re.compile(r"^\s*(?:insert|update|delete|merge|truncate)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Statement:
    pattern: re.Pattern[str]
    handler: Handler


STATEMENTS: list[Statement] = []


def statement(pattern: str, flags: int = 0) -> Callable[[Handler], Handler]:
    """Register ``handler`` for SQL texts that ``pattern`` matches (case-insensitive)."""

    def register(handler: Handler) -> Handler:
        STATEMENTS.append(Statement(re.compile(pattern + _END, re.IGNORECASE | flags), handler))
        return handler

    return register


async def execute(emu: Emulator, query: Query, bindings: Any) -> dict[str, Any]:
    """Run ``query``: by the first statement whose pattern matches, else on DuckDB."""
    for entry in STATEMENTS:
        if m := entry.pattern.match(query.sql_text):
            return await entry.handler(emu, query, m)
    if not query.session.autocommit and _DML.match(query.sql_text):
        # AUTOCOMMIT off: "the first DML statement after a COMMIT or ROLLBACK implicitly
        # starts a transaction" (no-op while one is open).
        await _transactions.begin(emu, query, None)
    sql_text, tables = _history.rewrite(emu.registry, query.session, query.sql_text)

    def run(pinned: bool) -> dict[str, Any]:
        return emu.engine.execute(query.session, query, sql_text, bindings, tables, pinned)

    return await _transactions.on_session_connection(emu, query, query.session, run)


def _not_found(what: str) -> QueryFailed:
    return QueryFailed(QueryError(2003, f"{what} not found.", "02000"))


@statement(
    r"^\s*(?:select|call)\s+system\$wait\s*\(\s*([0-9]*\.?[0-9]+)\s*(?:,\s*'(\w+)'\s*)?\)"
    r"(?:\s+as\s+(\w+|\"[^\"]+\"))?"
)
async def system_wait(emu: Emulator, query: Query, m: re.Match[str]) -> dict[str, Any]:
    seconds = wait_seconds(float(m[1]), m[2])
    try:
        await asyncio.wait_for(query.cancelled.wait(), seconds)
    except TimeoutError:
        unit = (m[2] or "seconds").lower()
        return json_result(alias(m[3]) or f"SYSTEM$WAIT({m[1]})", [f"waited {m[1]} {unit}"])
    raise QueryFailed(CANCELED)


@statement(r"^\s*select\s+system\$cancel_query\s*\(\s*'([^']*)'\s*\)")
async def cancel_query(emu: Emulator, query: Query, m: re.Match[str]) -> dict[str, Any]:
    target = emu.registry.queries.get(m[1])
    if target is None or target.session.user != query.session.user:
        raise _not_found(f"Query ID {m[1]!r}")
    target.abort_requests += 1
    target.abort()
    return json_result(f"SYSTEM$CANCEL_QUERY('{m[1]}')", [f"query [{m[1]}] terminated."])


@statement(r"^\s*select\s+system\$cancel_all_queries\s*\(\s*'?(\d+)'?\s*\)")
async def cancel_all_queries(emu: Emulator, query: Query, m: re.Match[str]) -> dict[str, Any]:
    target = emu.registry.sessions.get(int(m[1]))
    if target is None or target.user != query.session.user:
        raise _not_found(f"Session {m[1]}")
    aborted = [q.abort() for q in emu.registry.running(int(m[1])) if q is not query]
    return json_result(f"SYSTEM$CANCEL_ALL_QUERIES({m[1]})", [f"{sum(aborted)} terminated."])


@statement(r"^\s*select\s+\*\s+from\s+table\s*\(\s*result_scan\s*\(\s*'([^']*)'\s*\)\s*\)")
async def result_scan(emu: Emulator, query: Query, m: re.Match[str]) -> dict[str, Any]:
    # The stored reply of an ended query: works for every path, these statements or DuckDB.
    source = emu.registry.queries.get(m[1])
    if source is None or source.session.user != query.session.user or source.response is None:
        raise QueryFailed(QueryError(709, f"Statement {m[1]} not found", "02000"))
    if source.error is not None:
        raise QueryFailed(source.error)
    data = dict(source.response["data"])
    if "chunks" in data:
        # Chunks of its own, so they live as long as this query does.
        chunked = emu.engine.results.share(source.query_id, query.query_id)
        if chunked is None:
            raise QueryFailed(QueryError(709, f"Result of {m[1]} has expired", "02000"))
        data.update(chunked.reply_fields(query.query_id))
    return data


@statement(r"^\s*select\s+last_query_id\s*\(\s*(-?\d+)?\s*\)")
async def last_query_id(emu: Emulator, query: Query, m: re.Match[str]) -> dict[str, Any]:
    position = int(m[1]) if m[1] is not None else -1
    ids = query.session.last_query_ids
    found = ids[position] if -len(ids) <= position < len(ids) else None
    return json_result("LAST_QUERY_ID()", [found])


@statement(r"^\s*select\s+current_(session|warehouse|role|account|user|database|schema)\s*\(\s*\)")
async def current(emu: Emulator, query: Query, m: re.Match[str]) -> dict[str, Any]:
    return json_result(f"CURRENT_{m[1].upper()}()", [_current(query.session, m[1].lower())])


def _current(session: Session, what: str) -> Any:
    if what == "session":
        return session.session_id
    if what == "account":
        return "LOCAL"
    if what == "user":
        return session.user.upper()
    if what in ("database", "schema"):
        return getattr(session.engine, what)
    return getattr(session, what)


@statement(r"^\s*alter\s+session\s+set\s+(\w+)\s*=\s*(.+?)", re.DOTALL)
async def alter_session_set(emu: Emulator, query: Query, m: re.Match[str]) -> dict[str, Any]:
    name = m[1].upper()
    value = parse_literal(m[2])
    if (name in INT_PARAMETERS and not isinstance(value, int)) or (
        name in BOOL_PARAMETERS and not isinstance(value, bool)
    ):
        raise QueryFailed(
            QueryError(1008, f"invalid value [{m[2]}] for parameter '{name}'", "22023")
        )
    await _set_parameter(emu, query, name, value)
    return json_result("status", [STATUS_OK], ALTER_SESSION_TYPE)


@statement(r"^\s*alter\s+session\s+unset\s+(\w+)")
async def alter_session_unset(emu: Emulator, query: Query, m: re.Match[str]) -> dict[str, Any]:
    await _set_parameter(emu, query, m[1].upper(), None)
    return json_result("status", [STATUS_OK], ALTER_SESSION_TYPE)


async def _set_parameter(emu: Emulator, query: Query, name: str, value: Any) -> None:
    session = query.session
    was_autocommit = session.autocommit
    if value is None:
        session.parameters.pop(name, None)
    else:
        session.parameters[name] = value
    if name == "AUTOCOMMIT" and session.autocommit != was_autocommit:
        # "if the AUTOCOMMIT state changed ..., the currently executing transaction will COMMIT"
        await _transactions.end(emu, query, session, commit=True)


@statement(r"^\s*use\s+(warehouse|role)\s+(\"[^\"]+\"|[\w$]+)")
async def use_warehouse_or_role(emu: Emulator, query: Query, m: re.Match[str]) -> dict[str, Any]:
    name = m[2].strip('"') if m[2].startswith('"') else m[2].upper()
    setattr(query.session, m[1].lower(), name)
    return json_result("status", [STATUS_OK], USE_TYPE)


@statement(r"^\s*(?:begin(?:\s+(?:work|transaction))?|start\s+transaction)(?:\s+name\s+(\w+))?")
async def begin(emu: Emulator, query: Query, m: re.Match[str]) -> dict[str, Any]:
    await _transactions.begin(emu, query, m[1])
    return json_result("status", [STATUS_OK], TRANSACTION_TYPE)


@statement(r"^\s*(commit|rollback)(?:\s+work)?")
async def commit_or_rollback(emu: Emulator, query: Query, m: re.Match[str]) -> dict[str, Any]:
    await _transactions.end(emu, query, query.session, commit=m[1].lower() == "commit")
    return json_result("status", [STATUS_OK], TRANSACTION_TYPE)


@statement(r"^\s*select\s+current_transaction\s*\(\s*\)")
async def current_transaction(emu: Emulator, query: Query, m: re.Match[str]) -> dict[str, Any]:
    txn = query.session.transaction
    return json_result("CURRENT_TRANSACTION()", [None if txn is None else txn.transaction_id])
