"""Faults between us and the server: 5xx bursts, expired tokens, a dead or restarted server,
and an abort route that never answers. The outcome is always bounded: success, or a clear
connector error, never a hang.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from snowflake.connector.errors import (
    Error,
    InterfaceError,
    InternalError,
    OperationalError,
    ProgrammingError,
)

from asyncsession import AsyncSession, QueryCancelledError
from asyncsession.testing import LocalSnowflake
from tests.helpers import CONNECTOR_MAJOR, both_backends, session_for, until, wait_running

pytestmark = [pytest.mark.anyio, pytest.mark.emulator_only]

QUERY_REQUEST = "/queries/v1/query-request"


@pytest.fixture(scope="module")
def faulty() -> Iterator[LocalSnowflake]:
    """One emulator for this module's fault tests (faults cleared after each)."""
    with LocalSnowflake() as sf:
        yield sf


@pytest.fixture
def sf(faulty: LocalSnowflake) -> Iterator[LocalSnowflake]:
    faulty.clear_faults()
    yield faulty
    faulty.clear_faults()


def assert_every_burst_fired(sf: LocalSnowflake) -> dict[str, Any]:
    """Every failure burst armed since the last clear really hit a request, all of it."""
    counts: dict[str, Any] = sf.fault_counts()
    bursts = [rule for rule in counts["rules"] if rule["count"] is not None]
    assert bursts, counts
    for rule in bursts:
        assert rule["fired"] == rule["count"], rule
        assert rule["remaining"] == 0, rule
    return counts


def aborts_held(sf: LocalSnowflake) -> int:
    """Abort requests the black hole on "abort-request" has swallowed so far."""
    fired: int = sf.fault_counts()["fired_by_route"].get("abort-request", 0)
    return fired


def mine_running(sf: LocalSnowflake, session: AsyncSession) -> list[dict[str, Any]]:
    return [q for q in sf.running_queries() if q["session_id"] == session.session_id]


# ---- 5xx bursts ---------------------------------------------------------------------------


@both_backends
async def test_a_short_5xx_burst_is_retried_and_the_query_succeeds(sf: LocalSnowflake) -> None:
    async with await session_for(sf) as session:
        sf.fail_next(QUERY_REQUEST, 503, count=2)
        with anyio.fail_after(30):
            rows = await session.sql("select 42").collect()
        assert rows[0][0] == 42
        assert session.running_queries == ()
        counts = assert_every_burst_fired(sf)
        # Both on that query's own request (the retries carry its request id).
        assert list(counts["fired_by_query"].values()) == [2], counts


async def test_a_non_retryable_status_is_a_clear_error_at_once(sf: LocalSnowflake) -> None:
    # 4.x: HttpError 290404; 5.x: InternalError 000006 "Invalid Snowflake response".
    async with await session_for(sf) as session:
        sf.fail_next(QUERY_REQUEST, 404, count=1)
        with anyio.fail_after(10), pytest.raises(Error) as info:
            await session.sql("select 1").collect()
        assert "404" in str(info.value)
        if CONNECTOR_MAJOR >= 5:
            assert type(info.value) is InternalError, repr(info.value)
            assert info.value.errno == 6, repr(info.value)
        else:
            # HttpError only in 4.x (5.x deprecates the name).
            assert type(info.value).__name__ == "HttpError", repr(info.value)
            assert info.value.errno == 290404, repr(info.value)
        assert session.running_queries == ()
        assert (await session.sql("select 1").collect())[0][0] == 1  # still usable


async def test_a_persistent_5xx_burst_is_a_clear_error(sf: LocalSnowflake) -> None:
    # 5.x gives up after retry_max_attempts (~1 s here): OperationalError 000004 naming the
    # status. 4.x alone would retry forever; asyncsession bounds it the same way (250003).
    async with await session_for(sf, retry_max_attempts=3) as session:
        sf.fail_next(QUERY_REQUEST, 503, count=1000)
        started = time.monotonic()
        with anyio.fail_after(30), pytest.raises(OperationalError, match="503") as info:
            await session.sql("select 1").collect()
        print(f"persistent 503: {info.value!r} after {time.monotonic() - started:.1f}s")
        if CONNECTOR_MAJOR >= 5:
            assert info.value.errno == 4
            assert "max attempts (3) reached" in str(info.value)
        else:
            assert info.value.errno == 250003
            assert "request failed after 3 attempts" in str(info.value)
        assert session.running_queries == ()
        sf.clear_faults()
        assert (await session.sql("select 1").collect())[0][0] == 1


ATTEMPTS = 3


@pytest.mark.parametrize("failures", [ATTEMPTS - 1, ATTEMPTS])
async def test_retries_stop_at_exactly_retry_max_attempts(
    sf: LocalSnowflake, failures: int
) -> None:
    """Guarantee: a failing request is tried exactly ``retry_max_attempts`` times.

    ``ATTEMPTS - 1`` failures leave the last attempt to succeed; ``ATTEMPTS`` failures are
    the error. A bound that were higher (or lower) than asked would turn one case around.
    """
    async with await session_for(sf, retry_max_attempts=ATTEMPTS) as session:
        sf.fail_next(QUERY_REQUEST, 503, count=failures)
        with anyio.fail_after(30):
            if failures < ATTEMPTS:
                assert (await session.sql("select 42").collect())[0][0] == 42
            else:
                with pytest.raises(OperationalError, match="503"):
                    await session.sql("select 42").collect()
        # All the failures hit the attempts of that one request, none was left over.
        counts = assert_every_burst_fired(sf)
        assert list(counts["fired_by_request_id"].values()) == [failures], counts
        # Every injected failure was used by this query: the next request is answered.
        assert (await session.sql("select 1").collect())[0][0] == 1
        assert session.running_queries == ()


# ---- result chunks (the cloud-storage downloads of a large result) -------------------------------

CHUNKS = "/_emulator/chunks"
#: Enough rows for several remote chunks after the first 1,000 inline.
BIG = "select range as n from range(300000)"


@both_backends
async def test_a_chunk_download_burst_is_retried_and_the_stream_completes(
    sf: LocalSnowflake,
) -> None:
    async with await session_for(sf) as session:
        sf.fail_next(CHUNKS, 503, count=2)
        with anyio.fail_after(60):
            total = 0
            async for batch in session.sql(BIG).to_arrow_batches():
                total += batch.num_rows
        assert total == 300_000
        counts = assert_every_burst_fired(sf)
        assert sum(counts["fired_by_query"].values()) == 2, counts  # on that query's chunks


async def test_a_persistently_failing_chunk_download_is_a_clear_error(sf: LocalSnowflake) -> None:
    # 4.x (bounded by asyncsession): OperationalError "250003: request failed after 3
    # attempts: 290503: HTTP 503" after ~3 s. 5.x: its core's own chunk retries (~20 s, not
    # retry_max_attempts), then InterfaceError "252005: Failed to convert rows ...
    # non-successful HTTP status".
    async with await session_for(sf, retry_max_attempts=3) as session:
        sf.fail_next(CHUNKS, 503, count=1000)
        started = time.monotonic()
        with anyio.fail_after(60), pytest.raises(Error) as info:
            await session.sql(BIG).collect()
        print(f"chunk 503: {info.value!r} after {time.monotonic() - started:.1f}s")
        if CONNECTOR_MAJOR >= 5:
            assert type(info.value) is InterfaceError, repr(info.value)
            assert info.value.errno == 252005
            assert "non-successful HTTP status" in str(info.value)
        else:
            assert type(info.value) is OperationalError, repr(info.value)
            assert info.value.errno == 250003
            assert "request failed after 3 attempts: 290503: HTTP 503" in str(info.value)
        assert session.running_queries == ()
        sf.clear_faults()
        assert (await session.sql("select 1").collect())[0][0] == 1


# ---- tokens ----------------------------------------------------------------------------------


@both_backends
async def test_expired_session_token_is_renewed(sf: LocalSnowflake) -> None:
    async with await session_for(sf) as session:
        session_id = session.session_id
        assert sf.expire_tokens() >= 1
        with anyio.fail_after(30):
            assert (await session.sql("select 'renewed'").collect())[0][0] == "renewed"
        assert session.session_id == session_id
        # And a job (submitted and polled through other routes) too.
        sf.expire_tokens()
        job = await session.sql("select 'job renewed'").collect_nowait()
        with anyio.fail_after(30):
            assert (await job.result())[0][0] == "job renewed"
        # Same session, on the server's record: both ran in it, and it is still logged in.
        last_two = [q for q in sf.queries() if "renewed" in q["sql_text"]][-2:]
        assert [(q["sql_text"], q["session_id"]) for q in last_two] == [
            ("select 'renewed'", session_id),
            ("select 'job renewed'", session_id),
        ]
        assert session_id in [s["session_id"] for s in sf.sessions()]


# ---- a dead, then restarted, server ------------------------------------------------------------


async def test_killed_server_mid_query_is_a_clear_error_not_a_hang(
    emulator: LocalSnowflake,
) -> None:
    session = await session_for(emulator, cancel_timeout=1, retry_max_attempts=3)
    in_flight: list[Any] = []
    try:

        async def kill_when_running() -> None:
            await wait_running(emulator, session, 1)
            in_flight.extend(session.running_queries)
            emulator.kill()

        errors: list[Error] = []

        async def query() -> None:
            try:
                await session.sql("select system$wait(30)").collect()
            except Error as e:
                errors.append(e)

        started = time.monotonic()
        # OperationalError after 3 attempts: 5.x 000004 "... Connection refused"; 4.x (bounded
        # by asyncsession) 250003 "request failed after 3 attempts: ... Connection refused".
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(kill_when_running)
                await query()
        print(f"killed server: {errors!r} after {time.monotonic() - started:.1f}s")
        assert len(errors) == 1
        assert isinstance(errors[0], OperationalError)
        assert "refused" in str(errors[0]).lower()
        assert session.running_queries == ()
    finally:
        # An abandoned 4.x worker retries until it gets an answer: give it one, and let it end.
        emulator.restart()
        with anyio.move_on_after(60):
            await until(lambda: all(q.call is None or q.call.is_finished for q in in_flight), 60)
        with anyio.fail_after(10):
            await session.aclose()


async def test_after_a_restart_a_new_session_works(
    emulator: LocalSnowflake, caplog: pytest.LogCaptureFixture
) -> None:
    old = await session_for(emulator, cancel_timeout=1)
    assert (await old.sql("select 1").collect())[0][0] == 1
    emulator.restart()  # empty state: the old session is unknown to the new server
    with anyio.fail_after(30):
        async with await session_for(emulator) as new:
            assert (await new.sql("select 1").collect())[0][0] == 1
            assert [s["session_id"] for s in emulator.sessions()] == [new.session_id]
        # The old session gets a clear error (390104 "User must login again"), not a hang.
        with pytest.raises(ProgrammingError, match="login again"):
            await old.sql("select 1").collect()
        await old.aclose()
    assert old.is_closed


# ---- an abort route that never answers -----------------------------------------------------


@both_backends
async def test_cancel_all_is_bounded_when_aborts_are_blackholed(
    sf: LocalSnowflake, caplog: pytest.LogCaptureFixture
) -> None:
    """``cancel_all()`` returns within cancel_timeout, names the query, releases its awaiter.

    (``aclose()`` alone is in test_cancellation.py; here it comes while ``cancel_all()`` is
    still waiting: it must not abort twice, and must be bounded all the same.)
    """
    # Short queries: with the abort lost, they run to their end on the server.
    sql = "select system$wait(3)"
    session = await session_for(sf, cancel_timeout=1.0)
    errors: list[QueryCancelledError] = []
    in_flight: list[Any] = []

    async def run() -> None:
        try:
            await session.sql(sql).collect()
        except QueryCancelledError as e:
            errors.append(e)

    caplog.set_level(logging.WARNING, logger="asyncsession")
    try:
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(run)
            await wait_running(sf, session, 2)
            in_flight.extend(session.running_queries)
            sf.blackhole("abort-request")
            sf.blackhole("query-request")  # SYSTEM$CANCEL_ALL_QUERIES is lost too
            started = time.monotonic()
            with anyio.fail_after(1.0 * 2 + 1.5):
                async with anyio.create_task_group() as inner:
                    inner.start_soon(session.cancel_all)
                    # aclose() comes once cancel_all()'s aborts are held by the black hole.
                    await until(lambda: aborts_held(sf) >= 2)
                    inner.start_soon(session.aclose)
            elapsed = time.monotonic() - started
            # Guarantee: an abort already in flight is not posted twice (aclose() waits
            # for cancel_all()'s): one abort request per query reached the server.
            assert aborts_held(sf) == 2
        assert elapsed < 1.0 * 2 + 1.0, elapsed
        assert [e.reason for e in errors] == ["cancel_all()", "cancel_all()"]
        assert session.running_queries == ()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        unconfirmed = [w for w in warnings if "could not confirm" in w]
        assert unconfirmed, warnings
        for query in in_flight:
            assert any(str(query) in w for w in unconfirmed), (str(query), warnings)
        assert session.is_closed
    finally:
        sf.clear_faults()
        # The abandoned workers end with their queries (3 s); don't leave them behind.
        await until(lambda: all(q.call is None or q.call.is_finished for q in in_flight), 15)
        await session.aclose()
    assert session.session_id not in [s["session_id"] for s in sf.sessions()]
