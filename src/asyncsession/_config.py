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

#: Every ``connect()`` option either connector generation knows, lower-case. Generated
#: from snowflake-connector-python 4.8.1 ``connection.DEFAULT_CONFIGURATION`` (plus the
#: ``insecure_mode``/``sequence_counter`` kwargs its ``__init__``/``__config`` handle)
#: united with 5.2.0 ``connection_config.ConnectionConfig`` fields (incl. the mixin's
#: Python-only fields) and its ``_ALIAS_MAP``, ``_LEGACY_REWRITES``,
#: ``_DEPRECATED_REWRITES``, ``_UNSUPPORTED_PARAMS``, ``_SILENTLY_IGNORED_PARAMS``,
#: ``_REJECTED_PARAMS``, ``config`` and the fanned-out legacy names. ``connection_name``
#: and ``connections_file_path`` are library options here and are left out.
CONNECT_OPTIONS: frozenset[str] = frozenset(
    {
        "account",
        "allow_certificates_without_crl_url",
        "allow_empty_proxy",
        "application",
        "arrow_number_to_decimal",
        "auth_class",
        "authentication_timeout",
        "authenticator",
        "auto_cleanup",
        "autocommit",
        "backoff_policy",
        "cert_revocation_check_mode",
        "check_arrow_conversion_error_on_every_column",
        "client_app_id",
        "client_app_version",
        "client_fetch_threads",
        "client_fetch_use_mp",
        "client_memory_limit",
        "client_metadata_request_use_connection_ctx",
        "client_out_of_band_telemetry_enabled",
        "client_prefetch_threads",
        "client_request_mfa_token",
        "client_session_keep_alive",
        "client_session_keep_alive_heartbeat_frequency",
        "client_store_temporary_credential",
        "client_timestamp_type_mapping",
        "config",
        "connect_timeout",
        "connection_diag_allowlist_path",
        "connection_diag_log_path",
        "connection_diag_whitelist_path",
        "consent_cache_id_token",
        "converter_class",
        "crl_allow_certificates_without_crl_url",
        "crl_cache_cleanup_interval",
        "crl_cache_cleanup_interval_hours",
        "crl_cache_dir",
        "crl_cache_removal_delay_days",
        "crl_cache_start_cleanup",
        "crl_cache_validity_hours",
        "crl_check_mode",
        "crl_connection_timeout",
        "crl_connection_timeout_ms",
        "crl_download_max_size",
        "crl_enable_disk_caching",
        "crl_enable_memory_caching",
        "crl_http_timeout",
        "crl_max_download_size",
        "crl_on_disk_cache_removal_delay",
        "crl_read_timeout_ms",
        "crl_unsafe_skip_file_permissions_check",
        "crl_validity_time",
        "custom_root_store_path",
        "database",
        "debug_arrow_chunk",
        "disable_console_login",
        "disable_ocsp_checks",
        "disable_parallel_user_prompt",
        "disable_query_context_cache",
        "disable_request_pooling",
        "disable_saml_url_check",
        "dsn",
        "enable_connection_diag",
        "enable_crl_cache",
        "enable_crl_file_cache",
        "enable_crl_memory_cache",
        "enable_retry_reason_in_query_response",
        "enable_server_session_keep_alive_auto_detection",
        "enable_stage_s3_privatelink_for_us_east_1",
        "external_browser_timeout",
        "external_session_id",
        "force_microsecond_precision",
        "gcs_use_downscoped_credential",
        "host",
        "include_retry_reason",
        "inject_client_pause",
        "insecure_mode",
        "internal_application_name",
        "internal_application_version",
        "interpolate_empty_sequences",
        "iobound_tpe_limit",
        "json_result_force_utf8_decoding",
        "jwt_timeout",
        "log_imported_packages",
        "log_imported_packages_in_telemetry",
        "log_max_query_length",
        "log_query_parameters",
        "log_query_text",
        "login_timeout",
        "logout_error_strategy",
        "logout_max_attempts",
        "logout_request_timeout_seconds",
        "logout_total_timeout_seconds",
        "master_token",
        "master_validity_in_seconds",
        "max_tls_version",
        "mfa_callback",
        "min_tls_version",
        "network_timeout",
        "no_proxy",
        "numpy",
        "oauth_authorization_url",
        "oauth_client_id",
        "oauth_client_secret",
        "oauth_credentials_in_body",
        "oauth_disable_console_login",
        "oauth_disable_pkce",
        "oauth_enable_dpop",
        "oauth_enable_refresh_tokens",
        "oauth_enable_single_use_refresh_tokens",
        "oauth_redirect_uri",
        "oauth_scope",
        "oauth_socket_uri",
        "oauth_token_request_url",
        "ocsp_fail_open",
        "ocsp_response_cache_filename",
        "ocsp_root_certs_dict_lock_timeout",
        "okta_username",
        "paramstyle",
        "passcode",
        "passcode_in_password",
        "passcodeinpassword",
        "password",
        "password_callback",
        "platform_detection_timeout_seconds",
        "port",
        "preserve_underscores_in_hostname",
        "private_key",
        "private_key_file",
        "private_key_file_pwd",
        "private_key_passphrase",
        "private_key_password",
        "probe_connection",
        "protocol",
        "proxy",
        "proxy_host",
        "proxy_password",
        "proxy_port",
        "proxy_scheme",
        "proxy_user",
        "put_get_max_attempts",
        "query_tag",
        "query_timeout",
        "region",
        "request_timeout",
        "reraise_error_in_file_transfer_work_function",
        "retry_backoff_base_ms",
        "retry_backoff_cap_ms",
        "retry_backoff_factor",
        "retry_backoff_jitter",
        "retry_extra_status_codes",
        "retry_max_attempts",
        "retry_timeout",
        "reuse_results",
        "role",
        "schema",
        "secondary_roles",
        "sequence_counter",
        "serialize_session_operations",
        "server_session_keep_alive",
        "server_url",
        "service_name",
        "session_id",
        "session_parameters",
        "session_token",
        "skip_file_permissions_check",
        "snowflake_server_dop_cap_for_file_transfer",
        "socket_timeout",
        "ssl",
        "support_negative_year",
        "timezone",
        "tls_skip_verify",
        "token",
        "token_file_path",
        "unsafe_file_write",
        "unsafe_skip_config_file_permissions_check",
        "unsafe_skip_file_permissions_check",
        "use_core_arrow",
        "use_current_catalog",
        "use_openssl_only",
        "use_proxy_env",
        "use_s3_regional_url",
        "user",
        "validate_default_parameters",
        "verify_certificates",
        "verify_hostname",
        "warehouse",
        "wif_host",
        "workload_identity_aws_use_outbound_token",
        "workload_identity_entra_resource",
        "workload_identity_host",
        "workload_identity_impersonation_path",
        "workload_identity_provider",
    }
)

#: Explicit keys that say "where to connect"; any of them disables the default profile.
_WHERE_KEYS = ("account", "host", "server_url")

#: Well-known keys whose TOML/explicit values must have these types.
_STR_KEYS = frozenset(
    {
        "account",
        "user",
        "host",
        "password",
        "database",
        "schema",
        "warehouse",
        "role",
        "authenticator",
        "protocol",
        "application",
    }
)
#: Pass-through options the connectors would reject with a raw TypeError/ValueError
#: from the login thread: checked here so the error names the option.
_INT_KEYS = frozenset(
    {
        "client_prefetch_threads",
        "login_timeout",
        "network_timeout",
        "socket_timeout",
        "client_session_keep_alive_heartbeat_frequency",
    }
)
#: Counts where 0 makes no sense (5.x: total attempts, 1 = no retry; 4.x: ours, see _driver).
_POSITIVE_INT_KEYS = frozenset({"retry_max_attempts"})
_MAPPING_KEYS = frozenset({"session_parameters"})

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
    if key in _STR_KEYS and not isinstance(value, str):
        raise ConfigurationError(
            f"option {key!r} in {where} must be a str; got {_describe(key, value)}"
        )
    if key in _INT_KEYS and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**31
    ):
        raise ConfigurationError(
            f"option {key!r} in {where} must be a non-negative int; got {_describe(key, value)}"
        )
    if key in _POSITIVE_INT_KEYS and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31
    ):
        raise ConfigurationError(
            f"option {key!r} in {where} must be a positive int; got {_describe(key, value)}"
        )
    if key in _MAPPING_KEYS and not isinstance(value, Mapping):
        raise ConfigurationError(
            f"option {key!r} in {where} must be a dict (table); got {_describe(key, value)}"
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
