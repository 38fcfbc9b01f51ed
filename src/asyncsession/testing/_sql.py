"""Statements the emulator answers itself, without DuckDB.

These are real Snowflake statements that fakesnow lacks or that must be cheap: a
``SYSTEM$WAIT`` on this path is a timer on the event loop, so hundreds run at once for
almost nothing. Each matcher takes the SQL text and returns a ``Special`` or ``None``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_END = r"\s*;?\s*$"
WAIT = re.compile(
    r"^\s*(?:select|call)\s+system\$wait\s*\(\s*([0-9]*\.?[0-9]+)\s*(?:,\s*'(\w+)'\s*)?\)"
    r"(?:\s+as\s+(\w+|\"[^\"]+\"))?" + _END,
    re.IGNORECASE,
)
CANCEL_QUERY = re.compile(
    r"^\s*select\s+system\$cancel_query\s*\(\s*'([^']*)'\s*\)" + _END, re.IGNORECASE
)
CANCEL_ALL = re.compile(
    r"^\s*select\s+system\$cancel_all_queries\s*\(\s*'?(\d+)'?\s*\)" + _END, re.IGNORECASE
)
LAST_QUERY_ID = re.compile(r"^\s*select\s+last_query_id\s*\(\s*(-?\d+)?\s*\)" + _END, re.IGNORECASE)
RESULT_SCAN = re.compile(
    r"^\s*select\s+\*\s+from\s+table\s*\(\s*result_scan\s*\(\s*'([^']*)'\s*\)\s*\)" + _END,
    re.IGNORECASE,
)
CURRENT = re.compile(
    r"^\s*select\s+current_(session|warehouse|role|account|user|database|schema)\s*\(\s*\)" + _END,
    re.IGNORECASE,
)
ALTER_SESSION_SET = re.compile(
    r"^\s*alter\s+session\s+set\s+(\w+)\s*=\s*(.+?)" + _END, re.IGNORECASE | re.DOTALL
)
ALTER_SESSION_UNSET = re.compile(r"^\s*alter\s+session\s+unset\s+(\w+)" + _END, re.IGNORECASE)
USE_WAREHOUSE_OR_ROLE = re.compile(
    r"^\s*use\s+(warehouse|role)\s+(\"[^\"]+\"|[\w$]+)" + _END, re.IGNORECASE
)
QUERY_HISTORY = re.compile(
    r"table\s*\(\s*(?:[\w\"]+\s*\.\s*)?information_schema\s*\.\s*"
    r"query_history(_by_session)?\s*\(([^()]*)\)\s*\)",
    re.IGNORECASE,
)
HISTORY_TABLE = "_asyncsession_query_history"

# Session parameters we give meaning to; others are accepted and stored.
INT_PARAMETERS = frozenset({"STATEMENT_TIMEOUT_IN_SECONDS", "LOCK_TIMEOUT"})


def parse_literal(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    upper = text.upper()
    if upper in ("TRUE", "FALSE"):
        return upper == "TRUE"
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def alias(name: str | None) -> str | None:
    """A column alias as Snowflake names it: unquoted upper-cased, quoted verbatim."""
    if not name:
        return None
    return name[1:-1] if name.startswith('"') else name.upper()


def text_column(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "database": "",
        "schema": "",
        "table": "",
        "nullable": True,
        "type": "text",
        "byteLength": 16_777_216,
        "length": 16_777_216,
        "scale": None,
        "precision": None,
        "collation": None,
    }


def json_result(column: str, values: list[Any], type_id: int = 0x1000) -> dict[str, Any]:
    """A one-column JSON result, the form Snowflake uses for small system results."""
    return {
        "rowtype": [text_column(column)],
        "rowset": [[None if v is None else str(v)] for v in values],
        "total": len(values),
        "returned": len(values),
        "queryResultFormat": "json",
        "statementTypeId": type_id,
    }


STATUS_OK = "Statement executed successfully."


def history_arguments(args: str) -> dict[str, Any]:
    """Named (``SESSION_ID => 1``) or positional arguments of QUERY_HISTORY[_BY_SESSION]."""
    named = dict(
        (k.upper(), parse_literal(v)) for k, v in re.findall(r"(\w+)\s*=>\s*('[^']*'|[^,]+)", args)
    )
    if not named and args.strip():
        positional = [parse_literal(a) for a in args.split(",")]
        for key, value in zip(("SESSION_ID", "END_TIME_RANGE_START"), positional, strict=False):
            named[key] = value
    return named


@dataclass(frozen=True)
class Wait:
    seconds: float
    label: str
