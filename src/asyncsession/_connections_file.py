"""Finding and safely reading connections.toml / config.toml.

Directory: ``$SNOWFLAKE_HOME`` if it is a directory, else ``~/.snowflake`` if it is one,
else ``$XDG_CONFIG_HOME`` (or ``~/.config``) + ``/snowflake``. A file writable by group
or others is refused; one readable by them is warned about once per file (process-wide
memory, below). Nothing here writes a file.
"""

from __future__ import annotations

import os
import stat
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._errors import ConfigurationError

__all__ = [
    "SKIP_PERMISSION_CHECK_KEYS",
    "SKIP_READ_WARNING_ENV_VARS",
    "InsecureConfigFileWarning",
    "config_dir",
    "env_true",
    "expand_home",
    "load_toml",
]

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
SKIP_PERMISSION_CHECK_KEYS = (
    "unsafe_skip_config_file_permissions_check",  # 5.x
    "unsafe_skip_file_permissions_check",  # 4.x (5.x fans it out)
)

#: Permission checks run on POSIX only (a module constant so tests can switch it).
_POSIX = os.name == "posix"


class InsecureConfigFileWarning(UserWarning):
    """A connections.toml/config.toml is readable by group or others (once per file)."""


#: The files already warned about (real paths), process-wide: warn once per file.
_warned_lock = threading.Lock()
_warned_files: set[str] = set()


def _reset_permission_warnings() -> None:
    """Forget which files were warned about (for tests)."""
    with _warned_lock:
        _warned_files.clear()


def expand_home(value: str, home: Path) -> Path:
    if value == "~":
        return home
    if value.startswith(("~/", "~" + os.sep)):
        return home / value[2:]
    return Path(value)


def config_dir(environ: Mapping[str, str], home: Path) -> tuple[Path, list[str]]:
    """The directory holding connections.toml/config.toml, and the ones passed over."""
    passed: list[str] = []
    sf_home = environ.get("SNOWFLAKE_HOME", "")
    if sf_home:
        path = expand_home(sf_home, home)
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


def env_true(environ: Mapping[str, str], name: str) -> bool:
    return environ.get(name, "").strip().lower() == "true"


def load_toml(path: Path, *, check_permissions: bool, silence: bool) -> dict[str, Any] | None:
    """Parse ``path``; ``None`` if it does not exist. Checks permissions on POSIX."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigurationError(f"{path} is a directory, not a TOML file") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:  # a NUL in the path: os.open refuses it before any I/O
        raise ConfigurationError(f"cannot read {str(path)!r}: {exc}") from None
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
    import tomllib  # only when a file is read: keeps it off the import path

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
            # resolve()'s caller: resolve -> read_profile -> load_toml -> _warn_readable
            stacklevel=5,
        )
        _warned_files.add(key)  # after warn(): a warning turned into an error repeats
