"""Logging in a pool's sessions: the path ``create()`` takes, bounded, paced after failures.

- At most ``max_concurrent_logins`` at once; one at a time for ``externalbrowser``, with
  the connector's ID-token cache on, so the first login's browser prompt serves the rest.
- After a failed login, no other starts before an exponential, jittered, capped delay:
  a down server sees a handful of attempts, not a hot loop. The last error is kept,
  without secrets, for the ``PoolTimeout`` of the tasks that waited in vain.
"""

from __future__ import annotations

import logging

import anyio

from ._builder import _resolve_in_thread, create_session
from ._config import SECRET_KEYS
from ._pool_options import PoolOptions, login_delay
from ._session import AsyncSession

logger = logging.getLogger("asyncsession")

#: ``authenticator`` values that open a browser: one prompt must serve the whole pool.
BROWSER_AUTHENTICATORS = frozenset({"externalbrowser"})


async def login_options(options: dict[str, object]) -> tuple[dict[str, object], bool]:
    """Resolve the options once (config errors surface before any login); browser SSO?"""
    config = await _resolve_in_thread(options)
    authenticator = str(config.connect_kwargs.get("authenticator") or "").lower()
    browser = authenticator in BROWSER_AUTHENTICATORS
    if browser and "client_store_temporary_credential" not in config.connect_kwargs:
        # The ID-token cache: the default of 5.x, and of 4.x only on macOS and Windows.
        options = {**options, "client_store_temporary_credential": True}
    return options, browser


class Logins:
    def __init__(
        self,
        options: dict[str, object],
        app_tag: str | None,
        pool_options: PoolOptions,
        *,
        one_at_a_time: bool,
    ) -> None:
        self._options = options
        self._app_tag = app_tag
        self._max_delay = pool_options.max_login_delay
        self.limiter = anyio.CapacityLimiter(
            1 if one_at_a_time else pool_options.max_concurrent_logins
        )
        self.succeeded = 0
        self.failed = 0
        self.failures_in_a_row = 0
        self.next_at = 0.0
        self.last_error: str | None = None

    def wait_seconds(self) -> float:
        """0 if a login may start now, else the seconds of backoff left."""
        return max(self.next_at - anyio.current_time(), 0.0)

    async def login(self, *, paced: bool = True) -> AsyncSession | None:
        """One login (waits for a slot). ``None``: it failed (recorded) or backoff is on."""
        async with self.limiter:
            if paced and self.wait_seconds() > 0:
                return None
            try:
                session = await create_session(self._options, self._app_tag)
            except Exception as e:
                if not paced:
                    raise
                self._failed(e)
                return None
        self.succeeded += 1
        self.failures_in_a_row = 0
        self.last_error = None
        return session

    def _failed(self, error: Exception) -> None:
        self.failed += 1
        self.failures_in_a_row += 1
        delay = login_delay(self.failures_in_a_row, self._max_delay)
        self.next_at = anyio.current_time() + delay
        self.last_error = self._without_secrets(f"{type(error).__name__}: {error}")
        logger.warning(
            "session pool login failed (%d in a row; next attempt in %.1f s): %s",
            self.failures_in_a_row,
            delay,
            self.last_error,
        )

    def _without_secrets(self, text: str) -> str:
        for key, value in self._options.items():
            if key in SECRET_KEYS and isinstance(value, str) and len(value) >= 4:
                text = text.replace(value, "***")
        return text[:500]
