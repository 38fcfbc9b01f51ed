"""The 5.x driver: its request-id capture forces INFO on the core's logger only while a
one-round-trip query waits for its request id, and a session it logs out leaves no
finalizer that calls the core (both avoid the core's tracing panic,
docs/upstream/5x-tracing-panic.md). The capture's logic is plain ``logging``: tested on
both generations; what needs the 5.x core is skipped on 4.x."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from asyncsession._driver import _RequestIdCapture, get_driver
from asyncsession.testing import LocalSnowflake
from tests.helpers import CONNECTOR_MAJOR

only_5x = pytest.mark.skipif(CONNECTOR_MAJOR < 5, reason="the 5.x core")


@dataclass
class Handle:
    sql_text: str = "select 1"
    request_id: str | None = None
    query_id: str | None = None
    request_id_known: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def core() -> Iterator[logging.Logger]:
    """A logger standing for the core's, under a parent at WARNING (the user's level)."""
    parent = logging.getLogger(f"tests.capture.{uuid.uuid4().hex}")
    parent.setLevel(logging.WARNING)
    logger = logging.getLogger(f"{parent.name}.core")
    yield logger
    logger.filters.clear()


def record(logger: logging.Logger, level: int, message: str, thread: int) -> logging.LogRecord:
    made = logger.makeRecord(logger.name, level, __file__, 1, message, (), None)
    made.thread = thread
    return made


def sync_line(request_id: str) -> str:
    return f"Executing sync query request_id={request_id}"


def test_info_is_forced_only_until_the_query_s_request_id_line(core: logging.Logger) -> None:
    capture, handle, rid = _RequestIdCapture(core), Handle(), str(uuid.uuid4())
    assert core.level == logging.NOTSET
    capture.begin(1, handle)
    assert core.level == logging.INFO
    assert not capture.filter(record(core, logging.INFO, sync_line(rid), thread=1))  # hidden
    assert handle.request_id == rid
    assert handle.request_id_known.is_set()
    assert core.level == logging.NOTSET  # back before the query's other records
    capture.end(1)  # the call returning afterwards changes nothing
    assert core.level == logging.NOTSET


def test_the_level_stays_forced_while_any_query_waits(core: logging.Logger) -> None:
    capture = _RequestIdCapture(core)
    capture.begin(1, Handle())
    capture.begin(2, Handle())
    capture.end(1)  # ended without a request id line (failed before sending)
    assert core.level == logging.INFO
    capture.end(2)
    assert core.level == logging.NOTSET


def test_another_thread_s_record_neither_ends_the_wait_nor_shows(core: logging.Logger) -> None:
    capture, handle = _RequestIdCapture(core), Handle()
    capture.begin(1, handle)
    assert not capture.filter(record(core, logging.INFO, sync_line(str(uuid.uuid4())), 2))
    assert capture.filter(record(core, logging.WARNING, "a warning", thread=2))
    assert handle.request_id is None
    assert core.level == logging.INFO
    capture.end(1)
    assert core.level == logging.NOTSET


def test_the_user_s_own_level_comes_back(core: logging.Logger) -> None:
    capture = _RequestIdCapture(core)
    core.setLevel(logging.ERROR)
    capture.begin(1, Handle())
    assert core.level == logging.INFO
    assert not capture.filter(record(core, logging.WARNING, "below the user's ERROR", 2))
    capture.end(1)
    assert core.level == logging.ERROR


def test_a_level_set_meanwhile_is_kept(core: logging.Logger) -> None:
    capture = _RequestIdCapture(core)
    capture.begin(1, Handle())
    core.setLevel(logging.ERROR)
    capture.end(1)
    assert core.level == logging.ERROR
    capture.begin(2, Handle())  # forced again from that level, and back to it
    assert core.level == logging.INFO
    capture.end(2)
    assert core.level == logging.ERROR


def test_nothing_is_forced_when_info_is_enabled(core: logging.Logger) -> None:
    capture, handle, rid = _RequestIdCapture(core), Handle(), str(uuid.uuid4())
    core.setLevel(logging.DEBUG)
    capture.begin(1, handle)
    assert core.level == logging.DEBUG
    assert capture.filter(record(core, logging.INFO, sync_line(rid), thread=1))  # shown
    assert handle.request_id == rid
    assert core.level == logging.DEBUG


@only_5x
def test_a_one_round_trip_query_s_request_id_is_captured_and_info_unforced(
    local_snowflake: LocalSnowflake,
) -> None:
    driver = get_driver()
    core = logging.getLogger("snowflake.connector._core")
    before = core.level
    connection = driver.connect(dict(local_snowflake.connection_parameters))
    try:
        cursor = connection.cursor()
        handle = Handle()
        driver.execute(cursor, handle, None)  # type: ignore[attr-defined]  # Connector5's
        assert cursor.fetchall() == [(1,)]
        cursor.close()
        assert handle.request_id is not None
        uuid.UUID(handle.request_id)
        assert core.level == before
    finally:
        driver.logout(connection)


@only_5x
def test_a_logged_out_connection_s_finalizer_does_not_call_the_core(
    local_snowflake: LocalSnowflake, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snowflake.connector._internal.api_client.client_api import core_driver

    driver = get_driver()
    ours = driver.connect(dict(local_snowflake.connection_parameters))
    plain = driver.connect(dict(local_snowflake.connection_parameters))
    driver.logout(ours)
    plain.close()
    calls: list[object] = []
    real = core_driver.connection_is_closed

    def counting(**kwargs: object) -> object:
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(core_driver, "connection_is_closed", counting)
    plain.__del__()  # what the garbage collector runs: the connector's own close calls it
    assert len(calls) == 1
    ours.__del__()
    assert len(calls) == 1
    plain.auto_cleanup = False
