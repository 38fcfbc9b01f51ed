"""Names and values of options: case-insensitive names, the length limit, the types of
the well-known ``connect()`` options (catalogued in ``_options``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ._errors import ConfigurationError
from ._options import (
    BOOL_OPTIONS,
    FLOAT_OPTIONS,
    INT_OPTIONS,
    MAPPING_OPTIONS,
    POSITIVE_INT_OPTIONS,
    STR_OPTIONS,
)
from ._secrets import describe, short, type_name

__all__ = ["MAX_OPTION_LENGTH", "check_length", "check_value", "normalize"]

#: Longest str value accepted for any option except ``private_key``.
MAX_OPTION_LENGTH = 64 * 1024


def _same(a: object, b: object) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:
        return False


def normalize(options: Mapping[Any, object], where: str) -> dict[str, object]:
    """Lower-case the names; reject non-str names and case-insensitive collisions."""
    out: dict[str, object] = {}
    spelled: dict[str, str] = {}
    for key, value in options.items():
        if not isinstance(key, str):
            raise ConfigurationError(
                f"option names must be str; got {type_name(key)} {short.repr(key)} in {where}"
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


def check_length(key: str, value: object, where: str) -> None:
    if isinstance(value, str) and len(value) > MAX_OPTION_LENGTH and key != "private_key":
        raise ConfigurationError(
            f"option {key!r} in {where} is {len(value)} characters long; "
            f"the limit is {MAX_OPTION_LENGTH}"
        )


def check_value(key: str, value: object, where: str) -> object:
    """Type-check the well-known keys; returns the value to use (port may become int)."""
    check_length(key, value, where)
    if value is None:
        return value
    expected = _expected_type(key, value)
    if expected is not None:
        raise ConfigurationError(
            f"option {key!r} in {where} must be {expected}; got {describe(key, value)}"
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
                f"got {describe(key, value)}"
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
