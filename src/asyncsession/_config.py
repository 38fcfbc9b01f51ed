"""Configuration resolution: builder options + connections.toml/config.toml -> connect() kwargs.

Everything here is synchronous and pure apart from reading the two TOML files (and
stat-ing ``private_key_file``); the session module calls :func:`resolve` in a worker
thread. Nothing here writes a file or reads a key file.

Rules (see ``resolve``):

* option names are case-insensitive (like Snowpark's builder); they are lower-cased;
* a profile is used when ``connection_name`` is given, or when neither ``account``,
  ``host`` nor ``server_url`` is given explicitly (the *default* connection) and
  ``local_testing`` is not set;
* directory: ``$SNOWFLAKE_HOME`` if it is a directory, else ``~/.snowflake`` if it is
  one, else ``$XDG_CONFIG_HOME`` (or ``~/.config``) + ``/snowflake``;
* precedence, key by key: explicit options > ``connections.toml [name]`` >
  ``config.toml [connections.name]`` (what connector 5.x does when it connects;
  4.x instead ignores config.toml's ``[connections]`` whenever connections.toml exists).
"""

from __future__ import annotations

import difflib
import importlib.metadata
import math
import os
import reprlib
import stat
import sys
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

from ._errors import ConfigurationError
from ._options import (
    BOOL_OPTIONS,
    CONNECT_OPTIONS,
    FLOAT_OPTIONS,
    INT_OPTIONS,
    MAPPING_OPTIONS,
    POSITIVE_INT_OPTIONS,
    STR_OPTIONS,
)

__all__ = [
    "CONNECT_OPTIONS",
    "LIBRARY_OPTIONS",
    "MAX_OPTION_LENGTH",
    "SECRET_KEYS",
    "InsecureConfigFileWarning",
    "ResolvedConfig",
    "UnknownOptionWarning",
    "normalize_options",
    "redact",
    "resolve",
]

#: Option keys asyncsession consumes itself; never passed to ``connect()``.
LIBRARY_OPTIONS: frozenset[str] = frozenset(
    {
        "connection_name",
        "connections_file_path",
        "local_testing",
        "cancel_timeout",
        "max_concurrent_queries",
        "silence_permission_warning",
    }
)

#: Keys whose values are secrets (redacted in repr, never echoed in errors). From
#: connector 4.8.1 ``DEFAULT_CONFIGURATION`` and 5.2.0
#: ``ConnectionConfig._SENSITIVE_PARAMS`` (``proxy`` may carry ``user:password@``;
#: ``token`` also carries PATs and workload-identity OIDC tokens).
SECRET_KEYS: frozenset[str] = frozenset(
    {
        "password",
        "passcode",
        "token",
        "private_key",
        "private_key_file_pwd",  # 4.x passphrase of private_key_file (5.x: deprecated alias)
        "private_key_passphrase",  # 4.x passphrase of private_key (5.x: deprecated alias)
        "private_key_password",  # 5.x passphrase
        "oauth_client_secret",
        "proxy_password",
        "proxy",  # 5.x: a proxy URL, may embed credentials
        "master_token",
        "session_token",
        "external_session_id",  # 5.x marks it sensitive (PAT_WITH_EXTERNAL_SESSION)
    }
)

#: Substrings that make an unknown key's str/bytes value be redacted too (typos such as
#: ``pasword`` must not leak through ``repr``).
_SECRET_KEY_HINTS = ("pass", "word", "pwd", "secret", "token", "credential", "private_key")

#: Longest str value accepted for any option except ``private_key``.
MAX_OPTION_LENGTH = 64 * 1024

#: Explicit keys that say "where to connect"; any of them disables the default profile.
_WHERE_KEYS = ("account", "host", "server_url")

#: Environment variables that silence the group/other-readable warning when set to
#: ``true``: 5.x (Rust core) reads the first; 4.x reads the second, then the SPCS one,
#: then the first (which it calls deprecated).
SKIP_READ_WARNING_ENV_VARS = (
    "SF_SKIP_WARNING_FOR_READ_PERMISSIONS_ON_CONFIG_FILE",
    "SF_SKIP_TOKEN_FILE_PERMISSIONS_VERIFICATION",
    "SKIP_TOKEN_FILE_PERMISSIONS_VERIFICATION",
)

#: Connector options that switch the connectors' own config-file permission checks off;
#: when given explicitly as ``True`` ours are skipped too.
_SKIP_PERMISSION_CHECK_KEYS = (
    "unsafe_skip_config_file_permissions_check",  # 5.x
    "unsafe_skip_file_permissions_check",  # 4.x (5.x fans it out)
)


#: Permission checks run on POSIX only (a module constant so tests can switch it).
_POSIX = os.name == "posix"


class InsecureConfigFileWarning(UserWarning):
    """A connections.toml/config.toml is readable by group or others (once per file)."""


class UnknownOptionWarning(UserWarning):
    """An option neither connector generation knows; it is still passed to ``connect()``."""


_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60


def _type_name(value: object) -> str:
    return type(value).__name__


def _is_secret_key(key: str, value: object) -> bool:
    k = key.lower()
    if k in SECRET_KEYS:
        return True
    return isinstance(value, (str, bytes)) and any(h in k for h in _SECRET_KEY_HINTS)


def _looks_like_private_key(value: object) -> bool:
    return any("PrivateKey" in cls.__name__ for cls in type(value).__mro__)


def _describe(key: str, value: object) -> str:
    """The bad value for an error message: its type; numbers are shown, text never is.

    A string may be a secret typed into the wrong key, so only plain numbers and bools
    of non-secret keys are echoed.
    """
    if _is_secret_key(key, value) or not isinstance(value, (bool, int, float)):
        return _type_name(value)
    return f"{_type_name(value)} {value!r}"


def _same(a: object, b: object) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


def _normalize(options: Mapping[Any, object], where: str) -> dict[str, object]:
    out: dict[str, object] = {}
    spelled: dict[str, str] = {}
    for key, value in options.items():
        if not isinstance(key, str):
            raise ConfigurationError(
                f"option names must be str; got {_type_name(key)} {_short.repr(key)} in {where}"
            )
        low = key.lower()
        if low in out:
            if not _same(out[low], value):
                raise ConfigurationError(
                    f"options {spelled[low]!r} and {key!r} in {where} are the same option "
                    "(names are case-insensitive) but have different values; give it once"
                )
            continue
        out[low] = value
        spelled[low] = key
    return out


def normalize_options(options: Mapping[str, object]) -> dict[str, object]:
    """Lower-case option names; reject non-str names and case-insensitive collisions."""
    return _normalize(options, "the options")


def redact(options: Mapping[str, object]) -> dict[str, object]:
    """A copy with every secret value (and every private-key object) replaced by ``"***"``."""
    out: dict[str, object] = {}
    for key, value in options.items():
        secret = value is not None and (
            (isinstance(key, str) and _is_secret_key(key, value)) or _looks_like_private_key(value)
        )
        out[key] = "***" if secret else value
    return out


@dataclass(frozen=True, repr=False)
class ResolvedConfig:
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


# --- library options -----------------------------------------------------------------


def _validate_library_options(lib: dict[str, object]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in lib.items():
        if value is None:  # None means "not given", like an absent key
            continue
        got = _describe(key, value)

        def bad(expected: str, key: str = key, got: str = got) -> str:
            return f"option {key!r} must be {expected}; got {got}"

        if key == "cancel_timeout":
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigurationError(bad("a positive number of seconds (int or float)"))
        elif key == "max_concurrent_queries":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(bad("a positive int"))
        elif key in ("local_testing", "silence_permission_warning"):
            if not isinstance(value, bool):
                raise ConfigurationError(bad("a bool"))
        elif key == "connection_name":
            if not isinstance(value, str) or not value.strip():
                raise ConfigurationError(bad("a non-empty str"))
            _check_length(key, value, "the options")
        elif key == "connections_file_path":
            if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
                raise ConfigurationError(bad("a non-empty str or os.PathLike"))
            path = os.fspath(value)
            if not isinstance(path, str):
                raise ConfigurationError(bad("a str path (not bytes)"))
            _check_length(key, path, "the options")
        out[key] = value
    return out


# --- values --------------------------------------------------------------------------


def _check_length(key: str, value: object, where: str) -> None:
    if isinstance(value, str) and len(value) > MAX_OPTION_LENGTH and key != "private_key":
        raise ConfigurationError(
            f"option {key!r} in {where} is {len(value)} characters long; "
            f"the limit is {MAX_OPTION_LENGTH}"
        )


def _check_value(key: str, value: object, where: str) -> object:
    """Type-check the well-known keys; returns the value to use (port may become int)."""
    _check_length(key, value, where)
    if value is None:
        return value
    expected = _expected_type(key, value)
    if expected is not None:
        raise ConfigurationError(
            f"option {key!r} in {where} must be {expected}; got {_describe(key, value)}"
        )
    if key == "port":
        port: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            port = value
        elif isinstance(value, str) and value.strip().isdecimal() and value.strip().isascii():
            port = int(value.strip())
        if port is None or not 0 < port < 65536:
            raise ConfigurationError(
                f"option 'port' in {where} must be an int between 1 and 65535; "
                f"got {_describe(key, value)}"
            )
        return port
    return value


def _int_from(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value < 2**31


def _expected_type(key: str, value: object) -> str | None:
    """What ``value`` of a typed option should have been, or None if it is fine."""
    if key in STR_OPTIONS and not isinstance(value, str):
        return "a str"
    if key in BOOL_OPTIONS and not isinstance(value, bool):
        return "a bool (true or false)"
    if key in INT_OPTIONS and not _int_from(value, 0):
        return "a non-negative int"
    if key in POSITIVE_INT_OPTIONS and not _int_from(value, 1):
        return "a positive int"
    if key in FLOAT_OPTIONS and not (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ):
        return "a finite number"
    if key in MAPPING_OPTIONS and not isinstance(value, Mapping):
        return "a dict (table)"
    return None


def _suggest(key: str) -> str:
    match = difflib.get_close_matches(key, CONNECT_OPTIONS | LIBRARY_OPTIONS, n=1, cutoff=0.75)
    return f" (did you mean {match[0]!r}?)" if match else ""


# --- files ---------------------------------------------------------------------------

_warned_lock = threading.Lock()
_warned_files: set[str] = set()


def _reset_permission_warnings() -> None:
    """Forget which files were warned about (for tests)."""
    with _warned_lock:
        _warned_files.clear()


def _expand_home(value: str, home: Path) -> Path:
    if value == "~":
        return home
    if value.startswith(("~/", "~" + os.sep)):
        return home / value[2:]
    return Path(value)


def _config_dir(environ: Mapping[str, str], home: Path) -> tuple[Path, list[str]]:
    """The directory holding connections.toml/config.toml, and the ones passed over."""
    passed: list[str] = []
    sf_home = environ.get("SNOWFLAKE_HOME", "")
    if sf_home:
        path = _expand_home(sf_home, home)
        if path.is_dir():
            return path, passed
        passed.append(f"{path} ($SNOWFLAKE_HOME; not a directory)")
    dot = home / ".snowflake"
    if dot.is_dir():
        return dot, passed
    passed.append(f"{dot} (not a directory)")
    xdg = environ.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else home / ".config"
    return base / "snowflake", passed


def _env_true(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() == "true"


def _load_toml(path: Path, *, check_permissions: bool, silence: bool) -> dict[str, Any] | None:
    """Parse ``path``; ``None`` if it does not exist. Checks permissions on POSIX."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigurationError(f"{path} is a directory, not a TOML file") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ConfigurationError(f"{path} is a directory, not a TOML file")
        if not stat.S_ISREG(st.st_mode):
            raise ConfigurationError(f"{path} is not a regular file")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as fh:
        if check_permissions and _POSIX:
            mode = stat.S_IMODE(st.st_mode)
            if mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise ConfigurationError(
                    f"refusing to read {path}: it is writable by group or others "
                    f"(mode {mode:04o}), so someone else could change where and how you "
                    f"connect. Fix it with: chmod 0600 {path}"
                )
            if mode & (stat.S_IRGRP | stat.S_IROTH) and not silence:
                _warn_readable(path, mode)
        try:
            data = fh.read()
        except OSError as exc:
            raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"{path} is not valid UTF-8 (bad byte at offset {exc.start}); save it as UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # The message carries "(at line L, column C)"; never the file's content.
        raise ConfigurationError(f"invalid TOML in {path}: {exc}") from None


def _warn_readable(path: Path, mode: int) -> None:
    key = os.path.realpath(path)
    with _warned_lock:
        if key in _warned_files:
            return
        warnings.warn(
            InsecureConfigFileWarning(
                f"{path} is readable by group or others (mode {mode:04o}) and may hold "
                f"credentials. Restrict it with: chmod 0600 {path}  -- or silence this "
                "warning with the option silence_permission_warning=True or the environment "
                f"variable {SKIP_READ_WARNING_ENV_VARS[0]}=true"
            ),
            stacklevel=5,  # resolve()'s caller
        )
        _warned_files.add(key)  # after warn(): a warning turned into an error repeats


# --- connector version specifics -----------------------------------------------------


@lru_cache(maxsize=1)
def _connector_major() -> int | None:
    """Major version of the installed snowflake-connector-python (None if unknown)."""
    try:
        version = importlib.metadata.version("snowflake-connector-python")
    except importlib.metadata.PackageNotFoundError:
        return None
    head = version.split(".", 1)[0]
    return int(head) if head.isdecimal() else None


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


# --- resolve -------------------------------------------------------------------------


def _given(value: object) -> bool:
    return value is not None and value != ""


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
                f"'connections' in {path} must be a table; got {_type_name(table)}"
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
            f"got {_type_name(profile)}"
        )
    return profile, names, where


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
    lib = _validate_library_options(
        {k: explicit.pop(k) for k in list(explicit) if k in LIBRARY_OPTIONS}
    )
    origin: dict[str, str] = {}  # where each key's value came from, for messages
    for key, value in list(explicit.items()):
        explicit[key] = _check_value(key, value, "the options")

    name: str | None = lib.get("connection_name")
    local_testing = lib.get("local_testing") is True
    if name is None and not local_testing and not any(_given(explicit.get(k)) for k in _WHERE_KEYS):
        use_default = True
    else:
        use_default = False

    merged: dict[str, Any] = {}
    source = "explicit options"
    if name is not None or use_default:
        merged, source = _read_profile(name, lib, explicit, env, home_dir, origin)
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
        if not isinstance(key_file, (str, os.PathLike)):
            raise ConfigurationError(
                f"option 'private_key_file' in {origin['private_key_file']} must be a path "
                f"(str); got {_type_name(key_file)}"
            )
        raw = os.fspath(key_file)
        if not isinstance(raw, str):
            raise ConfigurationError("option 'private_key_file' must be a str path, not bytes")
        key_path = _expand_home(raw, home_dir)
        if not key_path.is_file():
            raise ConfigurationError(
                f"private_key_file {str(key_path)!r} (from {origin['private_key_file']}) "
                "does not exist or is not a file"
            )
        merged["private_key_file"] = str(key_path)

    for key, value in merged.items():
        if isinstance(value, dict):  # e.g. session_parameters: 4.x mutates the dict it gets
            merged[key] = dict(value)
    _adapt_to_connector(merged, _connector_major())
    return ResolvedConfig(connect_kwargs=merged, library_options=lib, source=source)


def _read_profile(
    name: str | None,
    lib: dict[str, Any],
    explicit: dict[str, object],
    env: Mapping[str, str],
    home: Path,
    origin: dict[str, str],
) -> tuple[dict[str, Any], str]:
    directory, passed = _config_dir(env, home)
    conn_path = directory / "connections.toml"
    if "connections_file_path" in lib:
        conn_path = _expand_home(os.fspath(lib["connections_file_path"]), home)
    cfg_path = directory / "config.toml"

    skip_checks = any(explicit.get(k) is True for k in _SKIP_PERMISSION_CHECK_KEYS)
    silence = lib.get("silence_permission_warning") is True or any(
        _env_true(env, var) for var in SKIP_READ_WARNING_ENV_VARS
    )
    conn_doc = _load_toml(conn_path, check_permissions=not skip_checks, silence=silence)
    if conn_doc is None and "connections_file_path" in lib:
        raise ConfigurationError(f"connections_file_path {str(conn_path)!r} does not exist")
    cfg_doc = _load_toml(cfg_path, check_permissions=not skip_checks, silence=silence)
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
                    f"got {_describe('default_connection_name', value)}"
                )
            name, how = value, f"default, from default_connection_name in {cfg_path}"
        else:
            name, how = "default", "the built-in default name"

    from_conn, names_conn, where_conn = _profile_from(conn_doc, conn_path, name, nested=False)
    from_cfg, names_cfg, where_cfg = _profile_from(cfg_doc, cfg_path, name, nested=True)
    if from_conn is None and from_cfg is None:
        known = sorted(set(names_conn) | set(names_cfg))
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
        for key, value in _normalize(profile, where).items():
            if key in LIBRARY_OPTIONS:
                raise ConfigurationError(
                    f"{key!r} in {where} is an asyncsession option, not a connection "
                    "option; pass it to the builder instead"
                )
            merged[key] = _check_value(key, value, where)
            origin[key] = where
    prefix = "default connection" if how.startswith(("default", "the built-in")) else "connection"
    return merged, f"{prefix} {name!r} in {' and '.join(used)}"
