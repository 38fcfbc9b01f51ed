"""Which connection profile applies, and how its two files combine (precedence).

A profile is looked up by name in ``connections.toml [name]`` and in ``config.toml
[connections.name]``; key by key, connections.toml wins (what connector 5.x does when it
connects; 4.x instead ignores config.toml's ``[connections]`` whenever connections.toml
exists). Without a name: ``$SNOWFLAKE_DEFAULT_CONNECTION_NAME``, then config.toml's
``default_connection_name``, then ``"default"``. Explicit options beat both (``_config``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._connections_file import (
    SKIP_PERMISSION_CHECK_KEYS,
    SKIP_READ_WARNING_ENV_VARS,
    config_dir,
    env_true,
    expand_home,
    load_toml,
)
from ._errors import ConfigurationError
from ._library_options import LIBRARY_OPTIONS
from ._secrets import describe, type_name
from ._values import check_value, normalize

__all__ = ["read_profile"]


def _profile_from(
    doc: dict[str, Any] | None, path: Path, name: str, nested: bool
) -> tuple[dict[str, Any] | None, list[str], str]:
    """(profile or None, table names, where-string) from one parsed file."""
    if doc is None:
        return None, [], ""
    table: object = doc
    if nested:
        table = doc.get("connections", {})
        if not isinstance(table, dict):
            raise ConfigurationError(
                f"'connections' in {path} must be a table; got {type_name(table)}"
            )
    assert isinstance(table, dict)
    names = [k for k, v in table.items() if isinstance(v, dict)]
    where = f"{path} [connections.{name}]" if nested else f"{path} [{name}]"
    if name not in table:
        return None, names, where
    profile = table[name]
    if not isinstance(profile, dict):
        raise ConfigurationError(
            f"connection {name!r} in {path} must be a table ([{name}] section); "
            f"got {type_name(profile)}"
        )
    return profile, names, where


def read_profile(
    name: str | None,
    lib: dict[str, Any],
    explicit: dict[str, object],
    env: Mapping[str, str],
    home: Path,
    origin: dict[str, str],
) -> tuple[dict[str, Any], str]:
    """(the profile's options, where they came from); fills ``origin`` key by key."""
    directory, passed = config_dir(env, home)
    conn_path = directory / "connections.toml"
    if "connections_file_path" in lib:
        conn_path = expand_home(os.fspath(lib["connections_file_path"]), home)
    cfg_path = directory / "config.toml"

    skip_checks = any(explicit.get(k) is True for k in SKIP_PERMISSION_CHECK_KEYS)
    silence = lib.get("silence_permission_warning") is True or any(
        env_true(env, var) for var in SKIP_READ_WARNING_ENV_VARS
    )
    conn_doc = load_toml(conn_path, check_permissions=not skip_checks, silence=silence)
    if conn_doc is None and "connections_file_path" in lib:
        raise ConfigurationError(f"connections_file_path {str(conn_path)!r} does not exist")
    cfg_doc = load_toml(cfg_path, check_permissions=not skip_checks, silence=silence)
    read = [str(p) for p, d in ((conn_path, conn_doc), (cfg_path, cfg_doc)) if d is not None]

    if not read:
        looked = ", ".join([*passed, str(conn_path), str(cfg_path)])
        if name is None:
            raise ConfigurationError(
                "no account: set 'account' (or 'host') in the options, or define a default "
                f"connection in a connections.toml; no connections file found (looked in: {looked})"
            )
        raise ConfigurationError(
            f"connection {name!r} was requested but no connections file was found "
            f"(looked in: {looked})"
        )

    how = "given as connection_name"
    if name is None:
        if env.get("SNOWFLAKE_DEFAULT_CONNECTION_NAME", ""):
            name = env["SNOWFLAKE_DEFAULT_CONNECTION_NAME"]
            how = "default, from $SNOWFLAKE_DEFAULT_CONNECTION_NAME"
        elif cfg_doc is not None and "default_connection_name" in cfg_doc:
            value = cfg_doc["default_connection_name"]
            if not isinstance(value, str) or not value:
                raise ConfigurationError(
                    f"'default_connection_name' in {cfg_path} must be a non-empty str; "
                    f"got {describe('default_connection_name', value)}"
                )
            name, how = value, f"default, from default_connection_name in {cfg_path}"
        else:
            name, how = "default", "the built-in default name"

    from_conn, names_conn, where_conn = _profile_from(conn_doc, conn_path, name, nested=False)
    from_cfg, names_cfg, where_cfg = _profile_from(cfg_doc, cfg_path, name, nested=True)
    if from_conn is None and from_cfg is None:
        known = sorted(set(names_conn) | set(names_cfg))
        import difflib  # only for a suggestion: keeps it off the import path

        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigurationError(
            f"unknown connection {name!r} ({how}); known connections: "
            f"{known or 'none'}{hint}; files read: {', '.join(read)}"
        )

    merged: dict[str, Any] = {}
    used: list[str] = []
    for profile, where, path in (
        (from_cfg, where_cfg, cfg_path),
        (from_conn, where_conn, conn_path),
    ):
        if profile is None:
            continue
        used.insert(0, str(path))
        for key, value in normalize(profile, where).items():
            if key in LIBRARY_OPTIONS:
                raise ConfigurationError(
                    f"{key!r} in {where} is an asyncsession option, not a connection "
                    "option; pass it to the builder instead"
                )
            merged[key] = check_value(key, value, where)
            origin[key] = where
    prefix = "default connection" if how.startswith(("default", "the built-in")) else "connection"
    return merged, f"{prefix} {name!r} in {' and '.join(used)}"
