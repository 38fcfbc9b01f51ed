from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
import snowflake.connector

from asyncsession._driver import connector_major
from asyncsession._threads import pool_threads, retire_idle_workers
from asyncsession.testing import LocalSnowflake
from asyncsession.testing._plugin import live_connection

CONNECTOR_MAJOR = connector_major()


def connect(params: dict[str, Any], **extra: Any) -> Any:
    """A plain connector connection, quiet on both generations."""
    kwargs = {**params, **extra}
    if CONNECTOR_MAJOR >= 5:
        kwargs.setdefault("enable_server_session_keep_alive_auto_detection", False)
    return snowflake.connector.connect(**kwargs)


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[LocalSnowflake]:
    """A private emulator for tests that inject faults or count sessions."""
    if live_connection(request.config) is not None:
        pytest.skip("uses a private emulator (live mode)")
    with LocalSnowflake() as sf:
        yield sf


def running_in_session(params: dict[str, Any], session_id: int) -> list[tuple[Any, ...]]:
    """The queries of ``session_id`` still RUNNING, asked in SQL that works on a real account."""
    with connect(params) as conn:
        return list(
            conn.cursor()
            .execute(
                "select query_id, query_text from table("
                f"information_schema.query_history_by_session(session_id => {int(session_id)})) "
                "where execution_status = 'RUNNING'"
            )
            .fetchall()
        )


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "asyncio")


both_backends = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"], indirect=True)


async def until(predicate: Any, deadline: float = 10.0) -> Any:
    """Wait for ``predicate()`` to be truthy, polling, with a deadline (never a bare sleep)."""
    with anyio.fail_after(deadline):
        while not (value := predicate()):  # noqa: ASYNC110 - the state lives in another process or thread
            await anyio.sleep(0.005)
    return value


@pytest.fixture(autouse=True)
def _no_emulator_outlives_its_test() -> Iterator[None]:
    """Every emulator a test starts is stopped by the end of that test."""
    from asyncsession.testing import _launcher

    before = set(_launcher._live)
    yield
    leaked = [e for e in set(_launcher._live) - before if e.is_running]
    for emulator in leaked:
        emulator.stop()
    assert not leaked, f"emulator processes left running by the test: {leaked}"


#: How long a test's worker threads may take to finish their calls after it ends (an
#: abandoned 4.x call against a stopped server retries up to ~15 s before it gives up).
WORKER_DRAIN_SECONDS = 30.0


@pytest.fixture(autouse=True)
def _no_worker_thread_outlives_its_test() -> Iterator[None]:
    """Every worker thread a test used has ended (idle ones are retired) by its end."""
    yield
    deadline = time.monotonic() + WORKER_DRAIN_SECONDS
    while alive := pool_threads():
        retire_idle_workers()
        if time.monotonic() > deadline:
            break
        alive[0].join(0.05)  # wait on the thread itself, bounded
    assert not alive, f"worker threads still busy {WORKER_DRAIN_SECONDS}s after the test: {alive}"


#: The executor's paths, by how many queries in flight take the one-round-trip path.
QUERY_PATHS = {"one-round-trip": 10_000, "submitted": 0, "hybrid": 2}


@pytest.fixture(params=list(QUERY_PATHS))
def query_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Sessions created in the test take this path (``_executor.DEFAULT_SYNC_SLOTS``)."""
    from asyncsession import _executor

    monkeypatch.setattr(_executor, "DEFAULT_SYNC_SLOTS", QUERY_PATHS[request.param])
    return str(request.param)
