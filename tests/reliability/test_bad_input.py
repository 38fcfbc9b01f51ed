"""Bad input, generated: builder options and connections.toml contents.

The outcome is always success or exactly one clear exception (``ConfigurationError``, or a
connector ``Error`` with a message), within a deadline; never a raw ``KeyError`` /
``TypeError`` / ``AttributeError`` from inside a worker thread. And a hostile string
parameter is data, never SQL.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from snowflake.connector.errors import Error

from asyncsession import ConfigurationError, Session
from asyncsession._config import MAX_OPTION_LENGTH, resolve
from asyncsession.testing import LocalSnowflake

pytestmark = pytest.mark.anyio

SETTINGS = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

HUGE = "x" * 70_000

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=10),
    st.just(HUGE),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.builds(object),
)

#: Keys that matter before login, ours and the connector's, in any case.
KEYS = st.sampled_from(
    [
        "account",
        "user",
        "password",
        "host",
        "port",
        "protocol",
        "database",
        "warehouse",
        "session_parameters",
        "private_key_file",
        "cancel_timeout",
        "max_concurrent_queries",
        "local_testing",
        "connection_name",
        "connections_file_path",
        "silence_permission_warning",
        "query_tag",
        "paramstyle",
    ]
)


def any_case(key: str) -> st.SearchStrategy[str]:
    return st.sampled_from([key, key.upper(), key.title(), key.swapcase()])


option_keys = st.one_of(KEYS.flatmap(any_case), st.text(max_size=12))


def check_outcome(error: BaseException | None) -> None:
    if error is None:
        return
    assert isinstance(error, (ConfigurationError, Error)), f"raw {type(error).__name__}: {error!r}"
    assert str(error).strip(), f"{type(error).__name__} without a message"


@pytest.fixture
def empty_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No connections.toml anywhere: a missing account cannot be filled in from a profile."""
    home = tmp_path / "home"
    (home / ".snowflake").mkdir(parents=True)
    monkeypatch.setenv("SNOWFLAKE_HOME", str(home / ".snowflake"))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SNOWFLAKE_DEFAULT_CONNECTION_NAME", raising=False)
    return home


# ---- builder options, resolved ------------------------------------------------------------


@SETTINGS
@given(options=st.dictionaries(option_keys, values, max_size=6))
def test_resolve_gives_a_config_or_a_configuration_error(
    options: dict[str, Any], empty_home: Path
) -> None:
    error: BaseException | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            config = resolve(options, environ={"SNOWFLAKE_HOME": str(empty_home)}, home=empty_home)
        except Exception as e:
            error = e
        else:
            assert config.connect_kwargs or config.library_options.get("local_testing")
    check_outcome(error)
    if error is not None:
        assert isinstance(error, ConfigurationError), repr(error)


# ---- builder options, through create() ------------------------------------------------------

#: Options whose values reach the connector unchecked: a wrong type there raises the
#: connector's own TypeError/ValueError from inside the login thread (see the xfail below).
#: The property test gives them well-typed values; everything else gets anything.
TYPED = {
    "login_timeout": st.integers(min_value=1, max_value=10),
    "network_timeout": st.integers(min_value=1, max_value=10),
    "socket_timeout": st.integers(min_value=1, max_value=10),
    "client_prefetch_threads": st.integers(min_value=1, max_value=8),
    "application": st.text(max_size=10),
    "session_parameters": st.dictionaries(
        st.sampled_from(["QUERY_TAG", "TIMEZONE", "query_tag", "UNKNOWN_PARAM"]),
        st.one_of(st.integers(), st.text(max_size=5)),
        max_size=2,
    ),
}
#: Checked by asyncsession (str keys, port, our options) or ignored by both connectors.
FREE_KEYS = [
    "database",
    "schema",
    "role",
    "warehouse",
    "user",
    "password",
    "account",
    "autocommit",
    "timezone",
    "query_tag",
    "cancel_timeout",
    "max_concurrent_queries",
]

login_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.just(HUGE),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
login_option = st.one_of(
    st.sampled_from(sorted(TYPED)).flatmap(lambda k: st.tuples(any_case(k), TYPED[k])),
    st.tuples(st.sampled_from(FREE_KEYS).flatmap(any_case), login_values),
    st.tuples(st.text(min_size=1, max_size=12), st.text(max_size=5)),  # unknown options
)


async def create_and_close(params: dict[str, Any]) -> BaseException | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with anyio.fail_after(60):
                session = await Session.builder.configs(params).create()
        except TimeoutError:
            raise AssertionError(f"create() hung with {sorted(params)}") from None
        except Exception as e:
            return e
        with anyio.fail_after(30):
            await session.aclose()
    return None


@SETTINGS
@given(extra=st.lists(login_option, max_size=3), drop_account=st.booleans())
async def test_create_gives_a_session_or_one_clear_error(
    extra: list[tuple[str, Any]],
    drop_account: bool,
    local_snowflake: LocalSnowflake,
    empty_home: Path,
) -> None:
    params: dict[str, Any] = dict(local_snowflake.connection_parameters)
    params["login_timeout"] = 10  # a bad value must fail, not wait out the defaults
    if drop_account:
        del params["account"]
        del params["host"]
    params.update(extra)
    error = await create_and_close(params)
    check_outcome(error)
    # A wrongly typed value of a key asyncsession checks is always its ConfigurationError,
    # never whatever the connector makes of it.
    # (What was sent: a later duplicate in ``extra`` replaced an earlier one.)
    wrongly_typed = [key for key, value in params.items() if wrongly_typed_free_key(key, value)]
    if wrongly_typed:
        assert isinstance(error, ConfigurationError), (wrongly_typed, repr(error))


#: The type each checked key of FREE_KEYS must have (None means "not given").
STR_KEYS = {"database", "schema", "role", "warehouse", "user", "password", "account"}
STR_KEYS |= {"timezone", "query_tag"}


def wrongly_typed_free_key(key: str, value: object) -> bool:
    key = key.lower()
    if value is None:
        return False
    if key in STR_KEYS:
        return not isinstance(value, str) or len(value) > MAX_OPTION_LENGTH
    if key == "autocommit":
        return not isinstance(value, bool)
    if key == "cancel_timeout":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return True
        return not (math.isfinite(value) and value > 0)
    if key == "max_concurrent_queries":
        return isinstance(value, bool) or not isinstance(value, int) or value < 1
    return False


#: Guarantee (docs/reliability.md, "Bad configuration"): a wrongly typed value of a key
#: asyncsession checks is one ConfigurationError naming the key, before any login.
@pytest.mark.parametrize("key", [*sorted(STR_KEYS), "autocommit"])
@pytest.mark.parametrize("value", [5, 1.5, True, b"bytes", ["a"], {"a": 1}], ids=repr)
async def test_wrongly_typed_checked_keys_are_a_configuration_error_naming_the_key(
    key: str, value: object, local_snowflake: LocalSnowflake, empty_home: Path
) -> None:
    if key == "autocommit" and isinstance(value, bool):
        value = "true"  # a str is the wrong type here (and would be taken as true)
    params: dict[str, Any] = {
        k: v for k, v in local_snowflake.connection_parameters.items() if k != key
    }
    params[key.upper()] = value  # names are case-insensitive
    sessions_before = len(local_snowflake.sessions())
    error = await create_and_close(params)
    assert isinstance(error, ConfigurationError), repr(error)
    assert f"option {key!r} in the options must be" in str(error), str(error)
    assert len(local_snowflake.sessions()) == sessions_before  # refused before login


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("session_parameters", 5),  # both generations: TypeError
        ("session_parameters", "abc"),  # both: ValueError
        ("client_prefetch_threads", "abc"),  # 4.x TypeError, 5.x ValueError
        ("client_prefetch_threads", float("nan")),  # both: ValueError
        ("client_fetch_threads", "x"),  # 4.x TypeError from the login thread
        ("crl_cache_dir", 12345),  # 4.x TypeError from the login thread
        ("service_name", 12345),  # 4.x: an invalid header, retried until the bound
        ("client_session_keep_alive", "false"),  # both would take it as true
        ("ocsp_fail_open", 1),
        ("retry_max_attempts", 0),
        ("retry_backoff_factor", float("inf")),
    ],
)
async def test_wrongly_typed_connector_options_are_a_configuration_error(
    key: str, value: object, local_snowflake: LocalSnowflake, empty_home: Path
) -> None:
    params: dict[str, Any] = {**local_snowflake.connection_parameters, key: value}
    error = await create_and_close(params)
    assert isinstance(error, ConfigurationError), repr(error)
    assert key in str(error)


# ---- connections.toml contents --------------------------------------------------------------

toml_scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.text(max_size=10).map(lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.just("[1, 2]"),
    st.just("{ a = 1 }"),
    st.just("1979-05-27T07:32:00Z"),
    st.just("nan"),
    st.just('"' + HUGE + '"'),
)
toml_lines = st.tuples(
    st.sampled_from(
        ["account", "user", "port", "host", "password", "session_parameters", "cancel_timeout"]
    ).flatmap(any_case),
    toml_scalars,
).map(lambda kv: f"{kv[0]} = {kv[1]}")
structured_toml = st.lists(toml_lines, max_size=5).map(lambda ls: "[dev]\n" + "\n".join(ls))
toml_bytes = st.one_of(
    st.binary(max_size=60),
    st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),
    structured_toml.map(lambda t: t.encode()),
    structured_toml.map(lambda t: t.encode() + b"\n\xff\xfe"),
    st.just(b"[dev\naccount = "),
    st.just(b"dev = 5\n"),
    st.just(b"[dev]\n[dev]\n"),
)


@SETTINGS
@given(content=toml_bytes)
def test_connections_toml_gives_a_config_or_a_configuration_error(
    content: bytes, tmp_path: Path
) -> None:
    home = tmp_path / "toml"
    home.mkdir(exist_ok=True)
    path = home / "connections.toml"
    path.write_bytes(content)
    path.chmod(0o600)
    error: BaseException | None = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            resolve({"connection_name": "dev"}, environ={"SNOWFLAKE_HOME": str(home)}, home=home)
        except Exception as e:
            error = e
    check_outcome(error)
    if error is not None:
        assert isinstance(error, ConfigurationError), repr(error)
        assert HUGE not in str(error)


# ---- hostile parameters stay data -----------------------------------------------------------

HOSTILE = [
    "'); drop table victims; --",
    "1; drop table victims",
    "' or '1'='1",
    '"); drop table victims; --',
    "\\'; drop table victims; --",
    "$$; drop table victims; $$",
    "?",
    "select 1",
    "\x00",
    "é' || (select 1) || '",
]


@settings(max_examples=25, deadline=None)
@given(texts=st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=40)), max_size=8))
async def test_hostile_string_parameters_stay_data(
    texts: list[str], local_snowflake: LocalSnowflake
) -> None:
    async with await Session.builder.configs(local_snowflake.connection_parameters).create() as s:
        with anyio.fail_after(60):
            await s.sql("create table if not exists victims (v int)").collect()
            results = await s.collect_many([("select ?", [t]) for t in [*HOSTILE[:2], *texts]])
            assert [rows[0][0] for rows in results] == [*HOSTILE[:2], *texts]
            assert (await s.sql("select count(*) from victims").collect())[0][0] == 0
