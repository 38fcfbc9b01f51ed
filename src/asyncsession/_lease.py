"""What happens to a pooled session while it is leased, and when it comes back.

- ``LeaseGuard`` (installed on the session's ``SessionCore`` for the lease): a statement
  *refused* by the server because the pooled session died (``SessionExpiredError``:
  390104 "login again", 390111, 390112→390114 master token expired) before anything of
  the lease was answered on that connection is retried once on a fresh connection
  swapped into the same ``AsyncSession``. A refused statement never ran, and nothing of
  the lease can have been lost with the old session.
- ``Lease``: ``async with pool.session() as session``; ``PoolCreation``: what
  ``builder.create_pool()`` returns (awaitable, or an async context manager).
- ``reset_for_reuse`` (on return): abort what still runs (queries and ``collect_nowait``
  jobs), roll back an open transaction, restore the session state the lease changed with
  one statement per item; or say why the session must be discarded instead. Nothing
  changed and nothing running: no round trip at all.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from ._closing import Creation
from ._errors import SessionExpiredError, _ConnectorError, is_session_gone
from ._own_statements import ignore_result, session_id_for_log
from ._session import core_of

if TYPE_CHECKING:
    from ._core import SessionCore
    from ._pool import SessionPool  # noqa: F401 - named by PoolCreation's base, a string
    from ._pool import _Pooled as Pooled
    from ._session import AsyncSession

logger = logging.getLogger("asyncsession")

#: Session state a lease may change that one statement restores (see ``restore_state``).
RESTORABLE = frozenset({"database", "schema", "warehouse", "role", "query_tag"})


def is_refused(error: BaseException) -> bool:
    """True for a statement the server refused because the session is gone (never ran).

    Connector 5.x raises ``ReauthenticationRequest`` (250001) when its master token
    cannot be renewed: the statement was not sent either (4.x has no such class).
    """
    if isinstance(error, SessionExpiredError) or is_session_gone(error):
        return True
    return isinstance(error, _ConnectorError) and type(error).__name__ == "ReauthenticationRequest"


@dataclass(frozen=True)
class Original:
    """The session state at login (the builder's), to restore after a lease."""

    database: str | None
    schema: str | None
    warehouse: str | None
    role: str | None
    query_tag: str | None

    @classmethod
    def of(cls, session: AsyncSession) -> Original:
        connection = session.connection

        def attr(name: str) -> str | None:
            value = getattr(connection, name, None)
            return None if value is None else str(value)

        return cls(
            attr("database"), attr("schema"), attr("warehouse"), attr("role"), session.query_tag
        )


@dataclass(eq=False)
class LeaseGuard:
    """Installed as ``SessionCore.lease`` while leased: replaces a session that died idle."""

    #: Logs in a fresh session of the pool and gives it (the pool keeps none of it).
    fresh_session: Callable[[], Awaitable[AsyncSession]]
    original_connection: Any
    #: Something was answered on the original connection: a later refusal is not retried.
    used: bool = False
    #: A refusal was seen that could not be retried: discard the session on return.
    dead: bool = False
    replaced: bool = False
    # A lambda, not ``anyio.Lock``: keeps anyio's lazy submodules off the import path.
    _swapping: anyio.Lock = field(default_factory=lambda: anyio.Lock())

    def answered(self, connection: Any) -> None:
        if connection is self.original_connection:
            self.used = True

    async def retry_refused(self, core: SessionCore, connection: Any, error: Exception) -> bool:
        """Whether to run the refused statement again (on the connection swapped in)."""
        if not is_refused(error):
            self.answered(connection)
            return False
        if connection is not self.original_connection or self.used:
            self.dead = True
            return False
        async with self._swapping:  # concurrent first statements share one new login
            if core.connection is self.original_connection:
                try:
                    fresh = await self.fresh_session()
                except Exception as e:
                    logger.warning(
                        "replacing session %s failed: %s", session_id_for_log(connection), e
                    )
                    self.dead = True
                    return False
                swap_connections(core, core_of(fresh))
                self.replaced = True
                logger.info(
                    "pooled session %s was gone before its lease's first statement; "
                    "retrying it on session %s",
                    session_id_for_log(connection),
                    core.session_id,
                )
                with anyio.CancelScope(shield=True):
                    await fresh.aclose()  # now holds the dead connection: a quiet logout
        return True


def swap_connections(core: SessionCore, other: SessionCore) -> None:
    """Exchange the two sessions' connections and whether the server said they are gone."""
    core.connection, other.connection = other.connection, core.connection
    core.gone, other.gone = other.gone, core.gone


async def reset_for_reuse(pooled: Pooled, guard: LeaseGuard | None, bound: float) -> str | None:
    """Make a returned session as the builder made it; return why not (then: discard it)."""
    session, core = pooled.session, pooled.core
    if session.is_closed:
        return "closed by its lessee"
    if (guard is not None and guard.dead) or not session.is_alive:
        return "the server no longer knows it"
    running = list(core.registry.snapshot())
    if running and await core.registry.abort_many(running, "lease ended"):
        return "a query of the lease could not be aborted in time"
    state = core.state
    if state.in_transaction:
        try:
            confirmed = await core.rollback()
        except Exception as e:
            return f"rolling back its transaction failed ({e})"
        if not confirmed or state.in_transaction:
            return "its transaction could not be rolled back"
    changed = set(state.changed)
    if not changed:
        return None
    if not changed <= RESTORABLE:
        return f"the lease changed its {', '.join(sorted(changed - RESTORABLE))}"
    try:
        with anyio.fail_after(bound):
            await restore_state(pooled, changed)
    except Exception as e:
        return f"restoring its {', '.join(sorted(changed))} failed ({e})"
    state.reset()
    return None


async def restore_state(pooled: Pooled, changed: set[str]) -> None:
    """One statement per changed item; names quoted exactly as the server reported them."""
    original = pooled.original
    statements: list[str] = []
    if "role" in changed:
        statements.append(f"use role {_known(original.role, 'role')}")
    if "warehouse" in changed:
        statements.append(f"use warehouse {_known(original.warehouse, 'warehouse')}")
    if changed & {"database", "schema"}:
        database = _known(original.database, "database")
        if original.schema is None:
            statements.append(f"use database {database}")
        else:
            statements.append(f"use schema {database}.{_quoted(original.schema)}")
    for sql in statements:
        await pooled.core.runner.run(sql, None, ignore_result, operation="restore a pooled session")
    if "query_tag" in changed:
        await pooled.session.set_query_tag(original.query_tag)


def _known(name: str | None, kind: str) -> str:
    if name is None:
        raise LookupError(f"the session had no {kind} at login")
    return _quoted(name)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Lease:
    """``async with pool.session() as session``: the session is this task's until the block ends."""

    def __init__(
        self,
        timeout: float,
        *,
        acquire: Callable[[float], Awaitable[Pooled]],
        release: Callable[[Pooled, LeaseGuard], Awaitable[None]],
        fresh_session: Callable[[], Awaitable[AsyncSession]],
    ) -> None:
        """Made by ``SessionPool.session()``, which hands over the pool's side of a lease."""
        self._timeout = timeout
        self._acquire = acquire
        self._release = release
        self._fresh_session = fresh_session
        self._pooled: Pooled | None = None
        self._guard: LeaseGuard | None = None

    async def __aenter__(self) -> AsyncSession:
        if self._pooled is not None:
            raise RuntimeError("this lease is already in use: call pool.session() again")
        pooled = await self._acquire(self._timeout)
        self._guard = LeaseGuard(self._fresh_session, pooled.core.connection)
        pooled.core.lease = self._guard
        self._pooled = pooled
        return pooled.session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        pooled, guard = self._pooled, self._guard
        self._pooled = self._guard = None
        if pooled is not None and guard is not None:
            await self._release(pooled, guard)


class PoolCreation(Creation["SessionPool"]):
    """Awaitable (gives the pool) and async context manager (closes it on exit)."""


# Shown under its public name (``asyncsession`` imports this module on first use, see
# __init__.py), also when this module is imported before that name is looked up.
Lease.__module__ = "asyncsession"
PoolCreation.__module__ = "asyncsession"
