"""Behaviour tests of ``Session.builder`` through the real connector and the local emulator.

Config resolution itself is unit-tested in ``test_config.py``; here every path ends in a
real ``snowflake.connector.connect()`` against the emulator (either connector generation).
"""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from snowflake.connector.errors import DatabaseError

from asyncsession import (
    AsyncSession,
    ConfigurationError,
    InsecureConfigFileWarning,
    Session,
    SessionBuilder,
    UnknownOptionWarning,
    _config,
    _local,
)
from asyncsession.testing import LocalSnowflake

#: Distinctive values, so a leak cannot hide among ordinary words ("test", "local", …).
SECRET_PASSWORD = "Pw-9f41c7e2-never-shown"
WRONG_PASSWORD = "Wrong-5b8d03aa-never-shown"
SECRET_TOKEN = "Tok-0c6e55d1-never-shown"
SECRET_PASSCODE = "918273"
SECRET_PRIVATE_KEY = "-----BEGIN PRIVATE KEY-----MIIEv-3a7f-never-shown-----END PRIVATE KEY-----"

# The asyncio backend: some tests exercise asyncio's own API (create_task, wait_for).
pytestmark = [pytest.mark.anyio, pytest.mark.emulator_only]


@pytest.fixture(autouse=True)
def _fresh_permission_warnings() -> Iterator[None]:
    _config._reset_permission_warnings()
    yield
    _config._reset_permission_warnings()


@pytest.fixture
def params(local_snowflake: LocalSnowflake) -> dict[str, Any]:
    return dict(local_snowflake.connection_parameters)


@pytest.fixture(scope="module")
def secret_snowflake() -> Iterator[LocalSnowflake]:
    """An emulator whose password is distinctive enough to search logs and messages for."""
    with LocalSnowflake(password=SECRET_PASSWORD) as sf:
        yield sf


def session_ids(sf: LocalSnowflake) -> set[int]:
    return {s["session_id"] for s in sf.sessions()}


async def wait_until(sf: LocalSnowflake, predicate: Any, within: float = 10) -> Any:
    """``sf.wait_until`` in a worker thread: it polls with ``time.sleep``."""
    return await anyio.to_thread.run_sync(lambda: sf.wait_until(predicate, timeout=within))


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


@pytest.fixture
def sf_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ``$SNOWFLAKE_HOME``; nothing from the real environment is consulted."""
    home = tmp_path / "snowflake_home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("SNOWFLAKE_HOME", str(home))
    for var in ("SNOWFLAKE_DEFAULT_CONNECTION_NAME", *_config.SKIP_READ_WARNING_ENV_VARS):
        monkeypatch.delenv(var, raising=False)
    return home


# ---- the builder ----------------------------------------------------------------------


def test_builder_is_fresh_on_every_access() -> None:
    first = Session.builder
    second = Session.builder
    assert isinstance(first, SessionBuilder)
    assert first is not second
    assert first.config("user", "only_in_first") is first
    assert "only_in_first" in repr(first)
    assert "only_in_first" not in repr(second)
    assert "only_in_first" not in repr(Session.builder)


def test_configs_rejects_a_non_dict() -> None:
    with pytest.raises(ConfigurationError, match=r"configs\(\) takes a dict of options, not list"):
        Session.builder.configs([("account", "a")])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"not str"):
        Session.builder.configs("account=a")  # type: ignore[arg-type]


def test_non_str_option_names_are_rejected() -> None:
    with pytest.raises(ConfigurationError, match=r"option names must be str, not int"):
        Session.builder.config(1, "x")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"option names must be str; got bytes b'user'"):
        Session.builder.configs({b"user": "x"})  # type: ignore[dict-item]


def test_a_rejected_configs_call_leaves_the_builder_unchanged() -> None:
    builder = Session.builder.configs({"user": "kept"})
    with pytest.raises(ConfigurationError):
        builder.configs({"role": "r", 2: "x"})  # type: ignore[dict-item]
    assert "kept" in repr(builder)
    assert "'role'" not in repr(builder)


async def test_option_names_are_case_insensitive_and_later_configs_win(
    local_snowflake: LocalSnowflake, params: dict[str, Any]
) -> None:
    shouting = {key.upper(): value for key, value in params.items()}
    builder = (
        Session.builder.configs(shouting)
        .configs({"Schema": "FIRST_SCHEMA", "Role": params["role"]})
        .config("SCHEMA", "SECOND_SCHEMA")
    )
    assert "'schema': 'SECOND_SCHEMA'" in repr(builder)
    assert "SCHEMA" not in repr(builder).replace("SECOND_SCHEMA", "")
    async with builder.create() as session:
        assert await session.get_current_schema() == "SECOND_SCHEMA"
        assert await session.get_current_database() == params["database"]
        assert session.session_id in session_ids(local_snowflake)


async def test_create_snapshots_the_options(params: dict[str, Any]) -> None:
    builder = Session.builder.configs(params).config("schema", "AT_CREATE")
    creation = builder.create()
    builder.config("schema", "CHANGED_LATER")
    async with creation as session:
        assert await session.get_current_schema() == "AT_CREATE"


# ---- create(): awaitable and async context manager -------------------------------------


async def test_create_is_awaitable(local_snowflake: LocalSnowflake, params: dict[str, Any]) -> None:
    session = await Session.builder.configs(params).create()
    try:
        assert isinstance(session, AsyncSession)
        assert not session.is_closed
        assert session.session_id in session_ids(local_snowflake)
        rows = await session.sql("select 41 + 1").collect()
        assert rows[0][0] == 42
    finally:
        await session.aclose()
    assert session.is_closed
    assert session.session_id not in session_ids(local_snowflake)


async def test_create_as_async_context_manager_closes_on_exit(
    local_snowflake: LocalSnowflake, params: dict[str, Any]
) -> None:
    async with Session.builder.configs(params).create() as session:
        session_id = session.session_id
        assert session_id in session_ids(local_snowflake)
        assert (await session.sql("select 'ok'").collect())[0][0] == "ok"
    assert session.is_closed
    assert session_id not in session_ids(local_snowflake)


async def test_create_context_manager_closes_when_the_body_raises(
    local_snowflake: LocalSnowflake, params: dict[str, Any]
) -> None:
    class Boom(Exception):
        pass

    opened: list[AsyncSession] = []

    async def use_and_fail() -> None:
        async with Session.builder.configs(params).create() as session:
            opened.append(session)
            raise Boom

    with pytest.raises(Boom):
        await use_and_fail()
    [session] = opened
    assert session.is_closed
    assert session.session_id not in session_ids(local_snowflake)


async def test_async_with_await_create(
    local_snowflake: LocalSnowflake, params: dict[str, Any]
) -> None:
    async with await Session.builder.configs(params).create() as session:
        session_id = session.session_id
        assert session_id in session_ids(local_snowflake)
    assert session.is_closed
    assert session_id not in session_ids(local_snowflake)


async def test_close_is_the_snowpark_spelling_and_idempotent(
    local_snowflake: LocalSnowflake, params: dict[str, Any]
) -> None:
    session = await Session.builder.configs(params).create()
    await session.close()
    await session.close()
    assert session.is_closed
    assert session.session_id not in session_ids(local_snowflake)


async def test_library_options_reach_the_session(params: dict[str, Any]) -> None:
    builder = Session.builder.configs(params).configs(
        {"Cancel_Timeout": 2.5, "MAX_CONCURRENT_QUERIES": 7}
    )
    async with builder.create() as session:
        assert session.cancel_timeout == 2.5
        assert session.max_concurrent_queries == 7


async def test_bad_library_option_fails_before_login(
    local_snowflake: LocalSnowflake, params: dict[str, Any]
) -> None:
    before = session_ids(local_snowflake)
    with pytest.raises(ConfigurationError, match=r"option 'cancel_timeout' must be a positive"):
        await Session.builder.configs(params).config("cancel_timeout", -1).create()
    assert session_ids(local_snowflake) <= before


async def test_get_or_create_is_the_snowpark_spelling(params: dict[str, Any]) -> None:
    async with Session.builder.configs(params).getOrCreate() as session:
        assert await session.get_current_schema() == params["schema"]


# ---- app_name ---------------------------------------------------------------------------


async def tag_seen_by_server(sf: LocalSnowflake, session: AsyncSession) -> str:
    marker = f"marker_{uuid.uuid4().hex}"
    await session.sql(f"select '{marker}'").collect()
    [query] = [q for q in sf.queries() if marker in q["sql_text"]]
    assert query["session_id"] == session.session_id
    tag: str = query["query_tag"]
    return tag


async def test_app_name_tags_queries(
    local_snowflake: LocalSnowflake, params: dict[str, Any]
) -> None:
    async with Session.builder.configs(params).app_name("svc").create() as session:
        assert session.query_tag == "APPNAME=svc"
        assert await tag_seen_by_server(local_snowflake, session) == "APPNAME=svc"


async def test_app_name_format_json(
    local_snowflake: LocalSnowflake, params: dict[str, Any]
) -> None:
    builder = Session.builder.app_name("svc", format_json=True).configs(params)
    async with builder.create() as session:
        assert session.query_tag is not None
        assert json.loads(session.query_tag) == {"APPNAME": "svc"}
        assert session.query_tag == '{"APPNAME": "svc"}'  # json.dumps, as Snowpark
        assert await tag_seen_by_server(local_snowflake, session) == '{"APPNAME": "svc"}'


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"query_tag": "mine"}, id="query_tag-option"),
        pytest.param({"QUERY_TAG": "mine"}, id="query_tag-option-upper"),
        pytest.param({"session_parameters": {"query_tag": "mine"}}, id="session-param-lower"),
        pytest.param({"session_parameters": {"QUERY_TAG": "mine"}}, id="session-param-upper"),
    ],
)
@pytest.mark.parametrize("app_name", [None, "svc"])
async def test_an_explicit_query_tag_wins_and_session_query_tag_tells_the_truth(
    local_snowflake: LocalSnowflake,
    params: dict[str, Any],
    options: dict[str, Any],
    app_name: str | None,
) -> None:
    """The tag the server records is the one ``session.query_tag`` reports, on both
    generations (4.x ignores a ``query_tag`` connect option; 5.x honours it)."""
    builder = Session.builder.configs(params).configs(options)
    if app_name is not None:
        builder.app_name(app_name)
    async with builder.create() as session:
        assert session.query_tag == "mine"
        assert await tag_seen_by_server(local_snowflake, session) == "mine"


def test_app_name_must_be_a_non_empty_str() -> None:
    with pytest.raises(ConfigurationError, match="app_name"):
        Session.builder.app_name("")
    with pytest.raises(ConfigurationError, match="app_name"):
        Session.builder.app_name(None)  # type: ignore[arg-type]


# ---- connections.toml / config.toml -----------------------------------------------------


async def test_connection_name_from_connections_toml(
    local_snowflake: LocalSnowflake, sf_home: Path
) -> None:
    write(sf_home / "connections.toml", local_snowflake.connections_toml("local"))
    async with Session.builder.config("connection_name", "local").create() as session:
        assert session.session_id in session_ids(local_snowflake)
        assert await session.get_current_schema() == local_snowflake.schema


async def test_default_connection_from_environment(
    local_snowflake: LocalSnowflake, sf_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        sf_home / "connections.toml",
        '[other]\naccount = "nowhere"\nhost = "127.0.0.1"\nport = 1\n\n'
        + local_snowflake.connections_toml("local"),
    )
    monkeypatch.setenv("SNOWFLAKE_DEFAULT_CONNECTION_NAME", "local")
    async with Session.builder.create() as session:
        assert session.session_id in session_ids(local_snowflake)


async def test_default_connection_name_in_config_toml(
    local_snowflake: LocalSnowflake, sf_home: Path
) -> None:
    write(sf_home / "connections.toml", local_snowflake.connections_toml("local"))
    write(sf_home / "config.toml", 'default_connection_name = "local"\n')
    async with Session.builder.create() as session:
        assert session.session_id in session_ids(local_snowflake)


async def test_profile_in_config_toml_connections_table(
    local_snowflake: LocalSnowflake, sf_home: Path
) -> None:
    section = local_snowflake.connections_toml("local").replace("[local]", "[connections.local]")
    write(sf_home / "config.toml", section)
    async with Session.builder.config("connection_name", "local").create() as session:
        assert session.session_id in session_ids(local_snowflake)


async def test_explicit_options_override_the_profile(
    local_snowflake: LocalSnowflake, sf_home: Path
) -> None:
    write(sf_home / "connections.toml", local_snowflake.connections_toml("local"))
    builder = Session.builder.configs({"connection_name": "local", "SCHEMA": "OVERRIDDEN"})
    async with builder.create() as session:
        assert await session.get_current_schema() == "OVERRIDDEN"
    # The default connection too: an explicit schema does not switch the profile off.
    write(sf_home / "config.toml", 'default_connection_name = "local"\n')
    async with Session.builder.config("schema", "ALSO_OVERRIDDEN").create() as session:
        assert await session.get_current_schema() == "ALSO_OVERRIDDEN"


async def test_connections_file_path_points_elsewhere(
    local_snowflake: LocalSnowflake, sf_home: Path, tmp_path: Path
) -> None:
    # The usual file has a "local" that cannot work; the one given must win.
    write(sf_home / "connections.toml", '[local]\naccount = "nowhere"\nhost = "127.0.0.1"\n')
    elsewhere = write(tmp_path / "elsewhere" / "conns.toml", local_snowflake.connections_toml())
    builder = Session.builder.configs(
        {"connection_name": "local", "connections_file_path": str(elsewhere)}
    )
    async with builder.create() as session:
        assert session.session_id in session_ids(local_snowflake)


async def test_unknown_connection_name_lists_the_known_ones(
    local_snowflake: LocalSnowflake, sf_home: Path
) -> None:
    write(
        sf_home / "connections.toml",
        local_snowflake.connections_toml("local")
        + f'[prod]\naccount = "prod_acc"\npassword = "{SECRET_PASSWORD}"\n',
    )
    with pytest.raises(ConfigurationError, match=r"unknown connection 'lcoal'") as info:
        await Session.builder.config("connection_name", "lcoal").create()
    message = str(info.value)
    assert "['local', 'prod']" in message
    assert "did you mean 'local'?" in message
    assert SECRET_PASSWORD not in message


async def test_group_writable_connections_toml_is_refused(
    local_snowflake: LocalSnowflake, sf_home: Path
) -> None:
    path = write(sf_home / "connections.toml", local_snowflake.connections_toml(), mode=0o620)
    before = session_ids(local_snowflake)
    with pytest.raises(ConfigurationError, match=r"refusing to read .*writable by group") as info:
        await Session.builder.config("connection_name", "local").create()
    assert str(path) in str(info.value)
    assert "chmod 0600" in str(info.value)
    assert session_ids(local_snowflake) <= before  # never logged in


async def test_group_readable_connections_toml_warns_exactly_once(
    local_snowflake: LocalSnowflake, sf_home: Path
) -> None:
    path = write(sf_home / "connections.toml", local_snowflake.connections_toml(), mode=0o640)
    builder = Session.builder.config("connection_name", "local")

    async def connect_twice() -> None:
        for _ in range(2):  # the same file: no second warning
            async with builder.create() as session:
                assert session.session_id in session_ids(local_snowflake)

    with pytest.warns(InsecureConfigFileWarning) as record:
        await connect_twice()
    warned = [w for w in record if issubclass(w.category, InsecureConfigFileWarning)]
    assert len(warned) == 1, [str(w.message) for w in record]
    assert str(path) in str(warned[0].message)
    assert "0640" in str(warned[0].message)


async def test_group_readable_warning_can_be_silenced(
    local_snowflake: LocalSnowflake, sf_home: Path
) -> None:
    write(sf_home / "connections.toml", local_snowflake.connections_toml(), mode=0o640)
    builder = Session.builder.configs(
        {"connection_name": "local", "silence_permission_warning": True}
    )
    async with builder.create() as session:  # filterwarnings=error: a warning would fail
        assert session.session_id in session_ids(local_snowflake)


# ---- secrets ------------------------------------------------------------------------------


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text


async def test_wrong_password_is_a_clear_error_without_the_password(
    secret_snowflake: LocalSnowflake,
) -> None:
    params = {**secret_snowflake.connection_parameters, "password": WRONG_PASSWORD}
    with pytest.raises(DatabaseError) as info:
        await Session.builder.configs(params).create()
    error = info.value
    assert "Incorrect username or password" in str(error)
    assert error.errno == 390100
    formatted = "".join(traceback.format_exception(error))
    assert_no_secret(str(error), WRONG_PASSWORD, SECRET_PASSWORD)
    assert_no_secret(repr(error), WRONG_PASSWORD, SECRET_PASSWORD)
    assert_no_secret(formatted, WRONG_PASSWORD, SECRET_PASSWORD)
    assert secret_snowflake.sessions() == []


def test_builder_repr_hides_secrets() -> None:
    builder = Session.builder.configs(
        {
            "account": "acc",
            "user": "visible_user",
            "password": SECRET_PASSWORD,
            "token": SECRET_TOKEN,
            "private_key": SECRET_PRIVATE_KEY,
            "PASSCODE": SECRET_PASSCODE,
        }
    )
    text = repr(builder)
    assert "visible_user" in text
    assert_no_secret(text, SECRET_PASSWORD, SECRET_TOKEN, SECRET_PRIVATE_KEY, SECRET_PASSCODE)
    assert_no_secret(str(builder), SECRET_PASSWORD, SECRET_TOKEN, SECRET_PASSCODE)


async def test_session_repr_hides_secrets(secret_snowflake: LocalSnowflake) -> None:
    builder = Session.builder.configs(secret_snowflake.connection_parameters)
    async with builder.create() as session:
        open_repr = repr(session)
        assert str(session.session_id) in open_repr
        assert_no_secret(open_repr, SECRET_PASSWORD)
        assert_no_secret(str(session), SECRET_PASSWORD)
        assert_no_secret(repr(session._config), SECRET_PASSWORD)
    assert_no_secret(repr(session), SECRET_PASSWORD)


def _record_texts(record: logging.LogRecord) -> Iterator[str]:
    yield record.getMessage()
    yield str(record.msg)
    args = record.args
    if isinstance(args, dict):
        args = tuple(args.values())
    for arg in args or ():
        yield str(arg)
        yield repr(arg)
    if record.exc_info and record.exc_info[1] is not None:
        yield "".join(traceback.format_exception(record.exc_info[1]))


@pytest.fixture
def debug_everything(caplog: pytest.LogCaptureFixture) -> Any:
    """Root logger at DEBUG; a level set on the 5.x core logger also passes our driver's filter."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="snowflake.connector")
    caplog.set_level(logging.DEBUG, logger="snowflake.connector._core")
    return caplog


async def test_debug_logs_never_contain_secrets(
    secret_snowflake: LocalSnowflake, debug_everything: pytest.LogCaptureFixture
) -> None:
    builder = Session.builder.configs(secret_snowflake.connection_parameters)
    async with builder.create() as session:
        assert (await session.sql("select 1").collect())[0][0] == 1
    params = {**secret_snowflake.connection_parameters, "password": WRONG_PASSWORD}
    with pytest.raises(DatabaseError):
        await Session.builder.configs(params).create()
    records = debug_everything.records
    assert records, "expected some DEBUG records from the connector"
    leaks = [
        f"{r.name}:{r.levelname}: {r.getMessage()[:200]}"
        for r in records
        if any(s in text for text in _record_texts(r) for s in (SECRET_PASSWORD, WRONG_PASSWORD))
    ]
    assert leaks == []


# ---- unknown options ------------------------------------------------------------------------


# Connector 5.x warns about the same key itself ("Unknown parameter 'warehous'"):
# that one is the connector's, and not what this test is about.
@pytest.mark.filterwarnings("ignore:Unknown parameter 'warehous':UserWarning")
async def test_unknown_option_warns_and_the_session_still_works(
    local_snowflake: LocalSnowflake, params: dict[str, Any]
) -> None:
    builder = Session.builder.configs(params).config("WAREHOUS", "x")
    opened: list[AsyncSession] = []

    async def use() -> None:
        async with builder.create() as session:
            opened.append(session)
            assert session.session_id in session_ids(local_snowflake)
            assert (await session.sql("select 1").collect())[0][0] == 1

    with pytest.warns(UnknownOptionWarning, match=r"'warehous'") as record:
        await use()
    [session] = opened
    ours = [w for w in record if issubclass(w.category, UnknownOptionWarning)]
    assert len(ours) == 1
    assert "did you mean 'warehouse'?" in str(ours[0].message)
    assert session.session_id not in session_ids(local_snowflake)


# ---- login in a worker thread ---------------------------------------------------------------


async def test_login_does_not_block_the_event_loop(shared_emulator: LocalSnowflake) -> None:
    emulator = shared_emulator
    emulator.set_latency(300)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        await asyncio.sleep(0)  # let it start
        before = ticks
        session = await Session.builder.configs(emulator.connection_parameters).create()
        during = ticks - before
    finally:
        ticker.cancel()
    emulator.set_latency(0)
    await session.aclose()
    assert during >= 5, f"the event loop ticked only {during} times during a 300+ ms login"


async def test_cancelled_login_leaves_no_session(shared_emulator: LocalSnowflake) -> None:
    emulator = shared_emulator
    before = session_ids(emulator)
    emulator.set_latency(300)
    builder = Session.builder.configs(emulator.connection_parameters)
    with anyio.move_on_after(0.1) as scope:
        await builder.create()
        pytest.fail("create() should have been cancelled")
    assert scope.cancelled_caught
    # The login went on in its thread and reached the server; the cancelled create()
    # waited (up to cancel_timeout) for that thread to log it out again.
    assert session_ids(emulator) == before
    emulator.set_latency(0)


async def test_wait_for_timeout_on_create_leaves_no_session(
    shared_emulator: LocalSnowflake,
) -> None:
    emulator = shared_emulator
    before = session_ids(emulator)
    emulator.set_latency(300)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(
            Session.builder.configs(emulator.connection_parameters).create(), 0.1
        )
    assert session_ids(emulator) == before  # logged in and out again before wait_for returned
    emulator.set_latency(0)


# ---- local_testing ---------------------------------------------------------------------------


async def test_local_testing_runs_and_stops_an_embedded_emulator() -> None:
    assert _local._emulator is None
    builder = Session.builder.config("local_testing", True)
    first = await builder.create()
    try:
        embedded = _local._emulator
        assert embedded is not None
        assert embedded.is_running
        second = await builder.create()
        assert _local._emulator is embedded  # shared, not a second process
        assert first.session_id in session_ids(embedded)
        assert second.session_id in session_ids(embedded)
        assert (await first.sql("select 3").collect())[0][0] == 3
        await second.aclose()
        assert _local._emulator is embedded  # one session left: still running
        assert (await first.sql("select 4").collect())[0][0] == 4
    finally:
        await first.aclose()
    assert _local._emulator is None
    assert not embedded.is_running


async def test_local_testing_failed_login_releases_the_embedded_emulator() -> None:
    assert _local._emulator is None
    builder = Session.builder.configs({"local_testing": True, "password": WRONG_PASSWORD})
    with pytest.raises(DatabaseError, match="Incorrect username or password"):
        await builder.create()
    assert _local._emulator is None
    assert _local._users == 0
