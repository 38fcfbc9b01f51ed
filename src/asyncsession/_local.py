"""``local_testing``: sessions on an embedded emulator, started on demand and shared.

The emulator process starts with the first such session and stops when the last one
closes.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from ._errors import ConfigurationError
from ._threads import run_blocking

_lock: anyio.Lock | None = None
_emulator: Any = None
_users = 0


def _require_testing_extra() -> None:
    if importlib.util.find_spec("fakesnow") is None or importlib.util.find_spec("uvicorn") is None:
        raise ConfigurationError(
            "local_testing needs the emulator: pip install 'asyncsession[testing]' "
            "(or set ASYNCSESSION_EMULATOR_PYTHON to a Python that has it)"
        )


async def local_connection_parameters() -> tuple[dict[str, Any], Callable[[], Awaitable[None]]]:
    """Start (or share) the embedded emulator; return its parameters and a release callback."""
    global _lock, _emulator, _users
    from .testing import LocalSnowflake

    if not os.environ.get("ASYNCSESSION_EMULATOR_PYTHON"):
        _require_testing_extra()
    if _lock is None or (_users == 0 and not _lock.locked()):
        # A fresh lock per run: an anyio lock belongs to the event loop (and backend) of
        # its first use, and a process may run several loops one after the other.
        _lock = anyio.Lock()
    lock = _lock
    async with lock:
        # Shielded (start is bounded by its own timeout): a cancelled caller must not
        # leave a started emulator behind that nobody will stop.
        with anyio.CancelScope(shield=True):
            if _emulator is None or not _emulator.is_running:
                emulator = LocalSnowflake()
                await run_blocking(emulator.start, anyio.CapacityLimiter(1))
                _emulator = emulator
            _users += 1
            params = dict(_emulator.connection_parameters)
    released = False

    async def release() -> None:
        global _emulator, _users
        nonlocal released
        if released:
            return
        released = True
        async with lock:
            _users -= 1
            if _users == 0 and _emulator is not None:
                emulator, _emulator = _emulator, None
                await run_blocking(emulator.stop, anyio.CapacityLimiter(1))

    return params, release
