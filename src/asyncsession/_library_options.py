"""asyncsession's own options, one row each: name, default, check, meaning.

They are consumed by the library and never passed to ``connect()``; a connections.toml
profile may not set them. To add one: a row in :data:`TABLE`, then read it where it
applies (the builder hands ``cancel_timeout`` and ``max_concurrent_queries`` to the
session; ``_profiles`` reads the file-related ones).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any, NamedTuple

from ._errors import ConfigurationError
from ._secrets import describe
from ._values import check_length

__all__ = [
    "DEFAULT_CANCEL_TIMEOUT",
    "DEFAULT_MAX_CONCURRENT_QUERIES",
    "LIBRARY_OPTIONS",
    "TABLE",
    "LibraryOption",
    "validate_library_options",
]

DEFAULT_CANCEL_TIMEOUT = 5.0
#: Beyond the executor's first few, a query in flight holds no thread (``_executor``).
DEFAULT_MAX_CONCURRENT_QUERIES = 1000


# A NamedTuple, not a frozen dataclass: cheaper to define at import.
class LibraryOption(NamedTuple):
    name: str
    #: The value used when the option is not given (``None``: absent means "not set").
    default: object
    #: ``check(value)`` is ``None`` if the value is fine, else what it must be.
    check: Callable[[object], str | None]
    doc: str
    #: The text whose length is limited (``MAX_OPTION_LENGTH``), if any.
    text: Callable[[object], str] | None = None


def _require(accepts: Callable[[object], bool], expected: str) -> Callable[[object], str | None]:
    return lambda value: None if accepts(value) else expected


def _positive_seconds(value: object) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and value > 0
    )


def _positive_int(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1


def _path_check(value: object) -> str | None:
    if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
        return "a non-empty str or os.PathLike"
    if not isinstance(os.fspath(value), str):
        return "a str path (not bytes)"
    return None


def _fspath(value: object) -> str:
    path = os.fspath(value)  # type: ignore[call-overload]
    assert isinstance(path, str)
    return path


TABLE: tuple[LibraryOption, ...] = (
    LibraryOption(
        "connection_name",
        None,
        _require(lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty str"),
        "the connections.toml / config.toml profile to use",
        text=str,
    ),
    LibraryOption(
        "connections_file_path",
        None,
        _path_check,
        "read this file instead of <config dir>/connections.toml",
        text=_fspath,
    ),
    LibraryOption(
        "local_testing",
        False,
        _require(lambda v: isinstance(v, bool), "a bool"),
        "connect to an embedded emulator (asyncsession[testing]) instead of an account",
    ),
    LibraryOption(
        "cancel_timeout",
        DEFAULT_CANCEL_TIMEOUT,
        _require(_positive_seconds, "a positive number of seconds (int or float)"),
        "seconds a cancelled query may take to be aborted and drained",
    ),
    LibraryOption(
        "max_concurrent_queries",
        DEFAULT_MAX_CONCURRENT_QUERIES,
        _require(_positive_int, "a positive int"),
        "queries one session has in flight at once (more wait their turn)",
    ),
    LibraryOption(
        "silence_permission_warning",
        False,
        _require(lambda v: isinstance(v, bool), "a bool"),
        "no InsecureConfigFileWarning for a group/other-readable connections file",
    ),
)

_BY_NAME = {option.name: option for option in TABLE}

#: Option keys asyncsession consumes itself; never passed to ``connect()``.
LIBRARY_OPTIONS: frozenset[str] = frozenset(_BY_NAME)


def validate_library_options(lib: dict[str, object]) -> dict[str, Any]:
    """The given library options, checked; ``None`` values dropped (as if absent)."""
    out: dict[str, Any] = {}
    for key, value in lib.items():
        if value is None:  # None means "not given", like an absent key
            continue
        option = _BY_NAME[key]
        expected = option.check(value)
        if expected is not None:
            raise ConfigurationError(
                f"option {key!r} must be {expected}; got {describe(key, value)}"
            )
        if option.text is not None:
            check_length(key, option.text(value), "the options")
        out[key] = value
    return out
