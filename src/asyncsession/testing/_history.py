"""``INFORMATION_SCHEMA.QUERY_HISTORY[_BY_SESSION]()``: the registry's queries as a table.

A statement that reads either table function runs on DuckDB with the call replaced by a
registered Arrow table, so any SQL around it (filters, projections, joins) works.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pyarrow as pa

from ._literals import parse_literal
from ._state import ABORTED, Query, Registry, Session

QUERY_HISTORY = re.compile(
    r"table\s*\(\s*(?:[\w\"]+\s*\.\s*)?information_schema\s*\.\s*"
    r"query_history(_by_session)?\s*\(([^()]*)\)\s*\)",
    re.IGNORECASE,
)
HISTORY_TABLE = "_asyncsession_query_history"

SCHEMA = pa.schema(
    [
        ("QUERY_ID", pa.string()),
        ("QUERY_TEXT", pa.string()),
        ("SESSION_ID", pa.int64()),
        ("USER_NAME", pa.string()),
        ("DATABASE_NAME", pa.string()),
        ("SCHEMA_NAME", pa.string()),
        ("WAREHOUSE_NAME", pa.string()),
        ("ROLE_NAME", pa.string()),
        ("QUERY_TAG", pa.string()),
        ("EXECUTION_STATUS", pa.string()),
        ("ERROR_CODE", pa.string()),
        ("ERROR_MESSAGE", pa.string()),
        ("START_TIME", pa.timestamp("us", tz="UTC")),
        ("END_TIME", pa.timestamp("us", tz="UTC")),
        ("TOTAL_ELAPSED_TIME", pa.int64()),
    ]
)


def rewrite(registry: Registry, session: Session, sql_text: str) -> tuple[str, dict[str, pa.Table]]:
    """``sql_text`` with a query-history call replaced by a table, and that table by name."""
    m = QUERY_HISTORY.search(sql_text)
    if m is None:
        return sql_text, {}
    table = history(registry, session, m[1] is not None, m[2])
    return QUERY_HISTORY.sub(HISTORY_TABLE, sql_text), {HISTORY_TABLE: table}


def arguments(args: str) -> dict[str, Any]:
    """Named (``SESSION_ID => 1``) or positional arguments of QUERY_HISTORY[_BY_SESSION]."""
    named = dict(
        (k.upper(), parse_literal(v)) for k, v in re.findall(r"(\w+)\s*=>\s*('[^']*'|[^,]+)", args)
    )
    if not named and args.strip():
        positional = [parse_literal(a) for a in args.split(",")]
        for key, value in zip(("SESSION_ID", "END_TIME_RANGE_START"), positional, strict=False):
            named[key] = value
    return named


def history(registry: Registry, session: Session, by_session: bool, args: str) -> pa.Table:
    """The user's queries, newest first, as Snowflake's table function returns them."""
    named = arguments(args)
    limit = int(named.get("RESULT_LIMIT", 100))
    session_id = int(named.get("SESSION_ID", session.session_id)) if by_session else None
    rows = [
        q
        for q in reversed(registry.queries.values())
        if (q.session.user == session.user)
        and (session_id is None or q.session.session_id == session_id)
    ][:limit]
    now = time.time()
    return pa.Table.from_pylist([_row(q, now) for q in rows], schema=SCHEMA)


def _row(q: Query, now: float) -> dict[str, Any]:
    engine = q.session.engine
    return {
        "QUERY_ID": q.query_id,
        "QUERY_TEXT": q.sql_text,
        "SESSION_ID": q.session.session_id,
        "USER_NAME": q.session.user.upper(),
        "DATABASE_NAME": engine.database if engine else None,
        "SCHEMA_NAME": engine.schema if engine else None,
        "WAREHOUSE_NAME": q.session.warehouse,
        "ROLE_NAME": q.session.role,
        "QUERY_TAG": q.query_tag,
        # Aborted queries show as FAILED_WITH_ERROR (error 604) in query history.
        "EXECUTION_STATUS": "FAILED_WITH_ERROR" if q.status == ABORTED else q.status,
        "ERROR_CODE": None if q.error is None else f"{q.error.code:06d}",
        "ERROR_MESSAGE": None if q.error is None else q.error.message,
        "START_TIME": _micros(q.start_time),
        "END_TIME": _micros(q.end_time),
        "TOTAL_ELAPSED_TIME": int(((q.end_time or now) - q.start_time) * 1000),
    }


def _micros(t: float | None) -> int | None:
    return None if t is None else int(t * 1_000_000)
