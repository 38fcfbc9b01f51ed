"""What a statement does to its session, read from its SQL text (no round trip).

``classify(sql)`` looks at each statement's leading keywords (comments, string literals
and leading whitespace skipped) and says which session state it may change and what it
does to the open transaction. ``SessionState`` (a session's ``_state``) folds those
effects in as statements run; a pool reads it to know what to restore on return.

The rule when unsure: say more, never less. A statement we cannot read surely (``CALL``,
``EXECUTE IMMEDIATE``, a scripting block, several statements at once, ``SET`` of a
variable, a temporary object) adds ``"unknown"``; plain queries and DML add nothing.
"""

from __future__ import annotations

import functools
import re
from typing import Literal, NamedTuple

#: What ``SessionState.changed`` may hold.
CHANGES = frozenset(
    {"database", "schema", "warehouse", "role", "query_tag", "parameters", "unknown"}
)

#: A statement's net effect on the transaction: opens one, ends one (COMMIT, ROLLBACK,
#: or the implicit commit of DDL), or leaves it as it was.
TransactionEffect = Literal["open", "close"] | None

# The patterns are strings: ``re`` compiles (and caches) each on first use, not at import.
# String literals ('…' with '' or \' inside, $$…$$), quoted identifiers, comments, and
# the statement separator; an unterminated literal or comment runs to the end.
_TOKEN = (
    r"""(?s)'(?:[^'\\]|\\.|'')*'?|\$\$.*?(?:\$\$|\Z)|"(?:[^"]|"")*"?"""
    r"""|--[^\n]*|//[^\n]*|/\*.*?(?:\*/|\Z)|;"""
)
_WORD = r'[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"]|"")*"|[^\sA-Za-z_"]'
_SET_NAME = r"([A-Za-z_][A-Za-z0-9_$]*)\s*="
_UNSET_NAME = r"[A-Za-z_][A-Za-z0-9_$]*"

#: Leading keywords of statements that change neither session state nor the transaction.
_PLAIN = frozenset(
    {
        "SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "MERGE", "COPY", "VALUES", "TABLE",
        "SHOW", "DESC", "DESCRIBE", "LIST", "LS", "GET", "PUT", "REMOVE", "RM", "EXPLAIN",
        "TRUNCATE", "(",
    }
)  # fmt: skip
#: Leading keywords of DDL, which commits an open transaction (before and after itself).
_DDL = frozenset({"CREATE", "ALTER", "DROP", "UNDROP", "GRANT", "REVOKE", "COMMENT"})
_TEMPORARY = frozenset({"TEMP", "TEMPORARY", "VOLATILE", "LOCAL"})


# A NamedTuple, not a frozen dataclass: the same immutable record, without the dataclass
# machinery's cost at import (``import asyncsession``).
class StatementEffect(NamedTuple):
    changes: frozenset[str] = frozenset()
    transaction: TransactionEffect = None
    #: ``ALTER SESSION SET AUTOCOMMIT = …`` / ``UNSET AUTOCOMMIT``: the new setting.
    autocommit: bool | None = None


NO_EFFECT = StatementEffect()


def split_statements(sql: str) -> list[str]:
    """The statements of ``sql``, comments dropped and string literals emptied."""
    parts: list[str] = []
    buffer: list[str] = []
    position = 0
    for match in re.finditer(_TOKEN, sql):
        buffer.append(sql[position : match.start()])
        token = match.group()
        if token == ";":
            parts.append("".join(buffer))
            buffer = []
        elif token[0] in "'$":
            buffer.append(" '' ")
        elif token[0] == '"':
            buffer.append(token)
        else:
            buffer.append(" ")  # a comment separates words
        position = match.end()
    buffer.append(sql[position:])
    parts.append("".join(buffer))
    return [p.strip() for p in parts if p.strip()]


#: Texts up to this long are classified once and remembered (a service repeats them);
#: longer ones (a 10 MB INSERT) are classified each time rather than kept alive.
CACHED_TEXT_LENGTH = 2000


def classify(sql: str) -> StatementEffect:
    """The effect of running ``sql`` (one statement or several) on its session."""
    if len(sql) <= CACHED_TEXT_LENGTH:
        return _classify_cached(sql)
    return _classify(sql)


@functools.lru_cache(maxsize=1024)
def _classify_cached(sql: str) -> StatementEffect:
    return _classify(sql)


def _classify(sql: str) -> StatementEffect:
    statements = split_statements(sql)
    changes: set[str] = set()
    transaction: TransactionEffect = None
    autocommit: bool | None = None
    for statement in statements:
        effect = _classify_one(statement)
        changes |= effect.changes
        if effect.transaction is not None:
            transaction = effect.transaction
        if effect.autocommit is not None:
            autocommit = effect.autocommit
    if len(statements) > 1:
        changes.add("unknown")
    if not changes and transaction is None and autocommit is None:
        return NO_EFFECT
    return StatementEffect(frozenset(changes), transaction, autocommit)


def _classify_one(statement: str) -> StatementEffect:
    words = [w.upper() if w[0] != '"' else w for w in re.findall(_WORD, statement[:400])]
    first = words[0]
    second = words[1] if len(words) > 1 else ""
    if first in _PLAIN:
        return NO_EFFECT
    if first == "BEGIN":
        # BEGIN [WORK|TRANSACTION] [NAME n]; anything else is a Snowflake Scripting block.
        if second in ("", "WORK", "TRANSACTION", "NAME"):
            return StatementEffect(transaction="open")
        return StatementEffect(frozenset({"unknown"}))
    if first == "START" and second == "TRANSACTION":
        return StatementEffect(transaction="open")
    if first in ("COMMIT", "ROLLBACK") and second in ("", "WORK"):
        return StatementEffect(transaction="close")
    if first == "USE":
        return StatementEffect(_use_changes(words))
    if first == "ALTER" and second == "SESSION":
        changes = _alter_session_changes(statement, words)
        autocommit = _autocommit_setting(statement, words)
        # Changing AUTOCOMMIT commits an open transaction.
        return StatementEffect(changes, None if autocommit is None else "close", autocommit)
    if first in _DDL:
        temporary = first == "CREATE" and not _TEMPORARY.isdisjoint(words[1:6])
        # A temporary object lives as long as the session: the next user would see it.
        return StatementEffect(frozenset({"unknown"}) if temporary else frozenset(), "close")
    # CALL, EXECUTE IMMEDIATE, DECLARE, SET/UNSET of variables, and what we do not know.
    return StatementEffect(frozenset({"unknown"}))


def _use_changes(words: list[str]) -> frozenset[str]:
    kind = words[1] if len(words) > 1 else ""
    if kind == "WAREHOUSE":
        return frozenset({"warehouse"})
    if kind in ("ROLE", "SECONDARY"):
        return frozenset({"role"})
    if kind == "SCHEMA":
        # USE SCHEMA db.s also changes the database.
        return frozenset({"schema", "database"}) if "." in words[2:] else frozenset({"schema"})
    # USE DATABASE d, USE d, USE d.s: the current schema changes too (to d's PUBLIC).
    return frozenset({"database", "schema"})


def _alter_session_changes(statement: str, words: list[str]) -> frozenset[str]:
    action = words[2] if len(words) > 2 else ""
    rest = statement.split(None, 3)[3] if len(statement.split(None, 3)) > 3 else ""
    if action == "SET":
        names = {n.upper() for n in re.findall(_SET_NAME, rest)}
    elif action == "UNSET":
        names = {n.upper() for n in re.findall(_UNSET_NAME, rest)}
    else:
        return frozenset({"parameters"})
    changes = set()
    if "QUERY_TAG" in names:
        changes.add("query_tag")
    if not names or names - {"QUERY_TAG"}:
        changes.add("parameters")
    return frozenset(changes)


_AUTOCOMMIT_VALUE = r"(?i)\bAUTOCOMMIT\s*=\s*([A-Za-z0-9_']+)"


def _autocommit_setting(statement: str, words: list[str]) -> bool | None:
    action = words[2] if len(words) > 2 else ""
    if action == "UNSET" and "AUTOCOMMIT" in words[3:]:
        return True
    if action == "SET" and (m := re.search(_AUTOCOMMIT_VALUE, statement)):
        return m[1].upper() not in ("FALSE", "0", "OFF", "NO")
    return None


class SessionState:
    """What a session's statements did to it since the last ``reset()`` (by their text).

    - ``in_transaction``: a transaction is (or may be) open on the server: ours, or a
      ``BEGIN`` the user sent. A statement whose outcome is unknown (cancelled, failed)
      never clears it; a ``BEGIN`` whose outcome is unknown sets it.
    - ``changed``: the kinds of session state that may have changed (``CHANGES``). Set
      *before* a statement is sent, so a statement cancelled mid-flight still counts; one
      that did not end normally adds ``"unknown"`` too.
    - ``autocommit``: False when the session runs with AUTOCOMMIT off (the ``autocommit``
      connect option or ``ALTER SESSION SET AUTOCOMMIT = FALSE``): then any statement
      other than COMMIT/ROLLBACK/DDL may open a transaction, and counts as doing so.
    """

    __slots__ = ("_changed", "autocommit", "in_transaction")

    def __init__(self, *, autocommit: bool = True) -> None:
        self.in_transaction = False
        self.autocommit = autocommit
        self._changed: set[str] = set()

    def __repr__(self) -> str:
        return (
            f"<SessionState in_transaction={self.in_transaction} changed={sorted(self._changed)}>"
        )

    @property
    def changed(self) -> frozenset[str]:
        return frozenset(self._changed)

    def note(self, *changes: str) -> None:
        """Record a change made by one of the session's methods (``use_schema``, …)."""
        self._changed.update(changes)

    def started(self, effect: StatementEffect) -> None:
        """A statement with ``effect`` is about to be sent."""
        if effect.changes:
            self._changed |= effect.changes

    def finished(self, effect: StatementEffect, succeeded: bool) -> None:
        """The statement ended: ``succeeded``, or with an error or cancellation."""
        if effect.changes and not succeeded:
            # Cancelled or failed: it may still take effect on the server after its abort
            # was answered, even after a statement restoring the old state (seen on the
            # emulator): what it changed is unknown, so a pool discards the session.
            self._changed.add("unknown")
        if effect.transaction == "open":
            self.in_transaction = True  # even when unsure whether it ran
        elif effect.transaction == "close" and succeeded:
            self.in_transaction = False
        elif effect.transaction is None and not self.autocommit:
            self.in_transaction = True  # AUTOCOMMIT off: a statement opens a transaction
        if effect.autocommit is not None and succeeded:
            self.autocommit = effect.autocommit

    def reset(self) -> None:
        """Forget the changes: the pool has restored (or verified) the session's state."""
        self._changed.clear()
