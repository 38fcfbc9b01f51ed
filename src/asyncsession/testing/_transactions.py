"""Transactions: one per session, on one pinned SQL connection, statements one at a time.

As Snowflake (docs "Transactions", "BEGIN"): ``BEGIN`` opens the session's transaction
(a second ``BEGIN`` while it is open is ignored); ``COMMIT`` / ``ROLLBACK`` end it and
succeed without one; DDL commits it implicitly; a session that logs out or is deleted
rolls it back. While it is open every SQL statement of the session runs on its pinned
DuckDB connection, in arrival order, so its writes are invisible to other sessions until
COMMIT. The statements themselves are entries in ``_statements``.

One difference: DuckDB aborts the whole transaction when one of its statements fails,
where Snowflake rolls back that statement only. A COMMIT after such a failure therefore
rolls back and fails with a message saying so, instead of committing the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from ._context import Emulator
from ._engine import QueryFailed
from ._state import CANCELED, Query, QueryError, Session

T = TypeVar("T")

ABORTED_TRANSACTION = QueryError(
    2,
    "Unsupported by the local emulator: a statement of this transaction failed, and DuckDB "
    "aborts the whole transaction (Snowflake rolls back only the failed statement). "
    "The transaction was rolled back.",
    "0A000",
)


async def on_session_connection(
    emu: Emulator, query: Query | None, session: Session, work: Callable[[bool], T]
) -> T:
    """Run ``work(pinned)`` in a worker thread: on the session's pinned connection, one
    statement at a time, while its transaction is open; on a pooled one otherwise."""
    loop = asyncio.get_running_loop()
    txn = session.transaction
    if txn is None:
        return await loop.run_in_executor(emu.executor, work, False)
    await _acquire(txn.lock, query)
    try:
        pinned = session.transaction is txn  # else COMMIT or DDL ended it while we waited
        return await loop.run_in_executor(emu.executor, work, pinned)
    finally:
        txn.lock.release()
        if session.transaction is txn and session.engine.pinned is None:
            session.transaction = None  # the statement was DDL: it committed


async def begin(emu: Emulator, query: Query, name: str | None) -> None:
    session = query.session
    if session.transaction is not None:
        return  # "If two BEGIN statements in a row are executed, the second one is ignored"
    txn = emu.registry.new_transaction(name)
    session.transaction = txn
    async with txn.lock:
        try:
            await asyncio.get_running_loop().run_in_executor(emu.executor, session.engine.begin)
        except BaseException:
            session.transaction = None
            raise


async def end(emu: Emulator, query: Query | None, session: Session, *, commit: bool) -> None:
    """COMMIT or ROLLBACK the session's transaction, if it has one."""
    txn = session.transaction
    if txn is None:
        return
    await _acquire(txn.lock, query)
    try:
        if session.transaction is not txn:
            return  # ended while we waited
        session.transaction = None
        loop = asyncio.get_running_loop()
        committed = await loop.run_in_executor(emu.executor, session.engine.end, commit)
    finally:
        txn.lock.release()
    if not committed:
        raise QueryFailed(ABORTED_TRANSACTION)


async def roll_back(emu: Emulator, session: Session) -> None:
    """Roll back whatever transaction ``session`` has open (logout, deletion)."""
    try:
        await end(emu, None, session, commit=False)
    except QueryFailed:
        pass


async def _acquire(lock: asyncio.Lock, query: Query | None) -> None:
    """Take ``lock``, or raise QueryFailed(CANCELED) if ``query`` is aborted first."""
    if query is None:
        await lock.acquire()
        return
    acquire = asyncio.ensure_future(lock.acquire())
    aborted = asyncio.ensure_future(query.cancelled.wait())
    try:
        await asyncio.wait({acquire, aborted}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        aborted.cancel()
        if not acquire.done():
            acquire.cancel()  # a cancelled Lock.acquire never leaves the lock taken
    if acquire.done() and not acquire.cancelled():
        if not query.cancel_requested.is_set():
            return
        lock.release()
    raise QueryFailed(CANCELED)
