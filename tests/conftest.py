"""The suite's fixtures, and its end-of-test checks (no emulator process or worker thread
outlives its test). Helpers to import are in ``tests/helpers.py``."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from asyncsession._threads import pool_threads, retire_idle_workers
from asyncsession.testing import LocalSnowflake
from asyncsession.testing._plugin import live_connection
from asyncsession.testing._protocol import MASTER_TOKEN_VALIDITY, SESSION_TOKEN_VALIDITY


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[LocalSnowflake]:
    """A private emulator for tests that inject faults or count sessions."""
    if live_connection(request.config) is not None:
        pytest.skip("uses a private emulator (live mode)")
    with LocalSnowflake() as sf:
        yield sf


@pytest.fixture
def shared_emulator(local_snowflake: LocalSnowflake) -> Iterator[LocalSnowflake]:
    """The session's emulator for a test that injects faults or latency, or changes token
    validity, without needing a server of its own (no process to start: seconds saved per
    test). Faults, latency and token validity are back to the defaults when it ends. A test
    that kills the server, or counts what the server saw since it started, takes
    ``emulator``; one that counts here compares with a figure taken at its start."""
    yield local_snowflake
    local_snowflake.clear_faults()
    local_snowflake.set_token_validity(session=SESSION_TOKEN_VALIDITY, master=MASTER_TOKEN_VALIDITY)


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return getattr(request, "param", "asyncio")


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


#: The executor's paths: how many queries in flight take the one-round-trip path, and
#: whether submitted ones use the 5.x native core (``_native``) where it applies.
QUERY_PATHS = {
    "one-round-trip": (10_000, True),
    "submitted": (0, True),
    "submitted-threads": (0, False),
    "hybrid": (2, True),
}


@pytest.fixture(params=list(QUERY_PATHS))
def query_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Sessions created in the test take this path (``_executor.DEFAULT_SYNC_SLOTS`` and
    ``DEFAULT_NATIVE``). "submitted-threads" differs from "submitted" only where the
    native core applies (5.x under asyncio); elsewhere it is skipped."""
    from asyncsession import _executor
    from asyncsession._driver import connector_major

    slots, native = QUERY_PATHS[request.param]
    if not native and (
        connector_major() < 5 or request.getfixturevalue("anyio_backend") != "asyncio"
    ):
        pytest.skip("the same path as 'submitted' here (no native core)")
    monkeypatch.setattr(_executor, "DEFAULT_SYNC_SLOTS", slots)
    monkeypatch.setattr(_executor, "DEFAULT_NATIVE", native)
    return str(request.param)
