"""``QueryRunner``: the one seam between query objects and threads, the driver and the server.

``SqlQuery``, ``ResultStream`` and ``AsyncJob`` ask it to run, submit, wait, fetch and
abort; it owns the session's limiters, its registry (``_registry``: cancellation) and its
status poller (``_poller``). A query takes one of two paths:

- **one round trip** (the first ``sync_slots`` queries in flight): a blocking ``execute``
  in a worker thread, whose reply the server holds until the query ends. Cheapest for
  short queries; holds a thread for the whole run; aborted by request id.
- **submitted** (beyond that): ``execute_async`` (one short round trip; the query id comes
  back at once), then waited for by the session's status poller on the event loop, then
  the result fetched in a thread (``GET /queries/{qid}/result``). Holds a thread only for
  those round trips; aborted by query id. On 4.x the status requests and the result
  fetch go on the event loop instead (``_http``, keep-alive connections of the session)
  and only loading the reply into a cursor takes a thread, unless the connector's own
  call is needed (then it is made, in a thread, as before). On 5.x under asyncio the
  submission and the wait for the result are the connector core's own awaitables
  (``_native``), which hold no thread at all; a worker only loads the reply into a cursor.

So a session holds at most ``sync_slots + io_threads`` worker threads for its queries
however many are in flight (plus control threads while aborting or logging out).

Over 600 lines for one concern, how a session's queries run: the paths share their
rules (admission, the transaction gate, the turnstile, a pool lease's retry, abort on
cancellation through the registry), and each path's transport is elsewhere: the 5.x
core's calls in ``_native``, 4.x's loop-side requests in ``_loop_rest``, status pacing in
``_poller``, threads in ``_threads``. The next piece to move out is the jobs' part
(``submit_job`` .. ``fetch``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio
from snowflake.connector.errors import Error

from ._driver import Connector4, Driver
from ._errors import QueryCancelledError, SessionClosedError, TransactionError
from ._loop_rest import LoopRest
from ._native import NativeCall, NativeCore, asyncio_running
from ._poller import DEFAULT_POLL_RATE, StatusPoller, Wake
from ._registry import QueryRegistry, RunningQueries, RunningQuery
from ._state import SessionState, classify
from ._threads import WorkerCall, run_blocking
from ._transaction import TransactionGate
from ._turnstile import Pass, Turnstile

if TYPE_CHECKING:
    from ._http import LoopHttp, Reply
    from ._statement_options import StatementOptions

T = TypeVar("T")


class RefusedHandler(Protocol):
    """Decides whether a failed statement may run again (a pool lease's first statement)."""

    async def retry(self, connection: Any, error: Exception) -> bool: ...

    def answered(self, connection: Any) -> None: ...


#: Queries in flight per session that take the one-round-trip path (threads held while
#: they run); more are submitted with ``asyncExec``.
DEFAULT_SYNC_SLOTS = 4
#: Worker threads per session for submissions, status requests, result fetches and
#: stream batches.
DEFAULT_IO_THREADS = 12
#: Threads for control calls (aborts, logout): never queued behind running queries.
CONTROL_THREADS = 32
#: On 5.x under asyncio, submitted queries, their results and status requests go through
#: the connector's native core (``_native``) and hold no thread while they wait.
DEFAULT_NATIVE = True
#: On 4.x, submitted queries' status requests and result fetches are sent on the event
#: loop (``_http``: no thread held while they are out), unless the connector's own call
#: is needed (a proxy, OCSP, a token to renew, ...: then it is made, in a thread).
DEFAULT_LOOP_HTTP = True


class QueryRunner:
    """Runs a session's queries; see the module docstring for the two paths."""

    def __init__(
        self,
        *,
        connection: Callable[[], Any],
        driver: Driver,
        cancel_timeout: float,
        max_concurrent_queries: int,
        check_open: Callable[[str], None] | None = None,
        gate: TransactionGate | None = None,
        state: SessionState | None = None,
        on_session_gone: Callable[[Error], None] = lambda error: None,
        refused: RefusedHandler | None = None,
        sync_slots: int | None = None,
        io_threads: int | None = None,
        poll_rate: float = DEFAULT_POLL_RATE,
        native: bool | None = None,
        loop_http: bool | None = None,
    ) -> None:
        self._connection = connection
        self.driver = driver
        self._check_open = check_open
        #: A pool lease's say on a statement that failed (``_lease.LeaseGuard``): whether
        #: the session was gone before it ran, so it runs again on a connection swapped in.
        self._refused = refused
        #: The session's transaction gate and statement-effect tracker (``_transaction``,
        #: ``_state``): every statement passes them, whatever path it takes.
        self.gate = gate if gate is not None else TransactionGate()
        self.state = state if state is not None else SessionState()
        self.sync_slots = DEFAULT_SYNC_SLOTS if sync_slots is None else sync_slots
        #: Whether to use the driver's native core where it has one and the loop is asyncio.
        self.native = DEFAULT_NATIVE if native is None else native
        #: Whether 4.x's status requests and result fetches go on the loop (``_http``).
        self.loop_http = DEFAULT_LOOP_HTTP if loop_http is None else loop_http
        self._loop_rest = LoopRest(driver) if isinstance(driver, Connector4) else None
        self._sync_in_flight = 0
        self._admission = anyio.CapacityLimiter(max_concurrent_queries)
        self._sync_threads = anyio.CapacityLimiter(max(1, self.sync_slots))
        self._io = anyio.CapacityLimiter(DEFAULT_IO_THREADS if io_threads is None else io_threads)
        self._control = anyio.CapacityLimiter(CONTROL_THREADS)
        self.registry = QueryRegistry(
            driver=driver,
            connection=connection,
            control_limiter=self._control,
            cancel_timeout=cancel_timeout,
            on_session_gone=on_session_gone,
        )
        self.poller = StatusPoller(self._status, rate=poll_rate)
        #: Spreads a fan-out's first steps over loop turns (see ``_turnstile``). Its
        #: backlog is left at the admission limit: bounded tighter (2 x I/O threads),
        #: a 1,000-query fan-out took 25-50 % longer on both backends and sent 2.3x the
        #: status requests (its polls were no longer spaced out behind the submissions),
        #: for no measurable gain in loop lag.
        self.turnstile = Turnstile(backlog=max_concurrent_queries)
        self.closed = False

    @property
    def max_concurrent_queries(self) -> int:
        return int(self._admission.total_tokens)

    @property
    def running(self) -> RunningQueries:
        return self.registry.snapshot()

    def native_core(self) -> NativeCore | None:
        """The 5.x core's awaitable calls, if this session uses them on this event loop."""
        core = self.driver.native if self.native else None
        return core if core is not None and asyncio_running() else None

    def loop_rest(self) -> LoopRest | None:
        """4.x's requests on the loop (``_loop_rest``), if this session sends them there."""
        rest = self._loop_rest
        return rest if self.loop_http and rest is not None and rest.available() else None

    @property
    def http(self) -> LoopHttp | None:
        """The session's keep-alive connections for them, once made."""
        return None if self._loop_rest is None else self._loop_rest.http

    async def close_http(self) -> None:
        """Close the loop's connections (the session is closing); later requests use
        the connector's calls."""
        if self._loop_rest is not None:
            await self._loop_rest.aclose()

    def check_open(self, operation: str) -> None:
        """SessionClosedError (or the session's SessionExpiredError) for ``operation``."""
        if self._check_open is not None:
            self._check_open(operation)
        elif self.closed:
            raise SessionClosedError(operation)

    # ---- running queries -------------------------------------------------------------
    async def run(
        self,
        sql_text: str,
        params: Sequence[Any] | None,
        consume: Callable[[Any], T],
        *,
        operation: str = "run a query",
        keep_cursor: bool = False,
        options: StatementOptions | None = None,
        gated: bool = True,
    ) -> T:
        """Run a statement and ``consume(cursor)`` in a worker thread; abortable throughout.

        With ``keep_cursor`` the cursor stays open for the caller (streaming) unless it
        fails. ``options`` (per-statement parameters) go with it on either path.
        ``gated``: wait while another task's transaction is open (see ``_transaction``).
        """
        self.check_open(operation)
        effect = classify(sql_text)
        counted = await self.gate.admit(lambda: self.check_open(operation)) if gated else False
        passed: Pass | None = None
        try:
            # After the gate: a transaction's own statements must never wait behind a
            # backlog of queries that wait for that transaction to end.
            passed = await self._through_turnstile()
            statement_params = options.parameters() if options is not None else None
            while True:  # once more only if a pool lease swapped in a fresh connection
                connection = self._connection()
                self.state.started(effect)
                succeeded = retry = False
                try:
                    result = await self._admitted(
                        sql_text,
                        params,
                        consume,
                        operation,
                        keep_cursor,
                        statement_params,
                        effect,
                        passed,
                    )
                    succeeded = True
                except Exception as e:
                    if self._refused is None or not await self._refused.retry(connection, e):
                        raise
                    retry = True
                finally:
                    self.state.finished(effect, succeeded)
                    if self._refused is not None and not retry:
                        self._refused.answered(connection)  # it may have run: no retry after
                if not retry:
                    return result
        finally:
            if passed is not None:
                passed.settle()
            self.gate.leave(counted)

    async def _through_turnstile(self) -> Pass:
        passed = await self.turnstile.enter()
        if passed.refused is not None:  # a cancel_all()/aclose() came while it waited
            raise QueryCancelledError(None, passed.refused)
        return passed

    async def _admitted(
        self,
        sql_text: str,
        params: Sequence[Any] | None,
        consume: Callable[[Any], T],
        operation: str,
        keep_cursor: bool,
        statement_params: dict[str, Any] | None,
        effect: Any,
        passed: Pass,
    ) -> T:
        async with self._admission:
            self.check_open(operation)
            # Async queries and transaction control must not run in parallel on one
            # session: in (or around) a transaction every statement takes one round trip.
            transactional = (
                self.state.in_transaction or self.gate.inside() or effect.transaction is not None
            )
            if transactional or self._sync_in_flight < self.sync_slots:
                passed.settle()
                self._sync_in_flight += 1
                try:
                    return await self._run_one_round_trip(
                        sql_text, params, consume, keep_cursor, statement_params
                    )
                finally:
                    self._sync_in_flight -= 1
            core = self.native_core()
            try:
                query = await self._submit(sql_text, params, statement_params, core)
            finally:
                passed.settle()
            try:
                if core is not None:
                    return await self._await_native(query, core, consume, keep_cursor, operation)
                return await self._wait_and_fetch(query, consume, keep_cursor, operation)
            finally:
                self.registry.discard(query)

    async def _run_one_round_trip(
        self,
        sql_text: str,
        params: Sequence[Any] | None,
        consume: Callable[[Any], T],
        keep_cursor: bool,
        statement_params: dict[str, Any] | None,
    ) -> T:
        query = self.registry.add(sql_text)
        driver, connection = self.driver, self._connection()
        driver.prepare(query)

        def work() -> T:
            return _on_cursor(
                connection,
                lambda cursor: driver.execute(cursor, query, params, statement_params),
                consume,
                keep_cursor,
            )

        try:
            return await self.registry.run(query, WorkerCall(work), self._sync_threads)
        finally:
            self.registry.discard(query)

    async def _submit(
        self,
        sql_text: str,
        params: Sequence[Any] | None,
        statement_params: dict[str, Any] | None,
        core: NativeCore | None = None,
    ) -> RunningQuery:
        """Submit with ``asyncExec``; the query is tracked from before the request leaves.

        A cancelled submission, a ``cancel_all()`` or an ``aclose()`` meanwhile aborts it
        once its query id is known (on 4.x by our request id even before). With the 5.x
        native ``core`` the request holds no thread.
        """
        query = self.registry.add(sql_text)
        query.submitting = True
        driver, connection = self.driver, self._connection()
        driver.prepare(query)

        def work() -> str:
            cursor = connection.cursor()
            try:
                return driver.submit(cursor, query, params, statement_params)
            finally:
                cursor.close()

        async def submit_natively(core: NativeCore) -> str:
            # In a task of its own: it goes on if the awaiter is cancelled, and the query
            # id it sets is what the abort then uses.
            try:
                if core.needs_preparing(sql_text, params, statement_params):
                    prepared = await run_blocking(
                        lambda: core.prepare(connection, sql_text, params, statement_params),
                        self._io,
                    )
                else:
                    prepared = await core.new_statement(connection, sql_text)
                query.query_id = await core.submit(prepared)
            except Error as e:
                refusal = await run_blocking(
                    functools.partial(driver.session_refusal, connection, e), self._control
                )
                if refusal is None:
                    raise
                raise refusal from e
            return query.query_id

        call = WorkerCall(work) if core is None else NativeCall(lambda: submit_natively(core))
        try:
            await self.registry.run(query, call, self._io)
        except BaseException:
            self.registry.discard(query)
            raise
        query.submitting = False
        query.call = None
        return query

    async def _wait_and_fetch(
        self,
        query: RunningQuery,
        consume: Callable[[Any], T],
        keep_cursor: bool,
        operation: str,
    ) -> T:
        await self.wait(query, operation)
        connection = self._connection()
        query_id = query.query_id
        assert query_id is not None
        reply = await self._fetch_on_loop(query, connection, query_id)

        def fetch() -> T:
            return _on_cursor(
                connection,
                lambda cursor: self._load_result(cursor, query_id, reply),
                consume,
                keep_cursor,
            )

        try:
            return await self.registry.run(query, WorkerCall(fetch), self._io)
        except QueryCancelledError:
            raise
        except Error as e:
            raise self.translate(query, e, operation) from e

    async def _fetch_on_loop(
        self, query: RunningQuery, connection: Any, query_id: str
    ) -> Reply | None:
        """4.x: the result reply fetched on the loop, or ``None`` (a thread fetches it).

        Awaited as ``wait`` awaits the poller: an aborter waits for it to end (the result
        or the 604 then comes, as from a fetch in a thread), a release ends it at once,
        and a cancelled awaiter aborts the query.
        """
        rest = self.loop_rest()
        if rest is None:
            return None
        return await self._as_awaiter(query, lambda: rest.result(connection, query_id))

    def _load_result(self, cursor: Any, query_id: str, reply: Reply | None) -> None:
        """In a worker: a reply fetched on the loop loaded, else the connector's fetch."""
        if self._loop_rest is not None:
            self._loop_rest.load_result(cursor, query_id, reply)
        else:
            self.driver.fetch_result(cursor, query_id)

    async def _await_native(
        self,
        query: RunningQuery,
        core: NativeCore,
        consume: Callable[[Any], T],
        keep_cursor: bool,
        operation: str,
    ) -> T:
        """Await a submitted query's result through the 5.x core (no thread held), then
        load it into a cursor and ``consume`` it in a worker; abort it if cancelled."""
        connection, query_id = self._connection(), query.query_id
        assert query_id is not None
        try:
            reply = await self._as_awaiter(
                query, lambda: self._native_reply(query, core, connection, query_id)
            )
        except QueryCancelledError:
            raise
        except Error as e:
            raise self.translate(query, e, operation) from e

        def load() -> T:
            return _on_cursor(
                connection, lambda cursor: core.load_result(cursor, reply), consume, keep_cursor
            )

        try:
            return await self.registry.run(query, WorkerCall(load), self._io)
        except QueryCancelledError:
            raise
        except Error as e:
            raise self.translate(query, e, operation) from e

    @staticmethod
    async def _native_reply(
        query: RunningQuery, core: NativeCore, connection: Any, query_id: str
    ) -> Any:
        while True:
            wake = query.wake = Wake()
            reply: Any = None
            try:
                with wake.watch():
                    reply = await core.result(connection, query_id)
            finally:
                wake.unwatch()
            if reply is not None:
                return reply
            if query.cancel_reason is not None:
                # Woken by an aborter once its abort was answered (as the poller's waiters
                # are): no need to wait for the core to report the 604.
                raise QueryCancelledError(query_id, query.cancel_reason)

    async def wait(self, query: RunningQuery, operation: str) -> str:
        """Wait (no thread held) until a submitted query ends; abort it if cancelled."""
        try:
            return await self._as_awaiter(query, lambda: self.poller.wait(query))
        except QueryCancelledError:
            raise
        except Error as e:
            raise self.translate(query, e, operation) from e

    async def _as_awaiter(self, query: RunningQuery, wait: Callable[[], Awaitable[T]]) -> T:
        """Await ``wait()`` as the query's awaiter (no thread held): an aborter waits for
        it to end, a release (an abort not confirmed in time) ends it with
        ``QueryCancelledError``, and a cancelled awaiter aborts the query, then re-raises."""
        query.awaited = True
        try:
            with anyio.CancelScope() as query.release:
                return await wait()
            raise QueryCancelledError(query.query_id, query.cancel_reason or "released")
        except anyio.get_cancelled_exc_class():
            await self.registry.abort(query, "cancelled", by_awaiter=True)
            raise
        finally:
            query.awaited = False

    def translate(self, query: RunningQuery, error: Error, operation: str) -> Exception:
        """Our error for a query aborted by us, or whose session was closed under it."""
        reason = self.registry.cancelled_by_us(query, error)
        if reason is None and self.closed:
            reason = query.cancel_reason
        if reason is not None:
            return QueryCancelledError(query.query_id, reason)
        if self.closed:
            return SessionClosedError(operation)
        return self.registry.translate(error)

    # ---- jobs -----------------------------------------------------------------------
    async def submit_job(
        self,
        sql_text: str,
        params: Sequence[Any] | None,
        options: StatementOptions | None = None,
    ) -> RunningQuery:
        """Submit without waiting; the returned query stays tracked until it is seen ended."""
        self.check_open("submit a query")
        if self.gate.inside():
            raise TransactionError(
                "collect_nowait() cannot run inside a transaction: Snowflake does not run async "
                "queries and transaction control in parallel on one session; await the query "
                "(collect(), …) instead"
            )
        counted = await self.gate.admit(lambda: self.check_open("submit a query"))
        passed: Pass | None = None
        try:
            passed = await self._through_turnstile()
            effect = classify(sql_text)
            statement_params = options.parameters() if options is not None else None
            # What the statement may change counts from its submission on (a job's end is
            # not tracked, so a BEGIN submitted this way counts as open).
            self.state.started(effect)
            self.state.finished(effect, False)
            query = await self._submit_refusable(sql_text, params, statement_params)
            query.job = True
        finally:
            if passed is not None:
                passed.settle()
            self.gate.leave(counted)
        if query.cancel_reason is not None:  # aborted by cancel_all()/aclose() meanwhile
            self.registry.discard(query)  # nobody gets the job: its aborter confirms the end
            raise QueryCancelledError(query.query_id, query.cancel_reason)
        return query

    async def _submit_refusable(
        self,
        sql_text: str,
        params: Sequence[Any] | None,
        statement_params: dict[str, Any] | None,
    ) -> RunningQuery:
        """``_submit``, once more on a fresh connection if a pool lease swapped one in.

        The rule of ``run``: only a submission the server refused because the session was
        gone before anything of the lease was answered on it (it never ran). A submission
        that returned a query id counts as answered: the job may run.
        """
        while True:
            # Closed while this waited for its turn (or for a fresh connection): an
            # aclose() aborts only what was tracked when it began.
            self.check_open("submit a query")
            connection = self._connection()
            retry = False
            try:
                return await self._submit(sql_text, params, statement_params)
            except Exception as e:
                if self._refused is None or not await self._refused.retry(connection, e):
                    raise
                retry = True
            finally:
                if self._refused is not None and not retry:
                    self._refused.answered(connection)

    def track_job(self, query_id: str) -> RunningQuery:
        """Track a query submitted elsewhere, by its id."""
        query = self.registry.add(f"<query {query_id}>", query_id=query_id)
        query.job = True
        return query

    async def status(self, query: RunningQuery) -> tuple[str, bool]:
        """One status request (in the poller's pace); an ended query leaves the registry."""
        assert query.query_id is not None
        name, running = await self.poller.status(query.query_id)
        if not running:
            self.registry.discard(query)
        return name, running

    async def fetch(self, query_id: str, consume: Callable[[Any], T]) -> T:
        """Fetch an ended query's result into a cursor and ``consume`` it, in a thread."""
        connection, core = self._connection(), self.native_core()
        reply: Any = None
        if core is not None:  # the request holds no thread
            reply = await core.result(connection, query_id)
        else:  # on 4.x, nor does it on the loop (None: the connector's call in the thread)
            rest = self.loop_rest()
            reply = None if rest is None else await rest.result(connection, query_id)

        def fetch() -> T:
            cursor = connection.cursor()
            try:
                if core is None:
                    self._load_result(cursor, query_id, reply)
                else:
                    core.load_result(cursor, reply)
                return consume(cursor)
            finally:
                cursor.close()

        return await run_blocking(fetch, self._io)

    # ---- other calls ----------------------------------------------------------------
    async def _status(self, query_id: str) -> tuple[str, bool]:
        connection, core = self._connection(), self.native_core()
        if core is None:
            rest = self.loop_rest()
            seen = None if rest is None else await rest.status(connection, query_id)
            if seen is not None:
                return seen
            return await run_blocking(
                lambda: self.driver.query_status(connection, query_id), self._io
            )
        try:
            return await core.status(connection, query_id)
        except Error as e:
            refusal = await run_blocking(
                functools.partial(self.driver.session_refusal, connection, e), self._control
            )
            if refusal is None:
                raise
            raise refusal from e

    async def in_thread(self, fn: Callable[[], T]) -> T:
        """A short blocking call that is not a query (fetching a stream's next batch)."""
        return await run_blocking(fn, self._io)

    async def control(self, fn: Callable[[], T]) -> T:
        """A control call (closing a cursor, an abort): never queued behind queries."""
        return await run_blocking(fn, self._control)

    async def logout(self, fn: Callable[[], T]) -> T:
        """The session's logout: a thread of its own at once, never queued behind aborts
        (given up on while waiting for a control slot, it would never be sent)."""
        return await run_blocking(fn, anyio.CapacityLimiter(1))

    async def abort(self, query: RunningQuery, reason: str) -> bool:
        return await self.registry.abort(query, reason)

    async def abort_all(self, reason: str) -> int:
        # Those of a fan-out still waiting their turn would have been in the registry
        # had they started in one turn: they end as the registry's do, not start after.
        self.turnstile.turn_away(reason)
        return await self.registry.abort_all(reason)


def _on_cursor(
    connection: Any, load: Callable[[Any], object], consume: Callable[[Any], T], keep: bool
) -> T:
    """In a worker: a new cursor, ``load`` a result into it, ``consume`` it; closed unless
    ``keep`` (a stream goes on reading it), and always on failure."""
    cursor = connection.cursor()
    try:
        load(cursor)
        result = consume(cursor)
    except BaseException:
        cursor.close()
        raise
    if not keep:
        cursor.close()
    return result
