"""``async with session.transaction():`` and who may run statements while one is open.

A Snowflake session has one transaction, shared by every statement it runs. So that no
statement of another task ever runs inside ours, a session's statements pass a gate:

- ``transaction()`` takes the gate for its task: it waits until no other transaction
  is open and no statement outside one is in flight (statements that arrive meanwhile
  wait behind it, so a busy session cannot starve it), then sends ``BEGIN``.
- The task that entered the block, and every task started inside it (a task group,
  ``collect_many``), carry the transaction in a context variable and run inside it.
- Statements of other tasks wait until the transaction ends. A waiting statement has
  not reached the server; cancelling its task just stops the wait.

On exit: ``COMMIT`` after a normal exit; ``ROLLBACK`` after an exception or a
cancellation (the registry has already aborted the running statement on the server),
shielded and bounded by ``cancel_timeout``. If the rollback cannot be confirmed, the
session is closed, which makes the server roll the transaction back, rather than let
other tasks' statements run inside a transaction that may still be open.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

import anyio

from ._errors import TransactionError
from ._own_statements import ignore_result, session_id_for_log

if TYPE_CHECKING:
    from ._core import SessionCore
    from ._session import AsyncSession

logger = logging.getLogger("asyncsession")

#: The transactions the current task runs inside (at most one per session).
_inside: contextvars.ContextVar[frozenset[Transaction]] = contextvars.ContextVar(
    "asyncsession_transactions", default=frozenset()
)


class TransactionGate:
    """Admits a session's statements: inside its open transaction, or when none is open."""

    def __init__(self) -> None:
        self.owner: Transaction | None = None
        #: Statements in flight outside any transaction.
        self.active = 0
        #: Transactions waiting to begin (statements arriving now wait behind them).
        self.pending = 0
        self._changed: anyio.Event | None = None

    def inside(self) -> bool:
        """Whether the current task runs inside this session's open transaction."""
        return self.owner is not None and self.owner in _inside.get()

    async def _wait_for_change(self) -> None:
        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    def notify(self) -> None:
        """Wake every waiter to look again (the owner, counts or session changed)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def admit(self, check_open: Callable[[], None]) -> bool:
        """Wait until the current task may send a statement; True if counted in ``active``."""
        while True:
            check_open()
            if self.inside():
                return False
            if self.owner is None and self.pending == 0:
                self.active += 1
                return True
            await self._wait_for_change()

    def leave(self, counted: bool) -> None:
        if counted:
            self.active -= 1
            if self.active == 0:
                self.notify()

    async def acquire(self, transaction: Transaction, check_open: Callable[[], None]) -> None:
        self.pending += 1
        try:
            while self.owner is not None or self.active > 0:
                check_open()
                await self._wait_for_change()
            check_open()
            self.owner = transaction
        finally:
            self.pending -= 1
            if self.owner is not transaction:
                self.notify()  # gave up waiting: statements behind us may go

    def release(self, transaction: Transaction) -> None:
        if self.owner is transaction:
            self.owner = None
            self.notify()


class Transaction:
    """``async with session.transaction():`` — see ``AsyncSession.transaction``."""

    def __init__(self, session: AsyncSession, core: SessionCore) -> None:
        self._session = session
        self._core = core
        self._token: contextvars.Token[frozenset[Transaction]] | None = None
        self._used = False

    def __repr__(self) -> str:
        state = "open" if self._token is not None else ("ended" if self._used else "new")
        return f"<Transaction {state} session={self._session!r}>"

    async def __aenter__(self) -> Transaction:
        core = self._core
        gate = core.gate
        if self._used:
            raise TransactionError("a Transaction object can be entered only once")
        if gate.inside():
            raise TransactionError(
                "a transaction is already open in this task: Snowflake has no nested "
                "transactions (no savepoints); run the statements in the open one"
            )
        core.check_open("begin a transaction")
        self._used = True
        await gate.acquire(self, lambda: core.check_open("begin a transaction"))
        try:
            _check_can_begin(core)
            self._token = _inside.set(_inside.get() | {self})
            await core.runner.run("begin", None, ignore_result, operation="begin a transaction")
        except BaseException:
            await self._end_after_failure()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            await self._end_after_failure()
            return
        try:
            await self._core.runner.run(
                "commit", None, ignore_result, operation="commit a transaction"
            )
        except BaseException:
            await self._end_after_failure()
            raise
        self._end()

    async def _end_after_failure(self) -> None:
        """Roll back (shielded, bounded); if that cannot be confirmed, close the session."""
        session = self._session
        try:
            if self._token is not None and not session.is_closed:
                with anyio.CancelScope(shield=True):
                    if not await self._core.rollback():
                        logger.warning(
                            "closing session %s: its transaction could not be rolled back "
                            "(the server rolls back a closed session's transaction)",
                            session_id_for_log(session),
                        )
                        await session.aclose()
        finally:
            self._end()

    def _end(self) -> None:
        if self._token is not None:
            _inside.reset(self._token)
            self._token = None
        self._core.gate.release(self)


def _check_can_begin(core: SessionCore) -> None:
    if core.state.in_transaction:
        raise TransactionError(
            "a transaction is already open on this session (a BEGIN sent with session.sql(), "
            "or a statement run with AUTOCOMMIT off): commit or roll it back first"
        )
    jobs = [q for q in core.registry.snapshot() if q.job]
    if jobs:
        raise TransactionError(
            f"cannot begin a transaction while {len(jobs)} collect_nowait() job(s) of this "
            "session may still run (Snowflake does not run async queries and transaction "
            "control in parallel on one session): await their result() or cancel() them first"
        )
