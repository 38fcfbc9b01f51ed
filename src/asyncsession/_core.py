"""``SessionCore``: the part of an ``AsyncSession`` that the objects acting for it share.

Queries, streams and jobs (``_query``, ``_job``) are handed the core's ``runner`` when
the session makes them; a ``Transaction`` is handed the core. A pool reaches a session's
core through ``core_of(session)`` (``_session``): a lease swaps the live connection,
installs its guard, checks health and resets the session on return. Nothing outside
``_session`` reads ``AsyncSession``'s private attributes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio

from ._driver import Driver
from ._errors import SessionClosedError, SessionExpiredError, _ConnectorError
from ._executor import QueryRunner
from ._own_statements import ignore_result, session_id_for_log
from ._registry import QueryRegistry
from ._state import SessionState
from ._transaction import TransactionGate

if TYPE_CHECKING:
    from ._lease import LeaseGuard

logger = logging.getLogger("asyncsession")


class SessionCore:
    """A session's runner, live connection, transaction bookkeeping and lease guard."""

    def __init__(
        self,
        connection: Any,
        *,
        driver: Driver,
        cancel_timeout: float,
        max_concurrent_queries: int,
        autocommit: bool,
    ) -> None:
        #: The live connection; a pool lease may swap in a fresh one (``_lease``).
        self.connection = connection
        #: The server's answer that the session is dead, once it has said so.
        self.gone: _ConnectorError | None = None
        #: Set by a ``SessionPool`` lease: retries a first statement refused by a dead session.
        self.lease: LeaseGuard | None = None
        #: What statements changed (for a pool) and whether a transaction is open.
        self.state = SessionState(autocommit=autocommit)
        self.gate = TransactionGate()
        #: The seam between query objects and threads/driver/server (``_executor``).
        self.runner = QueryRunner(
            connection=lambda: self.connection,
            driver=driver,
            cancel_timeout=cancel_timeout,
            max_concurrent_queries=max_concurrent_queries,
            check_open=self.check_open,
            gate=self.gate,
            state=self.state,
            on_session_gone=self._session_gone,
            refused=_LeaseRefusals(self),
        )

    @property
    def session_id(self) -> int:
        return int(self.connection.session_id)

    @property
    def registry(self) -> QueryRegistry:
        return self.runner.registry

    def check_open(self, operation: str) -> None:
        """SessionClosedError once closed; SessionExpiredError once the server said gone."""
        if self.runner.closed:
            raise SessionClosedError(operation)
        if self.gone is not None:
            raise SessionExpiredError.from_error(self.gone)

    def _session_gone(self, error: _ConnectorError) -> None:
        """The registry heard the server say the session is dead (``SessionExpiredError``)."""
        if self.gone is None:
            logger.warning("session %s is gone: %s", session_id_for_log(self.connection), error)
            self.gone = error

    async def scalar(self, sql_text: str, operation: str) -> Any:
        """The first column of the first row (``None`` for no row)."""
        row = await self.runner.run(sql_text, None, lambda c: c.fetchone(), operation=operation)
        return None if row is None else row[0]

    async def rollback(self) -> bool:
        """ROLLBACK, shielded and bounded by ``cancel_timeout``; True once confirmed.

        For a pool returning a session (and ``transaction()``'s exit): it does not wait
        for the transaction gate, as its caller owns the session or the transaction.
        """
        cancel_timeout = self.registry.cancel_timeout
        confirmed = False
        with anyio.CancelScope(shield=True), anyio.move_on_after(cancel_timeout) as scope:
            try:
                await self.runner.run(
                    "rollback", None, ignore_result, operation="roll back", gated=False
                )
                confirmed = True
            except Exception as e:
                logger.warning("rollback in session %s failed: %s", session_id_for_log(self), e)
        if scope.cancelled_caught:
            logger.warning(
                "rollback in session %s did not finish within cancel_timeout=%gs",
                session_id_for_log(self),
                cancel_timeout,
            )
        return confirmed


class _LeaseRefusals:
    """The executor's question "run a refused statement again?", answered by the lease."""

    def __init__(self, core: SessionCore) -> None:
        self._core = core

    async def retry(self, connection: Any, error: Exception) -> bool:
        lease = self._core.lease
        return lease is not None and await lease.retry_refused(self._core, connection, error)

    def answered(self, connection: Any) -> None:
        if (lease := self._core.lease) is not None:
            lease.answered(connection)
