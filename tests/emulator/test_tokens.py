"""Token lifetimes, server-side session deletion, and login/heartbeat counters, through
the real connector (4.x and 5.x) and the raw protocol.

Snowflake's model: a session token lasts ``validityInSeconds`` (then 390112, and the
connector renews it with the master token); a session idle for longer than
``masterValidityInSeconds`` is dead (390114 for the renewal and everything after);
``client_session_keep_alive`` heartbeats count as activity.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from snowflake.connector.errors import DatabaseError, Error

from asyncsession.testing import LocalSnowflake
from tests.emulator.raw import RawClient
from tests.helpers import CONNECTOR_MAJOR, connect

# 5.2 raises ReauthenticationRequest (a ProgrammingError, so a DatabaseError) for 390114
# and warns that its base class will change.
quiet_reauthentication = pytest.mark.filterwarnings(
    "ignore:`ReauthenticationRequest` currently subclasses:FutureWarning"
)


@pytest.fixture(scope="module")
def shared() -> Iterator[LocalSnowflake]:
    with LocalSnowflake() as sf:
        yield sf


@pytest.fixture
def sf(shared: LocalSnowflake) -> Iterator[LocalSnowflake]:
    """The module's emulator, its token validity back to Snowflake's after each test."""
    yield shared
    shared.set_token_validity(session=3600, master=14400)


def _close_quietly(conn: Any) -> None:
    with contextlib.suppress(Error):
        conn.close()


def test_validity_is_stated_at_login_and_renewal() -> None:
    with LocalSnowflake(session_token_validity=30, master_token_validity=120) as sf:
        raw = RawClient(sf.url)
        assert raw.login_reply["validityInSeconds"] == 30
        assert raw.login_reply["masterValidityInSeconds"] == 120
        assert sf.set_token_validity(session=10, master=40) == {"session": 10, "master": 40}
        renewed = raw.renew()
        assert renewed["success"], renewed
        assert renewed["data"]["validityInSecondsST"] == 10
        assert renewed["data"]["validityInSecondsMT"] == 40
        assert renewed["data"]["masterValidityInSeconds"] == 40
        assert RawClient(sf.url).login_reply["masterValidityInSeconds"] == 40
        raw.logout()


def test_bad_validity_is_a_clear_error(sf: LocalSnowflake) -> None:
    with pytest.raises(ValueError, match="session_token_validity"):
        LocalSnowflake(session_token_validity=0)
    with pytest.raises(ValueError, match="master"):
        sf.set_token_validity(master=-1)


def test_an_old_session_token_is_renewed_by_the_connector(sf: LocalSnowflake) -> None:
    sf.set_token_validity(session=1)
    conn = connect(sf.connection_parameters)
    try:
        sf.wait_until(lambda s: s.session(conn.session_id)["token_age"] > 1.2)
        assert conn.cursor().execute("select 1").fetchone() == (1,)
        assert sf.session(conn.session_id)["renewals"] == 1
    finally:
        conn.close()
    assert conn.session_id not in [s["session_id"] for s in sf.sessions()]  # logged out


@quiet_reauthentication
def test_an_idle_session_dies_with_390114(sf: LocalSnowflake) -> None:
    sf.set_token_validity(session=1, master=2)
    conn = connect(sf.connection_parameters)
    try:
        sf.wait_until(lambda s: s.session(conn.session_id)["idle"] > 2.2)
        # 390112, then the renewal answers 390114: 4.8 raises ProgrammingError(390114);
        # 5.2 ReauthenticationRequest(390114) (a ProgrammingError), or, when its own clock
        # (masterValidityInSeconds from the login) already says the master token expired,
        # DatabaseError(250001) without asking. All are DatabaseErrors with sqlstate 08001.
        died_errnos = {390114} if CONNECTOR_MAJOR < 5 else {390114, 250001}
        with pytest.raises(DatabaseError) as died:
            conn.cursor().execute("select 1")
        assert (died.value.errno, died.value.sqlstate) in {(n, "08001") for n in died_errnos}
        with pytest.raises(DatabaseError) as again:  # dead for good (now without a renewal)
            conn.cursor().execute("select 1")
        assert again.value.errno in died_errnos
    finally:
        _close_quietly(conn)


def test_renewal_with_an_expired_master_token_is_refused_for_good(sf: LocalSnowflake) -> None:
    sf.set_token_validity(session=1, master=2)
    raw = RawClient(sf.url)
    sf.wait_until(lambda s: s.session(raw.session_id)["idle"] > 2.2)
    assert raw.query("select 1")["code"] == "390112"
    refused = raw.renew()
    assert (refused["success"], refused["code"]) == (False, "390114")
    sf.set_token_validity(session=3600, master=14400)  # too late for this session
    assert raw.query("select 1")["code"] == "390114"
    assert raw.post("/session/heartbeat", {})["code"] == "390114"


def test_keep_alive_heartbeats_keep_an_idle_session_alive(sf: LocalSnowflake) -> None:
    # Master validity 6 s: both generations heartbeat every 1-1.5 s (clamped between
    # validity/16 and validity/4), and the session token (2 s) is renewed along the way.
    sf.set_token_validity(session=2, master=6)
    conn = connect(sf.connection_parameters, client_session_keep_alive=True)
    try:
        started = time.monotonic()
        sf.wait_until(
            lambda s: (
                time.monotonic() - started > 9 and s.session(conn.session_id)["heartbeats"] >= 3
            ),
            timeout=60,
        )
        assert conn.cursor().execute("select 1").fetchone() == (1,)
        session = sf.session(conn.session_id)
        assert not session["master_expired"]
        assert session["renewals"] >= 1
        counted = sf.counters()
        assert counted["heartbeats"]["TEST"] >= 3
        assert counted["heartbeats_by_session"][str(conn.session_id)] >= 3
    finally:
        conn.close()


def test_expire_tokens_makes_clients_renew(emulator: LocalSnowflake) -> None:
    with connect(emulator.connection_parameters) as conn:
        assert emulator.expire_tokens() == 1
        assert conn.cursor().execute("select 2").fetchone() == (2,)
        assert emulator.session(conn.session_id)["renewals"] == 1


# ---- deleting a session on the server -----------------------------------------------------
def test_a_deleted_session_is_refused_with_390104(emulator: LocalSnowflake) -> None:
    conn = connect(emulator.connection_parameters)
    try:
        assert emulator.delete_session(conn.session_id) == 0
        assert emulator.sessions() == []
        with pytest.raises(DatabaseError) as refused:
            conn.cursor().execute("select 1")
        assert refused.value.errno == 390104
    finally:
        _close_quietly(conn)
    with pytest.raises(KeyError):
        emulator.delete_session(conn.session_id)


def test_deleting_a_session_aborts_its_queries_and_rolls_back(emulator: LocalSnowflake) -> None:
    table = "deleted_session_rows"
    with connect(emulator.connection_parameters) as other:
        other.cursor().execute(f"create table {table} (a int)")
        conn = connect(emulator.connection_parameters)
        try:
            cur = conn.cursor()
            cur.execute("begin")
            cur.execute(f"insert into {table} values (1)")
            cur.execute_async("select system$wait(60)")
            qid = cur.sfqid
            assert emulator.query(qid)["status"] == "RUNNING"
            assert emulator.delete_session(conn.session_id) == 1
            assert emulator.query(qid)["status"] == "ABORTED"
            assert other.cursor().execute(f"select count(*) from {table}").fetchone() == (0,)
            assert emulator.running_queries() == []
        finally:
            _close_quietly(conn)


# ---- counters -------------------------------------------------------------------------------
def test_logins_and_failed_logins_are_counted_per_user(emulator: LocalSnowflake) -> None:
    assert emulator.counters()["logins"] == {}
    with connect(emulator.connection_parameters):
        pass
    with pytest.raises(DatabaseError):
        connect({**emulator.connection_parameters, "password": "wrong"})
    raw = RawClient(emulator.url)
    raw.post("/session/heartbeat", {})
    counted = emulator.counters()
    assert counted["logins"] == {"TEST": 2}
    assert counted["failed_logins"] == {"TEST": 1}
    assert counted["heartbeats"] == {"TEST": 1}
    assert counted["heartbeats_by_session"] == {str(raw.session_id): 1}
    raw.logout()


def test_a_login_storm_against_a_failing_login_route_is_counted(
    emulator: LocalSnowflake,
) -> None:
    emulator.fail_next("/session/v1/login-request", status=503, count=1)
    with connect(emulator.connection_parameters) as conn:  # the connector retries
        assert conn.cursor().execute("select 1").fetchone() == (1,)
    emulator.fail_next("/session/v1/login-request", status=503, count=1000)
    try:
        for _ in range(3):
            with pytest.raises(Error):
                connect(emulator.connection_parameters, login_timeout=5)
    finally:
        emulator.clear_faults()
    counted = emulator.counters()
    assert counted["failed_logins"]["TEST"] >= 1 + 3  # every attempt, retries included
    assert counted["logins"] == {"TEST": 1}


def test_a_blackholed_login_counts_as_failed(emulator: LocalSnowflake) -> None:
    emulator.blackhole("/session/v1/login-request")
    try:
        login = urllib.request.Request(
            emulator.url + "/session/v1/login-request",
            data=json.dumps({"data": {"LOGIN_NAME": "someone"}}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with pytest.raises(OSError, match="timed out"):
            urllib.request.urlopen(login, timeout=0.5)
    finally:
        emulator.clear_faults()
    assert emulator.counters()["failed_logins"] == {"SOMEONE": 1}


def test_sessions_whose_tokens_were_expired_are_still_listed() -> None:
    """``expire_tokens()`` dates the tokens at -inf: the admin listing (JSON) must not fail."""
    with LocalSnowflake() as sf:
        conn = connect(sf.connection_parameters)
        try:
            sf.expire_tokens()
            assert sf.session(conn.session_id)["token_age"] is None
        finally:
            conn.close()
