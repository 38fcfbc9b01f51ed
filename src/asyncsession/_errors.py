"""Exceptions: the connector's classes, with our subclasses where we add meaning.

Existing ``except snowflake.connector.errors.ProgrammingError`` blocks keep working.
"""

from __future__ import annotations

from snowflake.connector.errors import Error as _ConnectorError
from snowflake.connector.errors import InterfaceError, OperationalError, ProgrammingError

# Snowflake's code and SQL state for "SQL execution canceled".
CANCELED_ERRNO = 604
CANCELED_SQLSTATE = "57014"


class ConfigurationError(InterfaceError, ValueError):
    """A builder option or connections.toml entry is wrong; the message names it."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg=msg)


class SessionClosedError(InterfaceError):
    """An operation was attempted on a closed session; the message names the operation."""

    def __init__(self, operation: str) -> None:
        super().__init__(msg=f"cannot {operation}: the session is closed")
        self.operation = operation


class PoolClosedError(SessionClosedError):
    """An operation was attempted on a closed ``SessionPool``; the message names it."""

    def __init__(self, operation: str) -> None:
        InterfaceError.__init__(self, msg=f"cannot {operation}: the session pool is closed")
        self.operation = operation


class PoolTimeout(OperationalError):
    """No pooled session became free within the lease's ``timeout``.

    The message says how busy the pool was and, when logins are failing, the last login
    error (without secrets). A subclass of the connector's ``OperationalError``, as
    psycopg_pool's ``PoolTimeout`` is of psycopg's.
    """

    def __init__(self, msg: str) -> None:
        super().__init__(msg=msg)


class TooManyRequests(OperationalError):
    """A lease was refused at once: ``max_waiting`` tasks were already waiting for one."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg=msg)


class QueryCancelledError(ProgrammingError):
    """The query was aborted on the server by ``job.cancel()``, ``cancel_all()`` or ``aclose()``.

    Raised to whoever awaits the query; their own task was not cancelled.
    """

    def __init__(self, query_id: str | None, reason: str) -> None:
        super().__init__(
            msg=f"SQL execution canceled ({reason})",
            errno=CANCELED_ERRNO,
            sqlstate=CANCELED_SQLSTATE,
            sfqid=query_id,
        )
        self.reason = reason


__all__ = [
    "CANCELED_ERRNO",
    "CANCELED_SQLSTATE",
    "ConfigurationError",
    "PoolClosedError",
    "PoolTimeout",
    "QueryCancelledError",
    "SessionClosedError",
    "TooManyRequests",
    "_ConnectorError",
]
