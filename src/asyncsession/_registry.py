"""The running-query registry, and the one place that owns cancellation.

Every query a session runs is a ``RunningQuery`` here from submission until it ends.
When its awaiting task is cancelled, or ``cancel()`` / ``cancel_all()`` / ``aclose()``
asks, the rule is always the same: **abort on the server, drain, re-raise** — shielded
from the caller's cancellation, and bounded by ``cancel_timeout``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
from snowflake.connector.errors import Error, ProgrammingError

from ._driver import Driver
from ._errors import CANCELED_ERRNO, QueryCancelledError, SessionExpiredError, is_session_gone
from ._threads import WorkerCall

logger = logging.getLogger("asyncsession")

T = TypeVar("T")


@dataclass(eq=False)
class RunningQuery:
    """A query in flight. ``query_id`` is ``None`` until the server has told it."""

    sql_text: str
    request_id: str | None = None
    query_id: str | None = None
    started_at: float = field(default_factory=time.time)
    #: Why we aborted it, once we have: "cancelled", "job.cancel()", "cancel_all()", "aclose()".
    cancel_reason: str | None = field(default=None, repr=False)
    request_id_known: threading.Event = field(default_factory=threading.Event, repr=False)
    call: WorkerCall[Any] | None = field(default=None, repr=False)
    #: Cancelled to release the awaiter when an abort cannot be confirmed in time.
    release: anyio.CancelScope | None = field(default=None, repr=False)
    #: Submitted without waiting (``collect_nowait``): no request id of ours; the query
    #: id comes back when ``call`` returns, so an abort waits for the call, then uses it.
    submitting: bool = field(default=False, repr=False)
    #: Set when the first aborter's request has had its answer: a later aborter (an
    #: ``aclose()`` after a ``job.cancel()``) waits for it before logging out.
    abort_answered: anyio.Event | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.query_id or f"(request {self.request_id})"


class QueryRegistry:
    def __init__(
        self,
        *,
        driver: Driver,
        connection: Callable[[], Any],
        control_limiter: anyio.CapacityLimiter,
        cancel_timeout: float,
        on_session_gone: Callable[[Error], None] = lambda error: None,
    ) -> None:
        self._driver = driver
        #: Told when the server says the session is dead (then SessionExpiredError is raised).
        self.on_session_gone = on_session_gone
        self._connection = connection
        self._control = control_limiter
        self.cancel_timeout = cancel_timeout
        self._running: dict[int, RunningQuery] = {}

    # ---- bookkeeping -------------------------------------------------------------
    def add(self, sql_text: str, *, query_id: str | None = None) -> RunningQuery:
        query = RunningQuery(sql_text, query_id=query_id)
        self._running[id(query)] = query
        return query

    def track(self, query: RunningQuery) -> None:
        """Track ``query`` (again): a submission goes on as its job, the same object."""
        self._running[id(query)] = query

    def discard(self, query: RunningQuery) -> None:
        self._running.pop(id(query), None)

    def snapshot(self) -> tuple[RunningQuery, ...]:
        return tuple(self._running.values())

    def __len__(self) -> int:
        return len(self._running)

    # ---- running -----------------------------------------------------------------
    async def run(
        self, query: RunningQuery, call: WorkerCall[T], limiter: anyio.CapacityLimiter
    ) -> T:
        """Await ``call`` (which executes ``query``); abort it on the server if we are cancelled."""
        query.call = call
        try:
            with anyio.CancelScope() as query.release:
                return await call.start(limiter)
            # Released: the abort was not confirmed in time; the thread is abandoned.
            raise QueryCancelledError(query.query_id, query.cancel_reason or "released")
        except anyio.get_cancelled_exc_class():
            await self.abort(query, "cancelled")
            raise
        except Error as e:
            if (
                isinstance(e, ProgrammingError)
                and query.cancel_reason is not None
                and e.errno == CANCELED_ERRNO
            ):
                raise QueryCancelledError(query.query_id, query.cancel_reason) from e
            translated = self.translate(e)
            if translated is e:
                raise
            raise translated from e
        finally:
            self.discard(query)

    def translate(self, error: Error) -> Error:
        """The error a query's awaiter sees: ``SessionExpiredError`` for a dead session."""
        if isinstance(error, SessionExpiredError) or not is_session_gone(error):
            return error
        self.on_session_gone(error)
        return SessionExpiredError.from_error(error)

    # ---- cancellation ------------------------------------------------------------
    async def abort(self, query: RunningQuery, reason: str) -> bool:
        """Abort one query on the server and wait for its worker to drain.

        Shielded from the caller's cancellation and bounded by ``cancel_timeout``; returns
        whether the abort was confirmed (False: logged at WARNING).
        """
        return await self.abort_many([query], reason) == 0

    async def abort_many(self, queries: list[RunningQuery], reason: str) -> int:
        """Abort ``queries`` concurrently; return how many could not be confirmed in time.

        A query already being aborted (say, by ``cancel_all()`` when ``aclose()`` comes)
        is not aborted twice, but is waited for all the same.
        """
        if not queries:
            return 0
        unconfirmed: set[int] = {id(q) for q in queries}

        async def abort_one(query: RunningQuery) -> None:
            first = query.cancel_reason is None
            if first:
                query.cancel_reason = reason
                query.abort_answered = anyio.Event()
            if query.call is not None and query.call.skip_if_not_started():
                # It never reached the server: release its awaiter now.
                if query.release is not None:
                    query.release.cancel()
                unconfirmed.discard(id(query))
                return
            try:
                if query.submitting and query.call is not None:
                    # Its id comes back with the submission; every aborter waits for it and
                    # posts the abort (the first one may be too late for an aclose()).
                    await query.call.wait_finished()
                    if query.query_id is not None:
                        await self._post_abort(query)
                elif first:
                    await self._post_abort(query)
                elif query.abort_answered is not None:
                    await query.abort_answered.wait()  # posted by an earlier aborter
                if query.call is not None:
                    await query.call.wait_finished()
                else:
                    # A job (tracked by id, no worker of ours): nothing else will discard it.
                    self.discard(query)
                unconfirmed.discard(id(query))
            except Exception as e:
                logger.warning("aborting query %s failed: %s", query, e)
            finally:
                if first and query.abort_answered is not None:
                    query.abort_answered.set()

        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + self.cancel_timeout):
            async with anyio.create_task_group() as tg:
                for query in queries:
                    tg.start_soon(abort_one, query)
        stuck = [q for q in queries if id(q) in unconfirmed]
        for query in stuck:
            if query.release is not None:
                query.release.cancel()
        if stuck:
            logger.warning(
                "could not confirm within cancel_timeout=%gs that these queries were aborted "
                "(%s): %s",
                self.cancel_timeout,
                reason,
                ", ".join(str(q) for q in stuck),
            )
        return len(stuck)

    async def _post_abort(self, query: RunningQuery) -> None:
        connection = self._connection()
        call = WorkerCall(lambda: self._driver.abort(connection, query))
        await call.start(self._control)
