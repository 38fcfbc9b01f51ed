"""How a builder's options become ``connect()`` arguments (:func:`resolve`).

Everything here is synchronous and pure apart from reading the two TOML files (and
stat-ing ``private_key_file``); the session module calls :func:`resolve` in a worker
thread. Nothing here writes a file or reads a key file. The story, step by step:

1. option names are case-insensitive (like Snowpark's builder); they are lower-cased
   (``_values``);
2. our own options are split off and checked against their table (``_library_options``);
   the well-known connector options are type-checked (``_values``);
3. a profile is used when ``connection_name`` is given, or when neither ``account``,
   ``host`` nor ``server_url`` is given explicitly (the *default* connection) and
   ``local_testing`` is not set; it is found and read safely (``_connections_file``) and
   its two files combined (``_profiles``);
4. precedence, key by key: explicit options > ``connections.toml [name]`` >
   ``config.toml [connections.name]``;
5. unknown names are warned about, ``private_key_file`` is checked, and the key-pair
   passphrase renamed to the installed connector's spelling.

Secrets never reach a repr or a message (``_secrets``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ._connections_file import (
    SKIP_READ_WARNING_ENV_VARS,
    InsecureConfigFileWarning,
    _reset_permission_warnings,
    expand_home,
)
from ._driver import connector_major as _connector_major
from ._errors import ConfigurationError
from ._library_options import LIBRARY_OPTIONS, validate_library_options
from ._options import CONNECT_OPTIONS
from ._profiles import read_profile
from ._secrets import SECRET_KEYS, redact, type_name
from ._values import MAX_OPTION_LENGTH, check_value, normalize

__all__ = [
    "CONNECT_OPTIONS",
    "LIBRARY_OPTIONS",
    "MAX_OPTION_LENGTH",
    "SECRET_KEYS",
    "SKIP_READ_WARNING_ENV_VARS",
    "InsecureConfigFileWarning",
    "ResolvedConfig",
    "UnknownOptionWarning",
    "_connector_major",
    "_reset_permission_warnings",
    "normalize_options",
    "redact",
    "resolve",
]

#: Explicit keys that say "where to connect"; any of them disables the default profile.
_WHERE_KEYS = ("account", "host", "server_url")


class UnknownOptionWarning(UserWarning):
    """An option neither connector generation knows; it is still passed to ``connect()``."""


def normalize_options(options: Mapping[str, object]) -> dict[str, object]:
    """Lower-case option names; reject non-str names and case-insensitive collisions."""
    return normalize(options, "the options")


# A NamedTuple, not a frozen dataclass: cheaper to define at import.
class ResolvedConfig(NamedTuple):
    """What :func:`resolve` decided: ``connect(**connect_kwargs)`` plus our own options."""

    connect_kwargs: dict[str, Any]
    library_options: dict[str, Any]
    source: str

    def __repr__(self) -> str:
        return (
            f"ResolvedConfig(source={self.source!r}, "
            f"connect_kwargs={redact(self.connect_kwargs)!r}, "
            f"library_options={redact(self.library_options)!r})"
        )


def _given(value: object) -> bool:
    return value is not None and value != ""


def _suggest(key: str) -> str:
    import difflib  # only for a suggestion: keeps it off the import path

    match = difflib.get_close_matches(key, CONNECT_OPTIONS | LIBRARY_OPTIONS, n=1, cutoff=0.75)
    return f" (did you mean {match[0]!r}?)" if match else ""


def resolve(
    options: Mapping[str, object],
    *,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> ResolvedConfig:
    """Turn builder options (+ the TOML files when a profile is used) into connect kwargs.

    Raises :class:`ConfigurationError` for every configuration problem; warns
    :class:`InsecureConfigFileWarning` (once per file) and :class:`UnknownOptionWarning`.
    """
    env: Mapping[str, str] = os.environ if environ is None else environ
    home_dir = Path.home() if home is None else Path(home)

    explicit = normalize_options(options)
    lib = validate_library_options(
        {k: explicit.pop(k) for k in list(explicit) if k in LIBRARY_OPTIONS}
    )
    origin: dict[str, str] = {}  # where each key's value came from, for messages
    for key, value in list(explicit.items()):
        explicit[key] = check_value(key, value, "the options")

    name: str | None = lib.get("connection_name")
    local_testing = lib.get("local_testing") is True
    if name is None and not local_testing and not any(_given(explicit.get(k)) for k in _WHERE_KEYS):
        use_default = True
    else:
        use_default = False

    merged: dict[str, Any] = {}
    source = "explicit options"
    if name is not None or use_default:
        merged, source = read_profile(name, lib, explicit, env, home_dir, origin)
    merged.update(explicit)
    origin.update(dict.fromkeys(explicit, "the options"))

    for key in merged:
        if key not in CONNECT_OPTIONS:
            warnings.warn(
                UnknownOptionWarning(
                    f"unknown connection option {key!r} (from {origin.get(key, 'the options')}); "
                    f"passing it to connect() anyway{_suggest(key)}"
                ),
                stacklevel=2,
            )

    if not local_testing and not any(_given(merged.get(k)) for k in _WHERE_KEYS):
        raise ConfigurationError(
            "no account: set 'account' (or 'host') in the options or in the connection "
            f"profile (configuration came from {source})"
        )

    key_file = merged.get("private_key_file")
    if key_file is not None:
        merged["private_key_file"] = _check_key_file(key_file, origin, home_dir)

    for key, value in merged.items():
        if isinstance(value, dict):  # e.g. session_parameters: 4.x mutates the dict it gets
            merged[key] = dict(value)
    _adapt_to_connector(merged, _connector_major())
    return ResolvedConfig(connect_kwargs=merged, library_options=lib, source=source)


def _check_key_file(key_file: object, origin: dict[str, str], home: Path) -> str:
    """``private_key_file`` as an existing file's path (``~`` expanded); never read here."""
    if not isinstance(key_file, (str, os.PathLike)):
        raise ConfigurationError(
            f"option 'private_key_file' in {origin['private_key_file']} must be a path "
            f"(str); got {type_name(key_file)}"
        )
    raw = os.fspath(key_file)
    if not isinstance(raw, str):
        raise ConfigurationError("option 'private_key_file' must be a str path, not bytes")
    key_path = expand_home(raw, home)
    if not key_path.is_file():
        raise ConfigurationError(
            f"private_key_file {str(key_path)!r} (from {origin['private_key_file']}) "
            "does not exist or is not a file"
        )
    return str(key_path)


def _adapt_to_connector(kw: dict[str, Any], major: int | None) -> None:
    """Rename the key-pair passphrase to the installed connector's spelling.

    4.x silently ignores 5.x's ``private_key_password``; 5.x accepts 4.x's names but
    emits a DeprecationWarning for each.
    """
    if major is None:
        return
    if major < 5:
        if "private_key_password" in kw:
            value = kw.pop("private_key_password")
            if kw.get("private_key_file") is not None:
                kw.setdefault("private_key_file_pwd", value)
            else:
                if isinstance(value, str):
                    value = value.encode("utf-8")
                kw.setdefault("private_key_passphrase", value)
    else:
        for old in ("private_key_file_pwd", "private_key_passphrase"):
            if old in kw:
                value = kw.pop(old)
                if isinstance(value, bytes):
                    value = value.decode("utf-8", errors="strict")
                kw.setdefault("private_key_password", value)
