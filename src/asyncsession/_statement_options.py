"""Per-statement options: a query tag, a server-side timeout, and other statement parameters.

They travel with one query-request only (the connector's ``_statement_params``), so
concurrent queries never race on session state the way ``ALTER SESSION`` would.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple, TypeAlias

StatementParameterValue: TypeAlias = str | int | float | bool

#: Snowflake's limits for STATEMENT_TIMEOUT_IN_SECONDS (7 days) and QUERY_TAG (characters).
MAX_TIMEOUT_SECONDS = 604_800
MAX_QUERY_TAG_LENGTH = 2000

#: The connector's own per-statement key (4.x: the request id asyncsession aborts by).
_RESERVED = "REQUESTID"


# A NamedTuple, not a frozen dataclass: cheaper to define at import.
class StatementOptions(NamedTuple):
    """Validated options of one statement; ``parameters()`` is what goes on the wire."""

    query_tag: str | None = None
    #: Whole seconds (rounded up from what the caller gave).
    timeout: int | None = None
    #: Upper-cased names, in the caller's order.
    statement_params: tuple[tuple[str, StatementParameterValue], ...] = ()

    def parameters(self) -> dict[str, StatementParameterValue]:
        params: dict[str, StatementParameterValue] = dict(self.statement_params)
        if self.query_tag is not None:
            params["QUERY_TAG"] = self.query_tag
        if self.timeout is not None:
            params["STATEMENT_TIMEOUT_IN_SECONDS"] = self.timeout
        return params


def statement_options(
    query_tag: object = None, timeout: object = None, statement_params: object = None
) -> StatementOptions | None:
    """Check the options of ``session.sql(...)``; ``None`` when none was given.

    Raises ``TypeError`` / ``ValueError`` naming the option (or the parameter's key).
    """
    if query_tag is None and timeout is None and statement_params is None:
        return None
    tag = _check_tag(query_tag, "query_tag")
    seconds = _check_timeout(timeout, "timeout")
    params = _check_params(statement_params)
    names = {name for name, _ in params}
    if tag is not None and "QUERY_TAG" in names:
        raise ValueError("query_tag is given twice: as query_tag= and in statement_params")
    if seconds is not None and "STATEMENT_TIMEOUT_IN_SECONDS" in names:
        raise ValueError(
            "the timeout is given twice: as timeout= and as statement_params"
            "['STATEMENT_TIMEOUT_IN_SECONDS']"
        )
    return StatementOptions(tag, seconds, params)


def _check_tag(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, not {type(value).__name__}")
    if len(value) > MAX_QUERY_TAG_LENGTH:
        raise ValueError(
            f"{what} is {len(value)} characters long; Snowflake takes at most "
            f"{MAX_QUERY_TAG_LENGTH}"
        )
    return value


def _check_timeout(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} must be a positive number of seconds, not {value!r}")
    seconds = math.ceil(value)  # Snowflake takes whole seconds: never stop a query early
    if seconds > MAX_TIMEOUT_SECONDS:
        raise ValueError(
            f"{what}={value!r} is over Snowflake's maximum of {MAX_TIMEOUT_SECONDS} s (7 days)"
        )
    return seconds


def _check_params(value: object) -> tuple[tuple[str, StatementParameterValue], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise TypeError(
            f"statement_params must be a dict of parameter names to values, "
            f"not {type(value).__name__}"
        )
    checked: dict[str, StatementParameterValue] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key.strip():
            raise TypeError(f"statement_params keys must be non-empty str, not {key!r}")
        name = key.strip().upper()
        if name == _RESERVED:
            raise ValueError(
                f"statement_params[{key!r}]: requestId is reserved (asyncsession sets the "
                "request id it aborts a query by)"
            )
        if name in checked:
            raise ValueError(f"statement_params[{key!r}]: parameter {name} is given twice")
        if item is None or not isinstance(item, (str, int, float, bool)):
            raise TypeError(
                f"statement_params[{key!r}] must be a str, int, float or bool, "
                f"not {type(item).__name__}"
            )
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError(f"statement_params[{key!r}] must be a finite number, not {item!r}")
        if name == "QUERY_TAG":
            _check_tag(item, f"statement_params[{key!r}]")
        elif name == "STATEMENT_TIMEOUT_IN_SECONDS" and (
            isinstance(item, bool) or not isinstance(item, int) or item < 0
        ):
            raise ValueError(
                f"statement_params[{key!r}] must be a whole number of seconds (0: no "
                f"limit), not {item!r}; or use timeout="
            )
        checked[name] = item
    return tuple(checked.items())
