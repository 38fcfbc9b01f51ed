"""asyncsession: an async Snowflake session.

``session = await Session.builder.configs(params).create()`` — the Snowpark builder,
made async — with server-side cancellation of every cancelled await.
"""

import typing

# The connector first, at the top: imported from deep inside our own modules' imports,
# its import keeps crossing a boundary of CPython 3.11's 16 KiB frame-stack chunks (an
# mmap/munmap pair each time: ~5,000 of them, some 40 ms of system time, on 4.8 and 5.2).
import snowflake.connector

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
from ._pool_options import PoolOptions
from ._registry import RunningQueries, RunningQuery
from ._session import AsyncSession, Session
from ._transaction import Transaction

del snowflake  # imported above for its place, not as a name of ours

if typing.TYPE_CHECKING:
    from ._job import AsyncJob
    from ._lease import Lease, PoolCreation
    from ._pool import SessionPool
    from ._query import ResultStream, SqlQuery
    from ._row import Row, RowBatch

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

#: Public names whose module is imported on first use (``import asyncsession`` costs
#: little over ``import snowflake.connector``): a session's queries, rows and jobs, and
#: the pool. Those modules set ``__module__`` themselves (they can be imported first).
_LAZY = {
    "AsyncJob": "_job",
    "Lease": "_lease",
    "PoolCreation": "_lease",
    "ResultStream": "_query",
    "Row": "_row",
    "RowBatch": "_row",
    "SessionPool": "_pool",
    "SqlQuery": "_query",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


# Shown as ``asyncsession.X`` in tracebacks and reprs, not as the private module that
# defines it (httpx's pattern); pickling finds them here too.
for _name in __all__:
    if not _name.startswith("__") and _name not in _LAZY:
        globals()[_name].__module__ = "asyncsession"
del _name
