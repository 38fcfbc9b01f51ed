"""Sessions that survive idleness (keep-alive on by default) and one clear error when one dies."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest
from snowflake.connector.errors import DatabaseError, InternalError, ProgrammingError

from asyncsession import Session, SessionExpiredError
from asyncsession._builder import _connect_kwargs
from asyncsession._config import ResolvedConfig
from asyncsession._driver import PROBE_SQL
from asyncsession._errors import (
    UNREADABLE_STATUS_MESSAGE,
    is_session_gone,
    is_unanswered_submission,
    is_unreadable_status,
)
from asyncsession.testing import LocalSnowflake
from tests.helpers import CONNECTOR_MAJOR, both_backends, until

pytestmark = pytest.mark.anyio

#: Master token validity for the idle tests (seconds): short, yet several heartbeats long.
MASTER_SECONDS = 4.0


def kwargs_for(**options: Any) -> dict[str, Any]:
    config = ResolvedConfig(connect_kwargs=dict(options), library_options={}, source="test")
    return _connect_kwargs(config, None)


def test_keep_alive_is_on_by_default_and_false_opts_out() -> None:
    assert kwargs_for(account="a")["client_session_keep_alive"] is True
    assert kwargs_for(account="a", client_session_keep_alive=None)["client_session_keep_alive"]
    # An explicit False (given, or read from connections.toml, merged before this) wins.
    assert (
        kwargs_for(account="a", client_session_keep_alive=False)["client_session_keep_alive"]
        is False
    )


@pytest.fixture
def short_lived(shared_emulator: LocalSnowflake) -> LocalSnowflake:
    """The shared emulator with short token lifetimes (back to Snowflake's after the test)."""
    shared_emulator.set_token_validity(session=1.0, master=MASTER_SECONDS)
    return shared_emulator


@both_backends
async def test_master_token_expiry_is_one_clear_error(short_lived: LocalSnowflake) -> None:
    params = {**short_lived.connection_parameters, "client_session_keep_alive": False}
    async with Session.builder.configs(params).create() as session:
        sid = session.session_id
        assert session.is_alive
        await until(lambda: short_lived.session(sid)["idle"] > MASTER_SECONDS + 0.5, 30)
        with anyio.fail_after(30):  # never a hang, never a retry loop
            with pytest.raises(SessionExpiredError) as caught:
                await session.sql("select 1").collect()
        error = caught.value
        assert isinstance(error, ProgrammingError)
        assert isinstance(error, DatabaseError)
        # 4.x: 390114 from the server; 5.2: ReauthenticationRequest 250001 once the renewal
        # of the session token is refused for an expired master token.
        assert error.errno in (390114, 250001)
        assert "master token expired" in str(error)
        assert "client_session_keep_alive" in str(error)
        assert "SessionPool" in str(error)
        assert not session.is_alive
        assert not session.is_closed
        # Known dead: the next statement fails at once, without a request.
        sent = len(short_lived.queries())
        with pytest.raises(SessionExpiredError):
            await session.sql("select 2").collect()
        with pytest.raises(SessionExpiredError):
            await session.sql("select 3").collect_nowait()
        assert len(short_lived.queries()) == sent
        assert session.running_queries == ()


@both_backends
async def test_idle_session_is_kept_alive_by_default(short_lived: LocalSnowflake) -> None:
    async with Session.builder.configs(short_lived.connection_parameters).create() as session:
        sid = session.session_id
        logged_in = time.monotonic()
        # No statement for longer than the master token's validity; heartbeats meanwhile.
        await until(
            lambda: (
                time.monotonic() - logged_in > MASTER_SECONDS * 1.5
                and short_lived.session(sid)["heartbeats"] >= 3
            ),
            MASTER_SECONDS * 10,
        )
        assert not short_lived.session(sid)["master_expired"]
        assert (await session.sql("select 1").collect())[0][0] == 1
        assert session.is_alive


@both_backends
async def test_session_deleted_on_the_server(emulator: LocalSnowflake) -> None:
    async with Session.builder.configs(emulator.connection_parameters).create() as session:
        job = await session.sql("select system$wait(30)").collect_nowait()
        emulator.delete_session(session.session_id)
        with anyio.fail_after(30):
            with pytest.raises(SessionExpiredError) as caught:
                await session.sql("select 1").collect()
        assert caught.value.errno == 390104
        assert "no longer knows it" in str(caught.value)
        assert not session.is_alive
        with pytest.raises(SessionExpiredError):
            await job.result()
    assert session.is_closed


def test_the_error_pickles_and_names_the_server_message() -> None:
    import pickle

    error = SessionExpiredError.from_error(
        ProgrammingError(msg="Master token expired", errno=390114, sqlstate="08001")
    )
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is SessionExpiredError
    assert (again.errno, again.sqlstate, str(again)) == (390114, "08001", str(error))
    assert "Server said: Master token expired" in str(error)


@both_backends
async def test_collect_nowait_on_a_session_deleted_on_the_server(
    local_snowflake: LocalSnowflake,
) -> None:
    """5.2's core answers the refused asyncExec with a code-less InternalError (errno 6);
    one probe asks the server, whose 390104 is what the caller sees, as on 4.x."""
    params = local_snowflake.connection_parameters
    async with Session.builder.configs(params).create() as session:
        local_snowflake.delete_session(session.session_id)
        with anyio.fail_after(30):
            with pytest.raises(SessionExpiredError) as caught:
                await session.sql("select 1").collect_nowait()
        assert caught.value.errno == 390104
        assert not session.is_alive
        assert session.running_queries == ()


@both_backends
async def test_a_submission_answered_without_a_query_id_on_a_live_session_is_not_expiry(
    shared_emulator: LocalSnowflake,
) -> None:
    """An asyncExec reply with no query id that is not the session's refusal stays the
    connector's error: the probe finds the session alive."""
    async with Session.builder.configs(shared_emulator.connection_parameters).create() as session:
        sid = session.session_id
        shared_emulator.fail_next("/queries/v1/query-request", status=200)
        with pytest.raises(DatabaseError) as caught:
            await session.sql("select 1").collect_nowait()
        assert not isinstance(caught.value, SessionExpiredError)
        assert session.is_alive
        assert (await session.sql("select 2").collect())[0][0] == 2
        sent = [q["sql_text"] for q in shared_emulator.queries() if q["session_id"] == sid]
        if CONNECTOR_MAJOR >= 5:
            assert is_unanswered_submission(caught.value)
            assert sent == [PROBE_SQL, "select 2"]  # the probe ran; the faulted one did not
        else:
            assert sent == ["select 2"]  # 4.x raises the reply's error: no probe


def test_only_the_code_less_submission_error_is_recognised() -> None:
    message = "Async query did not report a queryId"
    unanswered = InternalError(msg=message, errno=6)
    assert is_unanswered_submission(unanswered)
    # By itself it never means the session is gone (the server is asked first).
    assert not is_session_gone(unanswered)
    assert not is_unanswered_submission(InternalError(msg="Mutex poisoned", errno=6))
    assert not is_unanswered_submission(ProgrammingError(msg=message, errno=6))
    assert not is_unanswered_submission(InternalError(msg=message, errno=6, sfqid="01-x"))
    unreadable = InternalError(msg=UNREADABLE_STATUS_MESSAGE + " at line 1 column 30", errno=6)
    assert is_unreadable_status(unreadable)
    assert not is_session_gone(unreadable)
    assert not is_unreadable_status(InternalError(msg="Invalid Snowflake response", errno=6))


@both_backends
@pytest.mark.parametrize("how", ["status", "result"])
async def test_a_job_whose_session_is_deleted_on_the_server(
    local_snowflake: LocalSnowflake, how: str
) -> None:
    """Asking about a job (a status request) once its session is gone: SessionExpiredError
    on both generations (5.2's core answers with a code-less InternalError, errno 6)."""
    params = local_snowflake.connection_parameters
    async with Session.builder.configs(params).create() as session:
        job = await session.sql("select system$wait(30)").collect_nowait()
        local_snowflake.delete_session(session.session_id)
        with anyio.fail_after(30):
            ask = job.status if how == "status" else job.result
            with pytest.raises(SessionExpiredError) as caught:
                await ask()
        assert caught.value.errno == 390104
        assert not session.is_alive
