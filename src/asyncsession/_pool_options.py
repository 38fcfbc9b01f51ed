"""``SessionPool`` options: their defaults, their checks, and the login backoff schedule.

Named and defaulted in the spirit of psycopg_pool's ``AsyncConnectionPool`` (``timeout``,
``max_waiting``, ``max_lifetime``, ``max_idle``), checked before any login: a bad value
is one ``ConfigurationError`` naming the option.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields

from ._errors import ConfigurationError

#: Logins at most at once while the pool fills (an ``externalbrowser`` pool: one).
DEFAULT_MAX_CONCURRENT_LOGINS = 4
#: First wait after a failed login; doubled per failure (with ±10 % jitter), up to the cap.
FIRST_LOGIN_DELAY = 1.0
LOGIN_DELAY_JITTER = 0.1


@dataclass(frozen=True)
class PoolOptions:
    #: Sessions logged in at creation and kept (replaced when discarded).
    min_size: int = 1
    #: Sessions at most; the pool grows to it on demand.
    max_size: int = 10
    #: Default seconds ``pool.session()`` waits for a free session before ``PoolTimeout``.
    timeout: float = 30.0
    #: Tasks allowed to wait for a lease at once; more get ``TooManyRequests``. 0: no limit.
    max_waiting: int = 0
    #: A session older than this (±5 %) is logged out when it comes back, and replaced.
    max_lifetime: float = 3600.0
    #: A session idle this long is logged out while the pool is above ``min_size``.
    max_idle: float = 600.0
    #: A session idle longer than this gets one ``select 1`` before it is handed out
    #: (0: before every lease; None: never). A recently used one gets none.
    health_check_after: float | None = 60.0
    #: Cap of the exponential backoff between failed logins.
    max_login_delay: float = 30.0
    #: Logins at most at once (an ``externalbrowser`` pool always uses 1).
    max_concurrent_logins: int = DEFAULT_MAX_CONCURRENT_LOGINS


_INT_OPTIONS = {"min_size": 0, "max_size": 1, "max_waiting": 0, "max_concurrent_logins": 1}
_SECONDS_OPTIONS = ("timeout", "max_lifetime", "max_idle", "max_login_delay")
OPTION_NAMES = tuple(f.name for f in fields(PoolOptions))


def check_pool_options(options: dict[str, object]) -> PoolOptions:
    """The checked options, or one ConfigurationError naming the first bad one."""
    for name in options:
        if name not in OPTION_NAMES:
            import difflib  # only for a suggestion: keeps it off the import path

            close = difflib.get_close_matches(name, OPTION_NAMES, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(
                f"unknown pool option {name!r}{hint} (pool options: {', '.join(OPTION_NAMES)})"
            )
    given = dict(options)
    for name, value in given.items():
        if name in _INT_OPTIONS:
            least = _INT_OPTIONS[name]
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                what = "a positive int" if least else "an int >= 0"
                raise ConfigurationError(f"pool option {name!r} must be {what}; got {value!r}")
        elif name in _SECONDS_OPTIONS:
            check_seconds(name, value)
        elif (
            name == "health_check_after"
            and value is not None
            and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < 0
            )
        ):
            raise ConfigurationError(
                f"pool option 'health_check_after' must be a number of seconds >= 0 "
                f"or None; got {value!r}"
            )
    checked = PoolOptions(**given)  # type: ignore[arg-type]
    if checked.min_size > checked.max_size:
        raise ConfigurationError(
            f"pool option 'min_size' ({checked.min_size}) must not exceed "
            f"'max_size' ({checked.max_size})"
        )
    return checked


def check_seconds(name: str, value: object) -> float:
    """A positive, finite number of seconds (not a bool), or ConfigurationError naming it."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ConfigurationError(
            f"pool option {name!r} must be a positive number of seconds; got {value!r}"
        )
    return float(value)


def login_delay(failures: int, cap: float) -> float:
    """Seconds to wait after ``failures`` consecutive failed logins (exponential, jittered)."""
    base = min(cap, FIRST_LOGIN_DELAY * 2.0 ** min(failures - 1, 30))
    return base * (1.0 + LOGIN_DELAY_JITTER * (2.0 * random.random() - 1.0))


def lifetime(max_lifetime: float) -> float:
    """A session's lifetime: ``max_lifetime`` less up to 5 %, so sessions do not expire together."""
    return max_lifetime * (1.0 - 0.05 * random.random())
