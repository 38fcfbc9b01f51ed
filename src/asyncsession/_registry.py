"""The running-query registry, and the one place that owns cancellation.

Every query a session runs is a ``RunningQuery`` here from submission until it ends.
When its awaiting task is cancelled, or ``cancel()`` / ``cancel_all()`` / ``aclose()``
asks, the rule is always the same: **abort on the server, drain, re-raise** — shielded
from the caller's cancellation, and bounded by ``cancel_timeout``.

A query is aborted by query id once the server has told it (async submissions and jobs:
at once), else by request id (a one-round-trip query still in flight). ``cancel_all()``
and ``aclose()`` with several queries out first send one
``SYSTEM$CANCEL_ALL_QUERIES(<session>)``, then confirm each query: a worker that drains
within a short grace, or a status that says it ended; only what is not confirmed gets an
abort of its own. A query that starts while that request is out may be stopped by it
too: its 604 reaches its awaiter as ``QueryCancelledError`` with the same reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import anyio
from snowflake.connector.errors import Error, ProgrammingError

from ._driver import Driver
from ._errors import CANCELED_ERRNO, QueryCancelledError, SessionExpiredError, is_session_gone
from ._native import NativeCall
from ._threads import DRAIN_POLL_SECONDS, WorkerCall

logger = logging.getLogger("asyncsession")

T = TypeVar("T")

#: ``cancel_all()`` / ``aclose()`` send one SYSTEM$CANCEL_ALL_QUERIES from this many queries.
BULK_ABORT_MIN = 2
#: After it, a one-round-trip query's worker gets this long (plus twice the bulk call's
#: own round trip) to drain with its 604 before it gets an abort of its own.
BULK_GRACE_SECONDS = 0.05


class Waker(Protocol):
    """What an aborter sets to make a query's waiter look at once (``_poller.Wake``)."""

    def set(self) -> None: ...


@dataclass(eq=False)
class RunningQuery:
    """A query in flight. ``query_id`` is ``None`` until the server has told it."""

    sql_text: str
    request_id: str | None = None
    query_id: str | None = None
    started_at: float = field(default_factory=time.time)
    #: Why we aborted it, once we have: "cancelled", "job.cancel()", "cancel_all()", "aclose()".
    cancel_reason: str | None = field(default=None, repr=False)
    #: Why a SYSTEM$CANCEL_ALL_QUERIES went out while it was in flight, if one did: it may
    #: have stopped this query too (one that started after the snapshot being aborted).
    bulk_reason: str | None = field(default=None, repr=False)
    request_id_known: threading.Event = field(default_factory=threading.Event, repr=False)
    #: The worker call in flight for it now (the execute, the submission, a status or
    #: result fetch), if any: an abort waits for it to drain.
    call: WorkerCall[Any] | NativeCall[Any] | None = field(default=None, repr=False)
    #: Cancelled to release the awaiter when an abort cannot be confirmed in time.
    release: anyio.CancelScope | None = field(default=None, repr=False)
    #: Being submitted (``asyncExec``): the query id comes back when ``call`` returns, so
    #: an abort waits for the call, then uses it (on 4.x the request id works before).
    submitting: bool = field(default=False, repr=False)
    #: A task awaits its end through the executor's poller: an aborter (other than that
    #: task) waits until it is done, and sets ``wake`` so it looks at once.
    awaited: bool = field(default=False, repr=False)
    #: A ``collect_nowait()`` / ``create_async_job()`` job: nothing of ours waits on it
    #: unless ``job.result()`` does (``_transaction`` refuses to begin while one may run).
    job: bool = field(default=False, repr=False)
    wake: Waker | None = field(default=None, repr=False)
    #: Set when the first aborter's request has had its answer: a later aborter (an
    #: ``aclose()`` after a ``job.cancel()``) waits for it before logging out.
    abort_answered: anyio.Event | None = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.query_id or f"(request {self.request_id})"


class RunningQueries(tuple[RunningQuery, ...]):
    """A snapshot of a session's queries in flight, a tuple of ``RunningQuery``.

    ``query_id in running`` answers for every query whose id the server has told;
    ``without_id`` lists those that have none yet (a one-round-trip query in flight).
    """

    __slots__ = ()

    def __contains__(self, item: object) -> bool:
        if isinstance(item, str):
            return any(q.query_id == item for q in self)
        return any(q is item for q in self)

    @property
    def query_ids(self) -> frozenset[str]:
        return frozenset(q.query_id for q in self if q.query_id is not None)

    @property
    def without_id(self) -> tuple[RunningQuery, ...]:
        return tuple(q for q in self if q.query_id is None)

    def get(self, query_id: str) -> RunningQuery | None:
        return next((q for q in self if q.query_id == query_id), None)

    def __repr__(self) -> str:
        return f"RunningQueries({', '.join(str(q) for q in self)})"


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
        #: The SYSTEM$CANCEL_ALL_QUERIES calls sent (or abandoned) and not yet returned.
        self._bulk_calls: list[tuple[str, WorkerCall[None]]] = []

    # ---- bookkeeping -------------------------------------------------------------
    def add(self, sql_text: str, *, query_id: str | None = None) -> RunningQuery:
        query = RunningQuery(sql_text, query_id=query_id)
        self.track(query)
        return query

    def track(self, query: RunningQuery) -> None:
        """Track ``query`` (again): a submission goes on as its job, the same object."""
        if query.bulk_reason is None:
            query.bulk_reason = self._bulk_cancel_out()
        self._running[id(query)] = query

    def _bulk_cancel_out(self) -> str | None:
        """The reason of a SYSTEM$CANCEL_ALL_QUERIES still out, if one is."""
        self._bulk_calls = [(r, c) for r, c in self._bulk_calls if not c.is_finished]
        return self._bulk_calls[-1][0] if self._bulk_calls else None

    def discard(self, query: RunningQuery) -> None:
        self._running.pop(id(query), None)

    def is_tracked(self, query: RunningQuery) -> bool:
        return id(query) in self._running

    def snapshot(self) -> RunningQueries:
        return RunningQueries(self._running.values())

    def __len__(self) -> int:
        return len(self._running)

    # ---- running -----------------------------------------------------------------
    async def run(
        self,
        query: RunningQuery,
        call: WorkerCall[T] | NativeCall[T],
        limiter: anyio.CapacityLimiter,
    ) -> T:
        """Await ``call`` (which executes ``query``); abort it on the server if we are cancelled.

        The caller discards ``query`` when it is done with it.
        """
        query.call = call
        try:
            with anyio.CancelScope() as query.release:
                return await call.start(limiter)
            # Released: the abort was not confirmed in time; the thread is abandoned.
            raise QueryCancelledError(query.query_id, query.cancel_reason or "released")
        except anyio.get_cancelled_exc_class():
            await self.abort(query, "cancelled", by_awaiter=True)
            raise
        except Error as e:
            if isinstance(e, ProgrammingError):
                self.raise_if_cancelled(query, e)
            translated = self.translate(e)
            if translated is e:
                raise
            raise translated from e

    def raise_if_cancelled(self, query: RunningQuery, error: ProgrammingError) -> None:
        """Our QueryCancelledError for a 604 that one of our aborts caused."""
        reason = self.cancelled_by_us(query, error)
        if reason is not None:
            raise QueryCancelledError(query.query_id, reason) from error

    @staticmethod
    def cancelled_by_us(query: RunningQuery, error: Error) -> str | None:
        """Why, if ``error`` is a 604 that one of our aborts may have caused.

        Ours if we aborted the query, or if a SYSTEM$CANCEL_ALL_QUERIES of its session
        went out while it was in flight (not aborted by us otherwise, it was stopped all
        the same).
        """
        if error.errno != CANCELED_ERRNO:
            return None
        return query.cancel_reason or query.bulk_reason

    def translate(self, error: Error) -> Error:
        """The error a query's awaiter sees: ``SessionExpiredError`` for a dead session."""
        if isinstance(error, SessionExpiredError) or not is_session_gone(error):
            return error
        self.on_session_gone(error)
        return SessionExpiredError.from_error(error)

    # ---- cancellation ------------------------------------------------------------
    async def abort(self, query: RunningQuery, reason: str, *, by_awaiter: bool = False) -> bool:
        """Abort one query on the server and wait for its worker to drain.

        Shielded from the caller's cancellation and bounded by ``cancel_timeout``; returns
        whether the abort was confirmed (False: logged at WARNING). ``by_awaiter``: the
        caller is the task awaiting the query (so it does not wait for itself).
        """
        return await self.abort_many([query], reason, by_awaiter=by_awaiter) == 0

    async def abort_all(self, reason: str) -> int:
        """Abort everything the session runs (``cancel_all()``, ``aclose()``)."""
        queries = list(self._running.values())
        return await self.abort_many(queries, reason, bulk=len(queries) >= BULK_ABORT_MIN)

    async def abort_many(
        self,
        queries: Iterable[RunningQuery],
        reason: str,
        *,
        bulk: bool = False,
        by_awaiter: bool = False,
    ) -> int:
        """Abort ``queries`` concurrently; return how many could not be confirmed in time.

        A query already being aborted (say, by ``cancel_all()`` when ``aclose()`` comes)
        is not aborted twice, but is waited for all the same. With ``bulk``, one
        SYSTEM$CANCEL_ALL_QUERIES goes first and each query is then only confirmed.
        """
        queries = list(queries)
        if not queries:
            return 0
        unconfirmed: set[int] = {id(q) for q in queries}
        grace: float | None = None
        # Marked before any request leaves: a 604 that reaches an awaiter is then ours.
        firsts = {id(q) for q in queries if q.cancel_reason is None}
        for query in queries:
            if id(query) in firsts:
                query.cancel_reason = reason
                query.abort_answered = anyio.Event()

        async def abort_one(query: RunningQuery) -> None:
            first = id(query) in firsts
            call = query.call
            if call is not None and call.skip_if_not_started():
                # It never reached the server: release its awaiter now.
                if query.release is not None:
                    query.release.cancel()
                if query.wake is not None:
                    query.wake.set()
                unconfirmed.discard(id(query))
                return
            try:
                if query.submitting and call is not None:
                    # Its id comes back with the submission; every aborter waits for it and
                    # posts the abort (the first one may be too late for an aclose()).
                    await call.wait_finished()
                    if query.query_id is not None:
                        await self._post_abort(query)
                elif first:
                    if grace is None or not await self._confirmed_by_bulk(query, grace):
                        await self._post_abort(query)
                elif query.abort_answered is not None:
                    await query.abort_answered.wait()  # posted by an earlier aborter
                if first and query.abort_answered is not None:
                    # Answered: tell later aborters now, not after the drain below, which
                    # waits for the query's awaiter, which may be such a later aborter
                    # (cancelled itself) waiting for this answer.
                    query.abort_answered.set()
                if query.wake is not None:
                    query.wake.set()
                await self._drain(query, by_awaiter)
                unconfirmed.discard(id(query))
            except Exception as e:
                logger.warning("aborting query %s failed: %s", query, e)
            finally:
                if first and query.abort_answered is not None:
                    query.abort_answered.set()

        with anyio.CancelScope(shield=True, deadline=anyio.current_time() + self.cancel_timeout):
            # Only for queries nobody is aborting yet (an aclose() after a cancel_all()
            # waits for the first one's aborts instead of sending a second bulk cancel).
            if bulk and len(firsts) >= BULK_ABORT_MIN:
                # Bounded to half the budget: the per-query aborts need the rest if it is lost.
                with anyio.move_on_after(self.cancel_timeout / 2):
                    grace = await self._cancel_session(reason)
            async with anyio.create_task_group() as tg:
                for query in queries:
                    tg.start_soon(abort_one, query)
        for query in queries:
            # Answered or not, later aborters must not wait for this one any longer.
            if id(query) in firsts and query.abort_answered is not None:
                query.abort_answered.set()
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

    async def _drain(self, query: RunningQuery, by_awaiter: bool) -> None:
        """Wait for the query's worker calls to return, and for its awaiter to be done."""
        while True:
            call = query.call
            if call is not None and not call.is_finished:
                await call.wait_finished()
            elif query.awaited and not by_awaiter and self.is_tracked(query):
                await anyio.sleep(DRAIN_POLL_SECONDS)  # its awaiter fetches the 604 next
            else:
                break
        if call is None and (by_awaiter or not query.awaited):
            # Aborted, and no worker or other task of ours will discard it (a job).
            self.discard(query)

    async def _cancel_session(self, reason: str) -> float | None:
        """One SYSTEM$CANCEL_ALL_QUERIES; the grace a drain then gets, or None if it failed."""
        connection = self._connection()
        started = time.monotonic()
        # Every query tracked from before the request leaves until its thread returns (an
        # abandoned call's too) is marked: a 604 it causes reaches it as QueryCancelledError.
        for query in self._running.values():
            if query.bulk_reason is None:
                query.bulk_reason = reason
        call: WorkerCall[None] = WorkerCall(lambda: self._driver.cancel_session(connection))
        self._bulk_calls.append((reason, call))
        try:
            await call.start(self._control)
        except Exception as e:
            logger.debug("SYSTEM$CANCEL_ALL_QUERIES failed (%s): aborting one by one", e)
            return None
        finally:
            call.skip_if_not_started()  # given up on before a thread took it: never sent
        return 2 * (time.monotonic() - started) + BULK_GRACE_SECONDS

    async def _confirmed_by_bulk(self, query: RunningQuery, grace: float) -> bool:
        """After SYSTEM$CANCEL_ALL_QUERIES: did it stop ``query``? (False: abort it alone.)"""
        call = query.call
        if query.query_id is None:
            if call is None:
                return False
            # A one-round-trip query: its worker gets the 604 (or its result) shortly,
            # unless its request reached the server after the bulk cancel.
            with anyio.move_on_after(grace):
                await call.wait_finished()
            return call.is_finished
        query_id, connection = query.query_id, self._connection()
        _, running = await WorkerCall(
            lambda: self._driver.query_status(connection, query_id)
        ).start(self._control)
        return not running

    async def _post_abort(self, query: RunningQuery) -> None:
        connection = self._connection()
        try:
            await WorkerCall(lambda: self._driver.abort(connection, query)).start(self._control)
        except ProgrammingError as e:
            if e.errno != CANCELED_ERRNO:
                raise
            # By query id the abort is a statement of the session itself: a concurrent
            # SYSTEM$CANCEL_ALL_QUERIES (another cancel_all()/aclose()) may stop it, and
            # then, as a query of the same session, most likely the target too: abort
            # again only if the server still runs it (one abort request per query).
            query_id = query.query_id
            if query_id is not None:
                _, running = await WorkerCall(
                    lambda: self._driver.query_status(connection, query_id)
                ).start(self._control)
                if not running:
                    return
            await WorkerCall(lambda: self._driver.abort(connection, query)).start(self._control)
