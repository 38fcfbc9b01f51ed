"""Tests for asyncsession._config: option normalization, profiles, files, errors.

Every test passes ``environ=`` and ``home=`` (directories under ``tmp_path``), so the
real ``~/.snowflake`` and the process environment are never consulted.
"""

from __future__ import annotations

import math
import os
import random
import string
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from asyncsession import _config, _connections_file
from asyncsession._config import (
    CONNECT_OPTIONS,
    LIBRARY_OPTIONS,
    MAX_OPTION_LENGTH,
    SECRET_KEYS,
    InsecureConfigFileWarning,
    ResolvedConfig,
    UnknownOptionWarning,
    normalize_options,
    redact,
    resolve,
)
from asyncsession._errors import ConfigurationError

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")

SECRET = "s3cr3t-VALUE-never-shown"
EXPLICIT = {"account": "acc", "user": "me"}


@pytest.fixture(autouse=True)
def _fresh_warning_memory() -> Iterator[None]:
    _config._reset_permission_warnings()
    yield
    _config._reset_permission_warnings()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def sfdir(home: Path) -> Path:
    path = home / ".snowflake"
    path.mkdir()
    return path


def write(path: Path, text: str | bytes, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def run(
    options: Mapping[str, object], home: Path, env: Mapping[str, str] | None = None
) -> ResolvedConfig:
    return resolve(options, environ=dict(env or {}), home=home)


DEV = '[dev]\naccount = "acc_dev"\nuser = "u_dev"\npassword = "' + SECRET + '"\n'


# --- constants ------------------------------------------------------------------------


def test_library_options_exact() -> None:
    assert (
        frozenset(
            {
                "connection_name",
                "connections_file_path",
                "local_testing",
                "cancel_timeout",
                "max_concurrent_queries",
                "silence_permission_warning",
            }
        )
        == LIBRARY_OPTIONS
    )


def test_secret_keys_cover_both_connectors() -> None:
    expected = {
        "password",
        "passcode",
        "token",
        "private_key",
        "private_key_file_pwd",
        "private_key_passphrase",
        "private_key_password",
        "oauth_client_secret",
        "proxy_password",
        "master_token",
        "session_token",
        "external_session_id",
        "proxy",
    }
    assert expected <= SECRET_KEYS
    assert SECRET_KEYS <= CONNECT_OPTIONS
    assert not LIBRARY_OPTIONS & CONNECT_OPTIONS


def test_connect_options_cover_installed_connector() -> None:
    """The hard-coded set must include every option the installed connector knows."""
    import snowflake.connector

    major = int(snowflake.connector.__version__.split(".")[0])
    if major < 5:
        from snowflake.connector.connection import DEFAULT_CONFIGURATION

        assert set(DEFAULT_CONFIGURATION) <= CONNECT_OPTIONS
    else:
        from snowflake.connector.connection_config import ConnectionConfig

        known = set(ConnectionConfig._all_field_names()) | set(ConnectionConfig._ALIAS_MAP)
        assert known - {"connection_name", "connections_file_path"} <= CONNECT_OPTIONS
        assert set(ConnectionConfig._SENSITIVE_PARAMS) <= SECRET_KEYS
    assert _config._connector_major() == major


def test_option_types_agree_with_installed_connector() -> None:
    """Every option we type-check has that type in the installed connector's catalogue."""
    import typing

    from asyncsession import _options

    tables = {
        bool: _options.BOOL_OPTIONS,
        int: _options.INT_OPTIONS | _options.POSITIVE_INT_OPTIONS,
        str: _options.STR_OPTIONS,
        float: _options.FLOAT_OPTIONS,
    }
    if _config._connector_major() < 5:
        from snowflake.connector.connection import DEFAULT_CONFIGURATION

        def accepted(key: str) -> set[type] | None:
            if key not in DEFAULT_CONFIGURATION:
                return None
            types = DEFAULT_CONFIGURATION[key][1]
            return set(types if isinstance(types, tuple) else (types,)) - {type(None)}
    else:
        from snowflake.connector.connection_config import ConnectionConfig

        hints = typing.get_type_hints(ConnectionConfig)

        def accepted(key: str) -> set[type] | None:
            if key not in hints:
                return None
            return set(typing.get_args(hints[key]) or (hints[key],)) - {type(None)}

    for expected, keys in tables.items():
        for key in keys:
            got = accepted(key)
            assert got is None or got == {expected}, (key, expected, got)


# --- normalize_options / redact / repr -------------------------------------------------


def test_normalize_lowercases_keys() -> None:
    assert normalize_options({"Account": "a", "USER": "u", "role": "r"}) == {
        "account": "a",
        "user": "u",
        "role": "r",
    }


def test_normalize_rejects_non_str_key() -> None:
    with pytest.raises(ConfigurationError, match=r"must be str; got int 42"):
        normalize_options({42: "x"})  # type: ignore[dict-item]


def test_normalize_collision_with_different_values_names_both_keys() -> None:
    with pytest.raises(ConfigurationError) as info:
        normalize_options({"Password": SECRET, "PASSWORD": "other"})
    message = str(info.value)
    assert "'Password'" in message
    assert "'PASSWORD'" in message
    assert SECRET not in message


def test_normalize_collision_with_equal_values_is_fine() -> None:
    assert normalize_options({"Role": "r", "ROLE": "r"}) == {"role": "r"}


def test_redact_replaces_every_secret() -> None:
    options: dict[str, object] = {key: SECRET for key in SECRET_KEYS}
    options.update({"account": "acc", "Password": SECRET, "empty_token": None})
    out = redact(options)
    assert all(out[key] == "***" for key in SECRET_KEYS)
    assert out["Password"] == "***"
    assert out["account"] == "acc"
    assert out["empty_token"] is None
    assert options["password"] == SECRET  # the input is not modified


def test_redact_private_key_objects_and_secretish_unknown_keys() -> None:
    class RSAPrivateKey:  # stands in for cryptography's class
        pass

    key = RSAPrivateKey()
    out = redact({"some_key": key, "pasword": SECRET, "my_api_token": b"x", "port": 443})
    assert out == {"some_key": "***", "pasword": "***", "my_api_token": "***", "port": 443}


def test_repr_never_shows_secrets(home: Path) -> None:
    secrets = {key: SECRET + key for key in SECRET_KEYS - {"private_key", "proxy"}}
    resolved = run({**EXPLICIT, **secrets, "max_concurrent_queries": 2}, home)
    for text in (repr(resolved), str(resolved)):
        assert SECRET not in text
        assert "'***'" in text
        assert "max_concurrent_queries" in text
    assert resolved.connect_kwargs["password"] == SECRET + "password"


# --- library options -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "type_name"),
    [
        ("cancel_timeout", True, "bool"),
        ("cancel_timeout", "5", "str"),
        ("cancel_timeout", 0, "int"),
        ("cancel_timeout", -1.5, "float"),
        ("cancel_timeout", math.nan, "float"),
        ("cancel_timeout", math.inf, "float"),
        ("max_concurrent_queries", 0, "int"),
        ("max_concurrent_queries", 2.0, "float"),
        ("max_concurrent_queries", True, "bool"),
        ("max_concurrent_queries", -1, "int"),
        ("max_concurrent_queries", "8", "str"),
        ("local_testing", "yes", "str"),
        ("local_testing", 1, "int"),
        ("connection_name", "", "str"),
        ("connection_name", "  ", "str"),
        ("connection_name", 7, "int"),
        ("connections_file_path", 7, "int"),
        ("connections_file_path", "", "str"),
        ("connections_file_path", b"/x", "bytes"),
        ("silence_permission_warning", "true", "str"),
    ],
)
def test_library_option_types(home: Path, key: str, value: object, type_name: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        run({**EXPLICIT, key: value}, home)
    assert repr(key) in str(info.value)
    assert type_name in str(info.value)


def test_library_options_are_split_out(home: Path) -> None:
    given = {
        "cancel_timeout": 2.5,
        "max_concurrent_queries": 4,
        "silence_permission_warning": False,
    }
    resolved = run({**EXPLICIT, **{k.upper(): v for k, v in given.items()}}, home)
    assert resolved.library_options == given
    assert resolved.connect_kwargs == EXPLICIT
    assert resolved.source == "explicit options"


def test_library_option_none_means_absent(home: Path) -> None:
    resolved = run({**EXPLICIT, "cancel_timeout": None, "connection_name": None}, home)
    assert resolved.library_options == {}
    assert resolved.connect_kwargs == EXPLICIT


def test_library_option_inside_profile_is_refused(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", '[dev]\naccount = "a"\nmax_concurrent_queries = 3\n')
    expected = r"'max_concurrent_queries' in .*connections.toml \[dev\]"
    with pytest.raises(ConfigurationError, match=expected):
        run({"connection_name": "dev"}, home)


# --- which profile --------------------------------------------------------------------


def test_connection_name_uses_profile_and_explicit_wins(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", DEV)
    resolved = run({"connection_name": "dev", "USER": "explicit_user", "role": "r"}, home)
    assert resolved.connect_kwargs == {
        "account": "acc_dev",
        "user": "explicit_user",
        "password": SECRET,
        "role": "r",
    }
    assert resolved.library_options == {"connection_name": "dev"}
    assert resolved.source == f"connection 'dev' in {sfdir / 'connections.toml'}"
    assert "connection_name" not in resolved.connect_kwargs


def test_local_testing_reads_no_file(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", "this is not toml", mode=0o666)
    resolved = run({"local_testing": True}, home)
    assert resolved.connect_kwargs == {}
    assert resolved.library_options == {"local_testing": True}


def test_local_testing_false_still_needs_account(home: Path) -> None:
    with pytest.raises(ConfigurationError, match="no account"):
        run({"local_testing": False, "user": "u"}, home)


def test_connection_name_wins_over_local_testing(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", DEV)
    resolved = run({"connection_name": "dev", "local_testing": True}, home)
    assert resolved.connect_kwargs["account"] == "acc_dev"


def test_no_where_keys_means_default_connection(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", '[default]\naccount = "acc_default"\n')
    resolved = run({"user": "u", "warehouse": "wh"}, home)
    assert resolved.connect_kwargs == {"account": "acc_default", "user": "u", "warehouse": "wh"}
    assert resolved.source.startswith("default connection 'default' in ")


def test_empty_options_mean_default_connection(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", '[default]\naccount = "acc_default"\n')
    assert run({}, home).connect_kwargs == {"account": "acc_default"}


@pytest.mark.parametrize("key", ["account", "ACCOUNT", "host", "server_url"])
def test_explicit_where_key_reads_no_file(home: Path, sfdir: Path, key: str) -> None:
    # Both files are broken and group-writable: reading either would fail.
    write(sfdir / "connections.toml", "[[[", mode=0o666)
    write(sfdir / "config.toml", "[[[", mode=0o666)
    resolved = run({key: "somewhere", "user": "u"}, home)
    assert resolved.connect_kwargs == {key.lower(): "somewhere", "user": "u"}
    assert resolved.source == "explicit options"


# --- directories ----------------------------------------------------------------------


def test_snowflake_home_wins_when_it_exists(home: Path, sfdir: Path, tmp_path: Path) -> None:
    write(sfdir / "connections.toml", '[default]\naccount = "from_dot_snowflake"\n')
    other = tmp_path / "sfhome"
    write(other / "connections.toml", '[default]\naccount = "from_sfhome"\n')
    resolved = run({}, home, {"SNOWFLAKE_HOME": str(other)})
    assert resolved.connect_kwargs["account"] == "from_sfhome"


def test_missing_snowflake_home_falls_back_to_dot_snowflake(
    home: Path, sfdir: Path, tmp_path: Path
) -> None:
    write(sfdir / "connections.toml", '[default]\naccount = "from_dot_snowflake"\n')
    resolved = run({}, home, {"SNOWFLAKE_HOME": str(tmp_path / "missing")})
    assert resolved.connect_kwargs["account"] == "from_dot_snowflake"


def test_snowflake_home_tilde_expands_to_given_home(home: Path) -> None:
    write(home / "cfg" / "connections.toml", '[default]\naccount = "tilde"\n')
    resolved = run({}, home, {"SNOWFLAKE_HOME": "~/cfg"})
    assert resolved.connect_kwargs["account"] == "tilde"


def test_xdg_config_home(home: Path, tmp_path: Path) -> None:
    xdg = tmp_path / "xdg"
    write(xdg / "snowflake" / "connections.toml", '[default]\naccount = "xdg"\n')
    resolved = run({}, home, {"XDG_CONFIG_HOME": str(xdg)})
    assert resolved.connect_kwargs["account"] == "xdg"


def test_dot_config_when_no_xdg(home: Path) -> None:
    write(home / ".config" / "snowflake" / "connections.toml", '[default]\naccount = "dotcfg"\n')
    assert run({}, home).connect_kwargs["account"] == "dotcfg"
    # a relative XDG_CONFIG_HOME is ignored, as the XDG spec says
    assert run({}, home, {"XDG_CONFIG_HOME": "rel"}).connect_kwargs["account"] == "dotcfg"


def test_connections_file_path_overrides_connections_toml(
    home: Path, sfdir: Path, tmp_path: Path
) -> None:
    write(sfdir / "connections.toml", '[dev]\naccount = "ignored"\n')
    write(sfdir / "config.toml", 'default_connection_name = "dev"\n[connections.dev]\nrole = "r"\n')
    custom = write(tmp_path / "elsewhere.toml", '[dev]\naccount = "custom"\n')
    resolved = run({"connections_file_path": custom}, home)
    assert resolved.connect_kwargs == {"account": "custom", "role": "r"}
    assert resolved.library_options == {"connections_file_path": custom}
    assert str(custom) in resolved.source


def test_connections_file_path_tilde(home: Path) -> None:
    write(home / "my.toml", '[x]\naccount = "a"\n')
    resolved = run({"connections_file_path": "~/my.toml", "connection_name": "x"}, home)
    assert resolved.connect_kwargs == {"account": "a"}


def test_connections_file_path_missing_is_an_error(home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigurationError, match=r"connections_file_path .*nope\.toml"):
        run({"connections_file_path": str(missing), "connection_name": "x"}, home)


# --- default connection name ----------------------------------------------------------

CONNS = """
[default]
account = "acc_default"
[from_env]
account = "acc_env"
[from_config]
account = "acc_config"
"""


def test_default_name_env_beats_config(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", CONNS)
    write(sfdir / "config.toml", 'default_connection_name = "from_config"\n')
    env = {"SNOWFLAKE_DEFAULT_CONNECTION_NAME": "from_env"}
    resolved = run({}, home, env)
    assert resolved.connect_kwargs["account"] == "acc_env"
    assert resolved.source.startswith("default connection 'from_env'")


def test_default_name_from_config_toml(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", CONNS)
    write(sfdir / "config.toml", 'default_connection_name = "from_config"\n')
    env = {"SNOWFLAKE_DEFAULT_CONNECTION_NAME": ""}  # empty is ignored
    assert run({}, home, env).connect_kwargs["account"] == "acc_config"


def test_default_name_builtin(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", CONNS)
    assert run({}, home).connect_kwargs["account"] == "acc_default"


def test_default_connection_name_must_be_str(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", CONNS)
    write(sfdir / "config.toml", "default_connection_name = 3\n")
    with pytest.raises(ConfigurationError, match=r"'default_connection_name' in .*config\.toml"):
        run({}, home)


def test_explicit_connection_name_beats_default_name(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", CONNS)
    env = {"SNOWFLAKE_DEFAULT_CONNECTION_NAME": "from_env"}
    resolved = run({"connection_name": "from_config"}, home, env)
    assert resolved.connect_kwargs["account"] == "acc_config"


# --- precedence -----------------------------------------------------------------------


def test_precedence_explicit_then_connections_then_config(home: Path, sfdir: Path) -> None:
    write(
        sfdir / "connections.toml",
        '[dev]\naccount = "acc_conn"\nwarehouse = "wh_conn"\nuser = "u_conn"\n',
    )
    write(
        sfdir / "config.toml",
        '[connections.dev]\naccount = "acc_cfg"\nwarehouse = "wh_cfg"\ndatabase = "db_cfg"\n'
        '[connections.cfgonly]\naccount = "acc_only"\n',
    )
    resolved = run({"connection_name": "dev", "user": "u_explicit"}, home)
    assert resolved.connect_kwargs == {
        "account": "acc_conn",
        "warehouse": "wh_conn",
        "database": "db_cfg",
        "user": "u_explicit",
    }
    assert str(sfdir / "connections.toml") in resolved.source
    assert str(sfdir / "config.toml") in resolved.source
    # a profile only config.toml has is found too
    only = run({"connection_name": "cfgonly"}, home)
    assert only.connect_kwargs == {"account": "acc_only"}
    assert only.source == f"connection 'cfgonly' in {sfdir / 'config.toml'}"


def test_profile_keys_are_case_insensitive(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", '[dev]\nACCOUNT = "a"\nWareHouse = "w"\n')
    resolved = run({"connection_name": "dev", "warehouse": "explicit"}, home)
    assert resolved.connect_kwargs == {"account": "a", "warehouse": "explicit"}


def test_profile_case_collision_names_the_file(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", '[dev]\naccount = "a"\nAccount = "b"\n')
    with pytest.raises(ConfigurationError, match=r"connections\.toml \[dev\]"):
        run({"connection_name": "dev"}, home)


def test_profile_nested_tables_are_copied(home: Path, sfdir: Path) -> None:
    write(
        sfdir / "connections.toml",
        '[dev]\naccount = "a"\n[dev.session_parameters]\nQUERY_TAG = "t"\n',
    )
    resolved = run({"connection_name": "dev"}, home)
    assert resolved.connect_kwargs["session_parameters"] == {"QUERY_TAG": "t"}


def test_explicit_dict_values_are_copied(home: Path) -> None:
    params = {"QUERY_TAG": "t"}
    resolved = run({**EXPLICIT, "session_parameters": params}, home)
    resolved.connect_kwargs["session_parameters"]["X"] = 1  # 4.x mutates what it gets
    assert params == {"QUERY_TAG": "t"}


# --- file errors ----------------------------------------------------------------------


def test_unknown_connection_lists_known_names_and_files(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", '[zeta]\naccount = "z"\n[alpha]\naccount = "a"\n')
    write(sfdir / "config.toml", '[connections.mid]\naccount = "m"\n')
    with pytest.raises(ConfigurationError) as info:
        run({"connection_name": "alpah"}, home)
    message = str(info.value)
    assert "'alpah'" in message
    assert "['alpha', 'mid', 'zeta']" in message
    assert "did you mean 'alpha'" in message
    assert str(sfdir / "connections.toml") in message
    assert str(sfdir / "config.toml") in message


def test_unknown_default_connection_says_where_the_name_came_from(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", '[dev]\naccount = "a"\n')
    with pytest.raises(ConfigurationError, match=r"'default' \(the built-in default name\)"):
        run({}, home)
    with pytest.raises(ConfigurationError, match=r"SNOWFLAKE_DEFAULT_CONNECTION_NAME"):
        run({}, home, {"SNOWFLAKE_DEFAULT_CONNECTION_NAME": "prod"})


def test_named_connection_without_any_file_lists_every_path(home: Path, tmp_path: Path) -> None:
    sf_home = tmp_path / "missing_sfhome"
    with pytest.raises(ConfigurationError) as info:
        run({"connection_name": "dev"}, home, {"SNOWFLAKE_HOME": str(sf_home)})
    message = str(info.value)
    assert "no connections file was found" in message
    for path in (
        sf_home,
        home / ".snowflake",
        home / ".config" / "snowflake" / "connections.toml",
        home / ".config" / "snowflake" / "config.toml",
    ):
        assert str(path) in message


def test_default_connection_without_any_file_says_no_account(home: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        run({"user": "u"}, home)
    message = str(info.value)
    assert "no account: set 'account' (or 'host')" in message
    assert str(home / ".config" / "snowflake" / "connections.toml") in message


def test_invalid_toml_names_file_line_and_column(home: Path, sfdir: Path) -> None:
    path = write(sfdir / "connections.toml", '[dev]\naccount = "a"\nuser = \n')
    with pytest.raises(ConfigurationError) as info:
        run({"connection_name": "dev"}, home)
    message = str(info.value)
    assert str(path) in message
    assert "line 3" in message
    assert "column" in message


def test_invalid_config_toml_is_reported_too(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", DEV)
    path = write(sfdir / "config.toml", "default_connection_name = \n")
    with pytest.raises(ConfigurationError, match=rf"invalid TOML in {path}.*line 1"):
        run({"connection_name": "dev"}, home)


def test_not_utf8_names_file(home: Path, sfdir: Path) -> None:
    path = write(sfdir / "connections.toml", b'[dev]\naccount = "\xff\xfe"\n')
    with pytest.raises(ConfigurationError, match=rf"{path} is not valid UTF-8"):
        run({"connection_name": "dev"}, home)


def test_utf8_bom_is_accepted(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", b'\xef\xbb\xbf[dev]\naccount = "a"\n')
    assert run({"connection_name": "dev"}, home).connect_kwargs == {"account": "a"}


def test_profile_that_is_not_a_table(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", 'dev = "oops"\n[other]\naccount = "a"\n')
    with pytest.raises(ConfigurationError, match=r"connection 'dev' in .* must be a table"):
        run({"connection_name": "dev"}, home)


def test_config_connections_that_is_not_a_table(home: Path, sfdir: Path) -> None:
    write(sfdir / "config.toml", "connections = 3\n")
    with pytest.raises(
        ConfigurationError, match=r"'connections' in .*config\.toml must be a table"
    ):
        run({"connection_name": "dev"}, home)


def test_connections_toml_that_is_a_directory(home: Path, sfdir: Path) -> None:
    (sfdir / "connections.toml").mkdir()
    with pytest.raises(ConfigurationError, match="is a directory"):
        run({"connection_name": "dev"}, home)


def test_connections_file_path_with_a_nul_byte(home: Path) -> None:
    with pytest.raises(ConfigurationError, match="embedded null byte"):
        run({"connections_file_path": "dev\x00.toml"}, home)


# --- permissions ----------------------------------------------------------------------


@posix_only
@pytest.mark.parametrize("mode", [0o620, 0o602, 0o666, 0o660])
def test_group_or_other_writable_is_refused(home: Path, sfdir: Path, mode: int) -> None:
    path = write(sfdir / "connections.toml", DEV, mode=mode)
    with pytest.raises(ConfigurationError) as info:
        run({"connection_name": "dev"}, home)
    message = str(info.value)
    assert str(path) in message
    assert "writable by group or others" in message
    assert f"chmod 0600 {path}" in message


@posix_only
def test_writable_config_toml_is_refused_too(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", DEV)
    path = write(sfdir / "config.toml", "", mode=0o622)
    with pytest.raises(ConfigurationError, match=f"chmod 0600 {path}"):
        run({"connection_name": "dev"}, home)


@posix_only
def test_readable_warns_exactly_once_per_file(home: Path, sfdir: Path) -> None:
    path = write(sfdir / "connections.toml", DEV, mode=0o644)
    with pytest.warns(InsecureConfigFileWarning) as record:
        run({"connection_name": "dev"}, home)
    assert len(record) == 1
    message = str(record[0].message)
    assert str(path) in message
    assert f"chmod 0600 {path}" in message
    assert "silence_permission_warning=True" in message
    assert "SF_SKIP_WARNING_FOR_READ_PERMISSIONS_ON_CONFIG_FILE=true" in message
    assert issubclass(InsecureConfigFileWarning, UserWarning)
    # second and third time: silent (warnings are errors in this suite)
    run({"connection_name": "dev"}, home)
    run({"connection_name": "dev"}, home)


@posix_only
def test_each_readable_file_warns_once(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", DEV, mode=0o640)
    write(sfdir / "config.toml", "", mode=0o604)
    with pytest.warns(InsecureConfigFileWarning) as record:
        run({"connection_name": "dev"}, home)
    warned = sorted(str(w.message).split(" is readable")[0] for w in record)
    assert warned == [str(sfdir / "config.toml"), str(sfdir / "connections.toml")]
    run({"connection_name": "dev"}, home)


@posix_only
def test_silence_by_option_does_not_use_up_the_warning(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", DEV, mode=0o644)
    resolved = run({"connection_name": "dev", "silence_permission_warning": True}, home)
    assert resolved.library_options["silence_permission_warning"] is True
    with pytest.warns(InsecureConfigFileWarning):
        run({"connection_name": "dev"}, home)


@posix_only
@pytest.mark.parametrize(
    "var",
    [
        "SF_SKIP_WARNING_FOR_READ_PERMISSIONS_ON_CONFIG_FILE",
        "SF_SKIP_TOKEN_FILE_PERMISSIONS_VERIFICATION",
        "SKIP_TOKEN_FILE_PERMISSIONS_VERIFICATION",
    ],
)
@pytest.mark.parametrize("value", ["true", "TRUE", " True "])
def test_silence_by_env(home: Path, sfdir: Path, var: str, value: str) -> None:
    write(sfdir / "connections.toml", DEV, mode=0o644)
    # No InsecureConfigFileWarning (filterwarnings = error would fail the test), and read.
    assert run({"connection_name": "dev"}, home, {var: value}).connect_kwargs["user"] == "u_dev"


@posix_only
def test_env_false_does_not_silence(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", DEV, mode=0o644)
    env = {"SF_SKIP_WARNING_FOR_READ_PERMISSIONS_ON_CONFIG_FILE": "false"}
    with pytest.warns(InsecureConfigFileWarning):
        run({"connection_name": "dev"}, home, env)


@posix_only
def test_silence_does_not_allow_writable(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", DEV, mode=0o666)
    env = {"SF_SKIP_WARNING_FOR_READ_PERMISSIONS_ON_CONFIG_FILE": "true"}
    with pytest.raises(ConfigurationError, match="writable"):
        run({"connection_name": "dev", "silence_permission_warning": True}, home, env)


@posix_only
@pytest.mark.parametrize(
    "key", ["unsafe_skip_config_file_permissions_check", "unsafe_skip_file_permissions_check"]
)
def test_connector_skip_option_skips_our_checks(home: Path, sfdir: Path, key: str) -> None:
    write(sfdir / "connections.toml", DEV, mode=0o666)
    resolved = run({"connection_name": "dev", key: True}, home)
    assert resolved.connect_kwargs[key] is True


def test_no_permission_checks_off_posix(
    home: Path, sfdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_connections_file, "_POSIX", False)
    write(sfdir / "connections.toml", DEV, mode=0o666)
    assert run({"connection_name": "dev"}, home).connect_kwargs["account"] == "acc_dev"


@posix_only
def test_owner_only_file_is_silent(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", DEV, mode=0o400)
    # No warning (filterwarnings = error would fail the test), and the profile is read.
    assert run({"connection_name": "dev"}, home).connect_kwargs["account"] == "acc_dev"


# --- value types ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('port = "abc"', "port"),
        ("port = 0", "port"),
        ("port = 70000", "port"),
        ("port = true", "port"),
        ("port = 44.3", "port"),
        ("account = 123", "account"),
        ("user = true", "user"),
        ("host = [1]", "host"),
        ("database = 1", "database"),
        ("schema = 1.5", "schema"),
        ("warehouse = {a = 1}", "warehouse"),
        ("role = 1", "role"),
        ("authenticator = 1", "authenticator"),
        ("protocol = 1", "protocol"),
    ],
)
def test_wrong_type_in_toml_names_key_and_file(
    home: Path, sfdir: Path, line: str, key: str
) -> None:
    where = 'host = "h"' if key == "account" else 'account = "a"'
    path = write(sfdir / "connections.toml", f"[dev]\n{where}\n{line}\n")
    with pytest.raises(ConfigurationError) as info:
        run({"connection_name": "dev"}, home)
    message = str(info.value)
    assert f"'{key}'" in message
    assert f"{path} [dev]" in message


def test_wrong_type_in_config_toml_names_that_file(home: Path, sfdir: Path) -> None:
    path = write(sfdir / "config.toml", '[connections.dev]\naccount = "a"\nport = "x"\n')
    with pytest.raises(ConfigurationError, match=rf"'port' in {path} \[connections\.dev\]"):
        run({"connection_name": "dev"}, home)


def test_wrong_type_password_does_not_echo_value(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", '[dev]\naccount = "a"\npassword = 987654321\n')
    with pytest.raises(ConfigurationError) as info:
        run({"connection_name": "dev"}, home)
    assert "'password'" in str(info.value)
    assert "int" in str(info.value)
    assert "987654321" not in str(info.value)


def test_wrong_type_explicit_option(home: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"'user' in the options must be a str; got int"):
        run({"account": "a", "user": 5}, home)


def test_port_digit_string_becomes_int(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", '[dev]\naccount = "a"\nport = "8080"\n')
    assert run({"connection_name": "dev"}, home).connect_kwargs["port"] == 8080
    assert run({"account": "a", "port": 443}, home).connect_kwargs["port"] == 443


def test_explicit_none_overrides_profile_value(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", '[dev]\naccount = "a"\nrole = "r"\n')
    resolved = run({"connection_name": "dev", "role": None}, home)
    assert resolved.connect_kwargs == {"account": "a", "role": None}


def test_missing_account_and_host(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", '[dev]\nuser = "u"\naccount = ""\n')
    with pytest.raises(ConfigurationError, match=r"no account: set 'account' \(or 'host'\)"):
        run({"connection_name": "dev"}, home)


def test_missing_account_is_fine_with_local_testing(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", '[dev]\nuser = "u"\n')
    resolved = run({"connection_name": "dev", "local_testing": True}, home)
    assert resolved.connect_kwargs == {"user": "u"}


def test_host_alone_is_enough(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", '[dev]\nhost = "127.0.0.1"\nport = 8080\nprotocol = "http"\n')
    resolved = run({"connection_name": "dev"}, home)
    assert resolved.connect_kwargs == {"host": "127.0.0.1", "port": 8080, "protocol": "http"}


# --- unknown options ------------------------------------------------------------------


def test_unknown_option_warns_with_suggestion_and_passes_through(home: Path) -> None:
    with pytest.warns(UnknownOptionWarning, match=r"'warehose'.*did you mean 'warehouse'"):
        resolved = run({**EXPLICIT, "warehose": "wh"}, home)
    assert resolved.connect_kwargs["warehose"] == "wh"
    assert issubclass(UnknownOptionWarning, UserWarning)


def test_unknown_option_without_close_match(home: Path) -> None:
    with pytest.warns(UnknownOptionWarning) as record:
        run({**EXPLICIT, "zzzqqq": 1}, home)
    assert "did you mean" not in str(record[0].message)
    assert "'zzzqqq'" in str(record[0].message)


def test_misspelled_library_option_suggests_it(home: Path) -> None:
    with pytest.warns(UnknownOptionWarning, match="did you mean 'cancel_timeout'"):
        run({**EXPLICIT, "cancel_timout": 4}, home)


def test_unknown_option_in_profile_names_file(home: Path, sfdir: Path) -> None:
    path = write(sfdir / "connections.toml", '[dev]\naccount = "a"\nrolle = "r"\n')
    with pytest.warns(UnknownOptionWarning, match=rf"'rolle' \(from {path} \[dev\]\)"):
        resolved = run({"connection_name": "dev"}, home)
    assert resolved.connect_kwargs["rolle"] == "r"


def test_unknown_option_given_both_ways_is_attributed_to_the_options(
    home: Path, sfdir: Path
) -> None:
    write(sfdir / "connections.toml", '[dev]\naccount = "a"\nrolle = "r"\n')
    with pytest.warns(UnknownOptionWarning, match=r"'rolle' \(from the options\)"):
        resolved = run({"connection_name": "dev", "rolle": "x"}, home)
    assert resolved.connect_kwargs["rolle"] == "x"


def test_private_key_file_from_profile_missing_names_file(home: Path, sfdir: Path) -> None:
    path = write(sfdir / "connections.toml", '[dev]\naccount = "a"\nprivate_key_file = "/no/key"\n')
    with pytest.raises(ConfigurationError, match=rf"'/no/key' \(from {path} \[dev\]\)"):
        run({"connection_name": "dev"}, home)


def test_unknown_option_warning_never_shows_value(home: Path) -> None:
    with pytest.warns(UnknownOptionWarning) as record:
        run({**EXPLICIT, "pasword": SECRET}, home)
    assert SECRET not in str(record[0].message)


# --- sizes and key files --------------------------------------------------------------


def test_huge_string_option_is_rejected(home: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"'password' in the options is 65537 characters"):
        run({**EXPLICIT, "password": "x" * (MAX_OPTION_LENGTH + 1)}, home)
    assert run({**EXPLICIT, "password": "x" * MAX_OPTION_LENGTH}, home)


def test_huge_string_in_profile_is_rejected(home: Path, sfdir: Path) -> None:
    write(sfdir / "connections.toml", f'[dev]\naccount = "a"\nquery_tag = "{"q" * 70000}"\n')
    with pytest.raises(ConfigurationError, match=r"'query_tag' in .*connections\.toml \[dev\]"):
        run({"connection_name": "dev"}, home)


def test_huge_private_key_is_allowed(home: Path) -> None:
    key = "k" * (MAX_OPTION_LENGTH * 2)
    assert run({**EXPLICIT, "private_key": key}, home).connect_kwargs["private_key"] == key


def test_missing_private_key_file(home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nokey.p8"
    with pytest.raises(ConfigurationError) as info:
        run({**EXPLICIT, "private_key_file": str(missing)}, home)
    assert str(missing) in str(info.value)


def test_private_key_file_exists_and_is_not_read(home: Path) -> None:
    key = write(home / "key.p8", "not really a key", mode=0o000)  # unreadable: never opened
    resolved = run({**EXPLICIT, "private_key_file": "~/key.p8"}, home)
    assert resolved.connect_kwargs["private_key_file"] == str(key)
    resolved = run({**EXPLICIT, "private_key_file": key}, home)
    assert resolved.connect_kwargs["private_key_file"] == str(key)


def test_private_key_file_wrong_type(home: Path) -> None:
    with pytest.raises(ConfigurationError, match="private_key_file"):
        run({**EXPLICIT, "private_key_file": 3}, home)


# --- connector generations ------------------------------------------------------------


@pytest.mark.parametrize(
    ("major", "given", "expected"),
    [
        (4, {"private_key_password": "pw"}, {"private_key_passphrase": b"pw"}),
        (
            4,
            {"private_key_password": "pw", "private_key_file": "KEY"},
            {"private_key_file_pwd": "pw", "private_key_file": "KEY"},
        ),
        (4, {"private_key_file_pwd": "pw"}, {"private_key_file_pwd": "pw"}),
        (5, {"private_key_file_pwd": "pw"}, {"private_key_password": "pw"}),
        (5, {"private_key_passphrase": b"pw"}, {"private_key_password": "pw"}),
        (
            5,
            {"private_key_password": "new", "private_key_file_pwd": "old"},
            {"private_key_password": "new"},
        ),
        (None, {"private_key_file_pwd": "pw"}, {"private_key_file_pwd": "pw"}),
    ],
)
def test_passphrase_follows_installed_connector(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    major: int | None,
    given: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    monkeypatch.setattr(_config, "_connector_major", lambda: major)
    if "private_key_file" in given:
        key = write(home / "key.p8", "k")
        given = {**given, "private_key_file": str(key)}
        expected = {**expected, "private_key_file": str(key)}
    resolved = run({**EXPLICIT, **given}, home)
    assert resolved.connect_kwargs == {**EXPLICIT, **expected}


def test_connect_kwargs_are_known_to_installed_connector(home: Path, sfdir: Path) -> None:
    """What resolve() returns is accepted by this environment's connector, key by key."""
    import snowflake.connector

    write(
        sfdir / "connections.toml",
        '[dev]\naccount = "a"\nuser = "u"\nprivate_key_file_pwd = "pw"\n'
        'private_key = "k"\nport = "443"\nwarehouse = "w"\nrole = "r"\n',
    )
    resolved = run({"connection_name": "dev", "cancel_timeout": 2, "local_testing": False}, home)
    keys = set(resolved.connect_kwargs)
    assert not keys & LIBRARY_OPTIONS
    if int(snowflake.connector.__version__.split(".")[0]) < 5:
        from snowflake.connector.connection import DEFAULT_CONFIGURATION

        assert keys <= set(DEFAULT_CONFIGURATION)
    else:
        from snowflake.connector.connection_config import ConnectionConfig

        fields = set(ConnectionConfig._all_field_names())
        assert keys <= fields
        assert "private_key_password" in keys


# --- fuzz-ish -------------------------------------------------------------------------


def _random_value(rng: random.Random, secret: bool) -> object:
    # Secrets are str-typed options: give them a str often enough to pass the type check.
    pick = rng.randrange(9) if not secret or rng.random() < 0.5 else 8
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.randint(-5, 70000)
    if pick == 3:
        return rng.uniform(-1, 10)
    if pick == 4:
        return [1, "a"]
    if pick == 5:
        return {"K": "v"}
    text = "".join(rng.choices(string.ascii_letters, k=rng.randrange(4)))
    return SECRET + text if secret else "v" + text


def test_fuzz_resolve_only_raises_configuration_error(home: Path) -> None:
    rng = random.Random(20261126)
    extra = ["account", "host", "port", "user", "role", "warehose", "session_parameters"]
    keys = [*sorted(LIBRARY_OPTIONS | SECRET_KEYS), *extra, "PaSsWoRd"]
    outcomes = {"ok": 0, "error": 0}
    for _ in range(400):
        # Half the time with an account, else "no account" would be most outcomes.
        options: dict[str, object] = {"account": "a"} if rng.random() < 0.5 else {}
        for _ in range(rng.randrange(6)):
            key = rng.choice(keys)
            key = "".join(c.upper() if rng.random() < 0.3 else c for c in key)
            options[key] = _random_value(rng, secret=key.lower() in SECRET_KEYS)
        skip = {"private_key_file", "connection_name", "connections_file_path"}
        options = {k: v for k, v in options.items() if k.lower() not in skip}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnknownOptionWarning)
            try:
                resolved = run(options, home)
            except ConfigurationError as exc:
                outcomes["error"] += 1
                message = str(exc)
            else:
                message = ""
        assert SECRET not in message
        if message:
            continue
        outcomes["ok"] += 1
        assert SECRET not in repr(resolved)
        assert not set(resolved.connect_kwargs) & LIBRARY_OPTIONS
    assert outcomes["ok"] > 10
    assert outcomes["error"] > 10


def test_resolve_defaults_read_os_environ_and_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "h"
    write(home / "sf" / "connections.toml", '[default]\naccount = "from_env_home"\n')
    monkeypatch.setenv("SNOWFLAKE_HOME", str(home / "sf"))
    assert resolve({}).connect_kwargs == {"account": "from_env_home"}


@pytest.mark.parametrize("value", [0, -1, True, "3", 2.0, 2**31])
def test_retry_max_attempts_must_be_a_positive_int(home: Path, value: object) -> None:
    with pytest.raises(ConfigurationError, match=r"'retry_max_attempts' .* positive int"):
        run({**EXPLICIT, "retry_max_attempts": value}, home)


def test_retry_max_attempts_passes_to_the_driver(home: Path) -> None:
    resolved = run({**EXPLICIT, "retry_max_attempts": 2}, home)
    assert resolved.connect_kwargs["retry_max_attempts"] == 2
