"""Exceptions: the connector's classes, with our subclasses where we add meaning.

Existing ``except snowflake.connector.errors.ProgrammingError`` blocks keep working.
"""

from __future__ import annotations

import snowflake.connector.errors
from snowflake.connector.errors import Error as _ConnectorError
from snowflake.connector.errors import InterfaceError, OperationalError, ProgrammingError

# Snowflake's code and SQL state for "SQL execution canceled".
CANCELED_ERRNO = 604
CANCELED_SQLSTATE = "57014"

#: Server codes meaning the session's tokens no longer work: master token expired (390114),
#: not found (390113) or invalid (390115); session no longer exists (390111), user must log
#: in again (390104), session expired with no renewal (390112). 4.x raises them as
#: ProgrammingError, 5.x as ProgrammingError or DatabaseError (390114 after a failed renew).
MASTER_TOKEN_ERRNOS = frozenset({390113, 390114, 390115})
SESSION_GONE_ERRNOS = frozenset({390104, 390111, 390112}) | MASTER_TOKEN_ERRNOS

#: 5.x raises this ProgrammingError (errno 250001, no server code) when a session token
#: renewal is refused because the master token can never be renewed; 4.x has no such class.
_REAUTHENTICATE: type[BaseException] | None = getattr(
    snowflake.connector.errors, "ReauthenticationRequest", None
)


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


class SessionExpiredError(ProgrammingError):
    """The server no longer accepts the session (token expired, session deleted).

    Raised once per statement, at once and without a retry; the session stays dead
    (``session.is_alive`` is False). A subclass of the connector's ``ProgrammingError``
    (so of ``DatabaseError``), which both generations raise for these codes.
    """

    def __init__(
        self,
        errno: int,
        server_message: str,
        sqlstate: str | None = None,
        query_id: str | None = None,
        master_token: bool | None = None,
    ) -> None:
        if master_token or (master_token is None and errno in MASTER_TOKEN_ERRNOS):
            cause = (
                "its master token expired (a session idle for longer than the token's "
                "validity, 4 hours by default, dies unless client_session_keep_alive is on; "
                "asyncsession turns it on unless you set it to False)"
            )
        else:
            cause = "the server no longer knows it (logged out, deleted, or expired)"
        super().__init__(
            msg=f"the Snowflake session is gone: {cause}. Server said: {server_message}. "
            "Create a new session, or use a SessionPool, which replaces dead sessions",
            errno=errno,
            sqlstate=sqlstate,
            sfqid=query_id,
        )
        self.cause = cause
        self.server_message = server_message
        self._arguments = (errno, server_message, sqlstate, query_id, master_token)

    @classmethod
    def from_error(cls, error: _ConnectorError) -> SessionExpiredError:
        server_message = str(error.raw_msg or error.msg or error)
        master = error.errno in MASTER_TOKEN_ERRNOS or _is_reauthentication(error)
        return cls(int(error.errno or 0), server_message, error.sqlstate, error.sfqid, master)

    def __reduce__(self) -> tuple[type[SessionExpiredError], tuple[object, ...]]:
        return (type(self), self._arguments)


def is_session_gone(error: BaseException) -> bool:
    """Whether ``error`` is the server saying the session is dead."""
    return isinstance(error, _ConnectorError) and (
        error.errno in SESSION_GONE_ERRNOS or _is_reauthentication(error)
    )


#: 5.2's core answers an ``asyncExec`` the server refused with no query id (the session's
#: tokens refused: 390104 for a deleted session, observed) by this ``InternalError``:
#: errno 6 (its internal-error kind, no server code), no sqlstate, no query id. The
#: server's code is lost, so the error alone does not say the session is gone.
UNANSWERED_SUBMISSION_ERRNO = 6
UNANSWERED_SUBMISSION_MESSAGE = "Async query did not report a queryId"


def is_unanswered_submission(error: BaseException) -> bool:
    """Whether ``error`` is 5.x's "the server answered ``asyncExec`` without a query id".

    The statement never ran (no query was made of it). Whether the session is gone is
    then asked of the server (``_driver.Connector5.submit``), and ``is_session_gone``
    judges that answer; this error is never mapped to ``SessionExpiredError`` by itself.
    """
    return (
        isinstance(error, snowflake.connector.errors.InternalError)
        and error.errno == UNANSWERED_SUBMISSION_ERRNO
        and error.sqlstate in (None, "n/a")  # no sqlstate ("n/a": how 4.x's Error says so)
        and error.sfqid is None
        and str(error.raw_msg or "").startswith(UNANSWERED_SUBMISSION_MESSAGE)
    )


#: 5.2's core answers a status request (``GET /monitoring/queries/…``) the server refused
#: (no ``queries`` in its reply: a deleted session's 390104, observed) by this
#: ``InternalError`` errno 6, the server's code lost, as for a submission above.
UNREADABLE_STATUS_MESSAGE = "Invalid Snowflake response. missing field `queries`"


def is_unreadable_status(error: BaseException) -> bool:
    """Whether ``error`` is 5.x's "the status reply has no ``queries``" (a refusal).

    As for ``is_unanswered_submission``, the server is then asked whether the session is
    gone; this error alone is never ``SessionExpiredError``.
    """
    return (
        isinstance(error, snowflake.connector.errors.InternalError)
        and error.errno == UNANSWERED_SUBMISSION_ERRNO
        and error.sqlstate in (None, "n/a")
        and error.sfqid is None
        and str(error.raw_msg or "").startswith(UNREADABLE_STATUS_MESSAGE)
    )


def _is_reauthentication(error: BaseException) -> bool:
    return _REAUTHENTICATE is not None and isinstance(error, _REAUTHENTICATE)


class TransactionError(ProgrammingError):
    """A transaction cannot be used that way (nested, or with ``collect_nowait()``)."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg=msg)


__all__ = [
    "CANCELED_ERRNO",
    "CANCELED_SQLSTATE",
    "MASTER_TOKEN_ERRNOS",
    "SESSION_GONE_ERRNOS",
    "ConfigurationError",
    "PoolClosedError",
    "PoolTimeout",
    "QueryCancelledError",
    "SessionClosedError",
    "SessionExpiredError",
    "TooManyRequests",
    "TransactionError",
    "_ConnectorError",
    "is_session_gone",
    "is_unanswered_submission",
    "is_unreadable_status",
]
