"""Connector 4.x: a bound on how often one failing request is retried.

4.x retries a failing request (connection refused, HTTP 5xx) until ``network_timeout``,
which is infinite by default and, when set, is also a time limit on every query. 5.x has
``retry_max_attempts``; the 4.x driver applies the same option through the connector's
``backoff_policy``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

from snowflake.connector.errors import OperationalError

#: 4.x's errno for a request that could not be made (``errorcode.ER_FAILED_TO_REQUEST``;
#: that module is gone in 5.x).
ER_FAILED_TO_REQUEST = 250003


class _BoundedBackoff:
    """A 4.x backoff iterator that ends the connector's retries of one request.

    4.x retries a failing request (connection refused, 5xx) until ``network_timeout``,
    which is infinite by default and, when set, is also a time limit on every query. Its
    retry loop asks the connection's ``backoff_policy`` for one iterator per request and
    calls ``next()`` once as the request starts, then once per failed attempt before the
    next one: raising from ``next()`` ends the loop with that error.
    """

    def __init__(self, inner: Iterator[Any], max_attempts: int) -> None:
        self._inner = inner
        self._max_attempts = max_attempts
        self._calls = 0

    def __iter__(self) -> _BoundedBackoff:
        return self

    def __next__(self) -> Any:
        self._calls += 1
        if self._calls > self._max_attempts:
            raise _gave_up(self._max_attempts, sys.exc_info()[1])
        if self._calls == self._max_attempts:
            return 0  # no sleep before the failure that ends the loop
        return next(self._inner)


def _gave_up(attempts: int, handled: BaseException | None) -> OperationalError:
    # The connector calls next() while handling its RetryRequest(cause).
    cause = handled.args[0] if handled is not None and handled.args else handled
    reason = f": {cause}" if cause is not None else ""
    return OperationalError(
        msg=f"request failed after {attempts} attempts{reason} "
        "(asyncsession option 'retry_max_attempts' sets how many)",
        errno=ER_FAILED_TO_REQUEST,
    )


def bounded_backoff_policy(
    policy: Callable[[], Iterator[Any]], max_attempts: int
) -> Callable[[], Iterator[Any]]:
    def make() -> Iterator[Any]:
        return _BoundedBackoff(policy(), max_attempts)

    return make
