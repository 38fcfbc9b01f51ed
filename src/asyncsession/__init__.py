"""asyncsession: an async Snowflake session.

``session = await Session.builder.configs(params).create()`` — the Snowpark builder,
made async — with server-side cancellation of every cancelled await.
"""

from ._builder import SessionBuilder, SessionCreation
from ._config import InsecureConfigFileWarning, UnknownOptionWarning
from ._errors import (
    ConfigurationError,
    QueryCancelledError,
    SessionClosedError,
    SessionExpiredError,
    TransactionError,
)
from ._job import AsyncJob
from ._query import ResultStream, SqlQuery
from ._registry import RunningQuery
from ._row import Row
from ._session import AsyncSession, Session
from ._transaction import Transaction

__version__ = "0.1.0.dev0"

__all__ = [
    "AsyncJob",
    "AsyncSession",
    "ConfigurationError",
    "InsecureConfigFileWarning",
    "QueryCancelledError",
    "ResultStream",
    "Row",
    "RunningQuery",
    "Session",
    "SessionBuilder",
    "SessionClosedError",
    "SessionCreation",
    "SessionExpiredError",
    "SqlQuery",
    "Transaction",
    "TransactionError",
    "UnknownOptionWarning",
    "__version__",
]
