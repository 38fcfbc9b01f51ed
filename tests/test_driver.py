"""The 4.x driver's bound on the connector's retries (its own logic, no connector needed;
the behaviour through the connector is tests/reliability/test_faults.py)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from snowflake.connector.errors import OperationalError

from asyncsession._backoff import bounded_backoff_policy


def doubling() -> Iterator[int]:
    return (2**n for n in itertools.count())


def test_the_connector_gets_max_attempts_then_an_error() -> None:
    backoff = bounded_backoff_policy(doubling, 4)()
    # One next() as the request starts, one per failed attempt before the next attempt.
    sleeps = [next(backoff) for _ in range(4)]
    assert sleeps == [1, 2, 4, 0]  # no sleep before the failure that ends the loop
    with pytest.raises(OperationalError, match="after 4 attempts"):
        next(backoff)


def test_the_error_names_the_cause_the_connector_was_handling() -> None:
    backoff = bounded_backoff_policy(doubling, 1)()
    next(backoff)
    cause = ConnectionRefusedError("[Errno 111] Connection refused")
    try:
        raise RuntimeError(cause)  # as the connector's RetryRequest(cause)
    except RuntimeError:
        with pytest.raises(OperationalError, match=r"after 1 attempts: \[Errno 111\]") as info:
            next(backoff)
    assert "retry_max_attempts" in str(info.value)


def test_each_request_gets_a_fresh_budget() -> None:
    policy = bounded_backoff_policy(doubling, 2)
    first, second = policy(), policy()
    assert [next(first), next(first)] == [1, 0]
    assert next(second) == 1
