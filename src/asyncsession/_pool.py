"""``SessionPool``: sessions leased to one task at a time, reset on return, replaced when dead.

Each pooled session is in one state: ``idle`` (on the idle stack) → ``leased`` (one
task holds it; ``returning`` while it is reset) → back to ``idle``, handed straight to
the first waiter, or ``discarded`` (logged out; the background worker logs in a
replacement when the pool is below what its lessees, waiters and ``min_size`` need).

- Waiting is fair: first come, first served (a FIFO of waiters; a session coming back
  goes to the head waiter, never to a task that arrived later).
- The idle stack is LIFO: the most recently used session goes out first, so the others
  age out (``max_idle``) and a hot session needs no health check.
- The background worker (a detached task, see ``_detached``) logs in (bounded; one at
  a time for ``externalbrowser``), backs off after failed logins, and logs out
  sessions that expired (``max_lifetime``) or idled (``max_idle``) above ``min_size``.

One state machine over one set of sessions, so a little over 400 lines: the waiters,
the worker and the return path all read and change the same counts.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from ._closing import ClosesOnExit
from ._detached import start_detached
from ._errors import PoolClosedError, PoolTimeout, TooManyRequests
from ._lease import Lease, LeaseGuard, Original, reset_for_reuse
from ._pool_logins import Logins, login_options
from ._pool_options import PoolOptions, check_seconds, lifetime
from ._session import AsyncSession, core_of

if TYPE_CHECKING:
    import anyio.abc

    from ._core import SessionCore

logger = logging.getLogger("asyncsession")


@dataclass(eq=False)
class _Pooled:
    session: AsyncSession
    #: The session's internals the pool works with (lease guard, health check, reset).
    core: SessionCore
    original: Original
    expires_at: float
    last_used: float
    state: str = "idle"  # idle, leased, returning, discarded


@dataclass(eq=False)
class _Waiter:
    # A lambda, not ``anyio.Event``: reading that at class creation would import anyio's
    # synchronization modules with ``import asyncsession`` (anyio loads them lazily).
    ready: anyio.Event = field(default_factory=lambda: anyio.Event())
    pooled: _Pooled | None = None
    error: Exception | None = None


class SessionPool(ClosesOnExit):
    """A pool of ``AsyncSession``: ``async with pool.session() as session`` leases one.

    Make it with ``await Session.builder....create_pool(min_size=…, max_size=…)`` (or
    ``async with … as pool``). A lease is exclusive: no other task gets that session until
    the ``async with`` block ends. On return, queries and ``collect_nowait()`` jobs still
    running are aborted on the server, an open transaction is rolled back, and ``use_*``
    / query tag changes are undone (one statement each; none when nothing changed); a
    session whose parameters changed (``ALTER SESSION SET …``), or that cannot be reset
    within ``cancel_timeout``, is logged out and replaced. ``session.aclose()`` inside a
    lease ends that session: the pool discards it. Do not keep the session after the
    block: it will be someone else's.
    """

    def __init__(
        self,
        options: dict[str, object],
        app_tag: str | None,
        pool_options: PoolOptions,
        *,
        single_login: bool = False,
    ) -> None:
        self.options = pool_options
        self._idle: list[_Pooled] = []
        self._live: set[_Pooled] = set()
        self._waiters: deque[_Waiter] = deque()
        self._connecting = 0
        #: Discarded sessions not yet logged out (the worker, or ``aclose()``, does it).
        self._to_close: list[AsyncSession] = []
        self._logins = Logins(options, app_tag, pool_options, one_at_a_time=single_login)
        self._closed = False
        self._close_done: anyio.Event | None = None
        self._wake = anyio.Event()
        self._worker_scope: anyio.CancelScope | None = None
        self._worker_tg: anyio.abc.TaskGroup | None = None
        self._worker_done: anyio.Event | None = None
        self._counts = dict.fromkeys(
            (
                "replaced",
                "closed_idle",
                "requests",
                "requests_waited",
                "requests_timed_out",
                "requests_refused",
                "health_checks",
                "retried_statements",
            ),
            0,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"size={len(self._live)}"
        sizes = f"min_size={self.options.min_size} max_size={self.options.max_size}"
        return f"<SessionPool {state} {sizes}>"

    # ---- public ----------------------------------------------------------------------
    @property
    def is_closed(self) -> bool:
        return self._closed

    def session(self, *, timeout: float | None = None) -> Lease:
        """Lease a session: ``async with pool.session() as session``.

        Waits (fairly, first come first served) up to ``timeout`` seconds (default: the
        pool's ``timeout``) for a free session, else raises ``PoolTimeout``.
        """
        if timeout is not None:
            timeout = check_seconds("timeout", timeout)
        return Lease(
            self.options.timeout if timeout is None else timeout,
            acquire=self._acquire,
            release=self._release,
            fresh_session=self._fresh_session,
        )

    def stats(self) -> dict[str, Any]:
        """Sizes now, and counters since the pool was made (as psycopg_pool's ``get_stats()``)."""
        leased = sum(1 for p in self._live if p.state in ("leased", "returning"))
        return {
            "min_size": self.options.min_size,
            "max_size": self.options.max_size,
            "size": len(self._live),
            "leased": leased,
            "idle": len(self._idle),
            "waiting": len(self._waiters),
            "connecting": self._connecting,
            "logins": self._logins.succeeded,
            "failed_logins": self._logins.failed,
            **self._counts,
            "last_login_error": self._logins.last_error,
        }

    async def aclose(self) -> None:
        """Close the pool: waiters get ``PoolClosedError``; every session, leased or idle,
        has its queries aborted on the server and is logged out (bounded by
        ``cancel_timeout``, as ``AsyncSession.aclose()``). Idempotent."""
        with anyio.CancelScope(shield=True):
            if self._close_done is not None:
                await self._close_done.wait()
                return
            self._closed = True
            self._close_done = anyio.Event()
            try:
                while self._waiters:
                    waiter = self._waiters.popleft()
                    waiter.error = PoolClosedError("lease a session")
                    waiter.ready.set()
                if self._worker_scope is not None:
                    self._worker_scope.cancel()  # logins in flight: logged out by _login
                if self._worker_done is not None:
                    await self._worker_done.wait()
                self._idle.clear()
                sessions, self._to_close = self._to_close, []
                for pooled in self._live:
                    pooled.state = "discarded"
                    sessions.append(pooled.session)
                self._live.clear()
                async with anyio.create_task_group() as tg:
                    for session in sessions:
                        tg.start_soon(session.aclose)
            finally:
                self._close_done.set()

    close = aclose

    # ---- opening ---------------------------------------------------------------------
    async def _open(self) -> None:
        """Log in ``min_size`` sessions (bounded in parallel), then start the worker."""
        errors: list[Exception] = []

        async def first_login() -> None:
            try:
                session = await self._logins.login(paced=False)
                assert session is not None
                self._put(self._adopt(session))
            except Exception as e:
                errors.append(e)
                tg.cancel_scope.cancel()

        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self.options.min_size):
                    tg.start_soon(first_login)
        except BaseException:
            await self.aclose()
            raise
        if errors:
            await self.aclose()
            raise errors[0]
        self._worker_done = anyio.Event()
        self._worker_scope = anyio.CancelScope()
        start_detached(self._work)

    # ---- the background worker -------------------------------------------------------
    async def _work(self) -> None:
        assert self._worker_scope is not None
        assert self._worker_done is not None
        try:
            with self._worker_scope:
                async with anyio.create_task_group() as tg:
                    self._worker_tg = tg
                    while True:
                        self._wake = anyio.Event()
                        wait = self._plan(tg)
                        with anyio.move_on_after(wait):
                            await self._wake.wait()
        except Exception:  # a detached task must not raise (trio would crash the run)
            logger.exception("the session pool's background worker failed")
        finally:
            self._worker_tg = None
            self._worker_done.set()

    def _poke(self) -> None:
        self._wake.set()

    def _wanted(self) -> int:
        leased = len(self._live) - len(self._idle)
        return min(self.options.max_size, max(self.options.min_size, leased + len(self._waiters)))

    def _plan(self, tg: anyio.abc.TaskGroup) -> float:
        """Start what is due (logins, logouts); return seconds until something else is."""
        while self._to_close:
            tg.start_soon(_logout, self._to_close.pop())
        now = anyio.current_time()
        wait = float("inf")
        for pooled in list(self._idle):
            idle_until = pooled.last_used + self.options.max_idle
            if now >= pooled.expires_at:
                self._discard(pooled, "it reached max_lifetime")
            elif now >= idle_until and len(self._live) > self.options.min_size:
                self._counts["closed_idle"] += 1
                self._discard(pooled, "it was idle for max_idle", replace=False)
            else:
                wait = min(wait, pooled.expires_at - now)
                if len(self._live) > self.options.min_size:
                    wait = min(wait, idle_until - now)
        missing = self._wanted() - len(self._live) - self._connecting
        if missing > 0:
            if self._logins.wait_seconds() > 0:
                wait = min(wait, self._logins.wait_seconds())
            else:
                for _ in range(missing):
                    self._connecting += 1
                    tg.start_soon(self._grow)
        return max(wait, 0.0)

    async def _grow(self) -> None:
        try:
            if len(self._live) + self._connecting > self._wanted():
                return  # demand went away meanwhile
            session = await self._logins.login()
            if session is not None:
                self._put(self._adopt(session))
        finally:
            self._connecting -= 1
            self._poke()

    def _adopt(self, session: AsyncSession) -> _Pooled:
        now = anyio.current_time()
        pooled = _Pooled(
            session,
            core_of(session),
            Original.of(session),
            now + lifetime(self.options.max_lifetime),
            now,
        )
        self._live.add(pooled)
        return pooled

    # ---- sessions in and out ---------------------------------------------------------
    def _put(self, pooled: _Pooled) -> None:
        """A session is free: to the head waiter, else onto the idle stack."""
        if self._closed:
            self._discard(pooled, "the pool is closed", replace=False)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            pooled.state = "leased"
            waiter.pooled = pooled
            waiter.ready.set()
            return
        pooled.state = "idle"
        self._idle.append(pooled)

    def _discard(self, pooled: _Pooled, reason: str, *, replace: bool = True) -> None:
        """Log ``pooled`` out (in the background when the worker runs); it leaves the pool."""
        if pooled.state == "discarded":
            return
        if pooled in self._idle:
            self._idle.remove(pooled)
        pooled.state = "discarded"
        self._live.discard(pooled)
        if replace:
            self._counts["replaced"] += 1
        logger.info("discarding pooled session (%s)", reason)
        self._to_close.append(pooled.session)
        self._poke()

    async def _acquire(self, seconds: float) -> _Pooled:
        if self._closed:
            raise PoolClosedError("lease a session")
        self._counts["requests"] += 1
        deadline = anyio.current_time() + seconds
        while True:
            if self._closed:  # closed while we checked a session that failed
                with anyio.CancelScope(shield=True):
                    while self._to_close:
                        await self._to_close.pop().aclose()
                raise PoolClosedError("lease a session")
            pooled = self._idle.pop() if self._idle and not self._waiters else None
            if pooled is not None:
                pooled.state = "leased"
                if anyio.current_time() >= pooled.expires_at:
                    self._discard(pooled, "it reached max_lifetime")
                    continue
            else:
                pooled = await self._wait(deadline, seconds)
            try:
                healthy = await self._check(pooled, deadline)
            except BaseException:
                self._put(pooled)  # cancelled during the check: it was aborted, drained
                raise
            if healthy:
                return pooled

    async def _wait(self, deadline: float, seconds: float) -> _Pooled:
        if self.options.max_waiting and len(self._waiters) >= self.options.max_waiting:
            self._counts["requests_refused"] += 1
            raise TooManyRequests(
                f"cannot lease a session: {len(self._waiters)} tasks are already waiting "
                f"(max_waiting={self.options.max_waiting})"
            )
        self._counts["requests_waited"] += 1
        waiter = _Waiter()
        self._waiters.append(waiter)
        self._poke()
        try:
            with anyio.move_on_after(deadline - anyio.current_time()):
                await waiter.ready.wait()
        except BaseException:
            self._abandon(waiter)
            raise
        if waiter.pooled is not None:
            return waiter.pooled
        self._abandon(waiter)
        if waiter.error is not None:
            raise waiter.error
        self._counts["requests_timed_out"] += 1
        raise PoolTimeout(self._timeout_message(seconds))

    def _abandon(self, waiter: _Waiter) -> None:
        if waiter.pooled is not None:
            pooled, waiter.pooled = waiter.pooled, None
            self._put(pooled)
        elif waiter in self._waiters:
            self._waiters.remove(waiter)

    def _timeout_message(self, timeout: float) -> str:
        stats = self.stats()
        message = (
            f"no pooled session became free within {timeout:g} s "
            f"(size {stats['size']} of max_size {stats['max_size']}: {stats['leased']} "
            f"leased, {stats['waiting']} other tasks waiting)"
        )
        if self._logins.last_error is not None:
            message += f"; the last login failed: {self._logins.last_error}"
        return message

    async def _check(self, pooled: _Pooled, deadline: float) -> bool:
        """One ``select 1`` for a session idle longer than ``health_check_after``."""
        threshold = self.options.health_check_after
        if threshold is None or anyio.current_time() - pooled.last_used < threshold:
            return True
        self._counts["health_checks"] += 1
        try:
            bound = min(pooled.session.cancel_timeout, deadline - anyio.current_time())
            with anyio.fail_after(max(bound, 0.1)):
                await pooled.core.scalar("select 1", "check a pooled session")
        except Exception as e:
            self._discard(pooled, f"its health check failed: {e}")
            return False
        return True

    async def _release(self, pooled: _Pooled, guard: LeaseGuard) -> None:
        """The lease ended (shielded; bounded by ``cancel_timeout`` per step)."""
        with anyio.CancelScope(shield=True):
            session = pooled.session
            pooled.core.lease = None
            if pooled.state == "discarded":  # the pool closed it meanwhile
                await session.aclose()
                return
            pooled.state = "returning"
            if guard.replaced:
                self._counts["replaced"] += 1
                self._counts["retried_statements"] += 1
            if self._closed:
                reason: str | None = "the pool is closed"
            else:
                try:
                    reason = await reset_for_reuse(pooled, guard, session.cancel_timeout)
                except Exception as e:
                    reason = f"resetting it failed ({e})"
            pooled.last_used = anyio.current_time()
            if reason is None and pooled.last_used >= pooled.expires_at:
                reason = "it reached max_lifetime"
            if reason is None:
                self._put(pooled)
            elif self._closed:
                pooled.state = "discarded"
                self._live.discard(pooled)
                await session.aclose()
            else:
                self._discard(pooled, reason)

    async def _fresh_session(self) -> AsyncSession:
        session = await self._logins.login(paced=False)
        assert session is not None
        return session


async def open_pool(
    options: dict[str, object], app_tag: str | None, pool_options: PoolOptions
) -> SessionPool:
    """Resolve the options once (errors before any login), then log in ``min_size``."""
    options, browser = await login_options(options)
    pool = SessionPool(options, app_tag, pool_options, single_login=browser)
    await pool._open()
    return pool


async def _logout(session: AsyncSession) -> None:
    """``aclose()`` a discarded session; an error is logged (the worker must go on)."""
    try:
        await session.aclose()
    except Exception:
        logger.exception("logging out a discarded pooled session failed")


# Shown under its public name (``asyncsession`` imports this module on first use, see
# __init__.py), also when this module is imported before that name is looked up.
SessionPool.__module__ = "asyncsession"
