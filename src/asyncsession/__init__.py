"""asyncsession: an async Snowflake session.

``session = await Session.builder.configs(params).create()`` — the Snowpark builder,
made async — with server-side cancellation of every cancelled await.
"""

from ._builder import SessionBuilder, SessionCreation
from ._config import InsecureConfigFileWarning, UnknownOptionWarning
from ._errors import (
    ConfigurationError,
    PoolClosedError,
    PoolTimeout,
    QueryCancelledError,
    SessionClosedError,
    SessionExpiredError,
    TooManyRequests,
    TransactionError,
)
from ._job import AsyncJob
from ._lease import Lease, PoolCreation
from ._pool import SessionPool
from ._pool_options import PoolOptions
from ._query import ResultStream, SqlQuery
from ._registry import RunningQueries, RunningQuery
from ._row import Row, RowBatch
from ._session import AsyncSession, Session
from ._transaction import Transaction

#: The one place the version is written (pyproject.toml reads it from here).
__version__ = "0.1.0.dev0"

__all__ = [
    "AsyncJob",
    "AsyncSession",
    "ConfigurationError",
    "InsecureConfigFileWarning",
    "Lease",
    "PoolClosedError",
    "PoolCreation",
    "PoolOptions",
    "PoolTimeout",
    "QueryCancelledError",
    "ResultStream",
    "Row",
    "RowBatch",
    "RunningQueries",
    "RunningQuery",
    "Session",
    "SessionBuilder",
    "SessionClosedError",
    "SessionCreation",
    "SessionExpiredError",
    "SessionPool",
    "SqlQuery",
    "TooManyRequests",
    "Transaction",
    "TransactionError",
    "UnknownOptionWarning",
    "__version__",
]

# Shown as ``asyncsession.X`` in tracebacks and reprs, not as the private module that
# defines it (httpx's pattern); pickling finds them here too.
for _name in __all__:
    if not _name.startswith("__"):
        globals()[_name].__module__ = "asyncsession"
del _name
