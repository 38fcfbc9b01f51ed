"""``session.transaction()``, the transaction gate and session-state tracking, end to end."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from asyncsession import (
    AsyncSession,
    QueryCancelledError,
    Session,
    SessionClosedError,
    TransactionError,
)
from asyncsession._session import core_of
from asyncsession.testing import LocalSnowflake
from tests.helpers import both_backends, connect, until

pytestmark = pytest.mark.anyio


@pytest.fixture
async def session(local_snowflake: LocalSnowflake) -> AsyncIterator[AsyncSession]:
    async with Session.builder.configs(local_snowflake.connection_parameters).create() as s:
        yield s


@pytest.fixture
async def table(session: AsyncSession) -> str:
    name = f"t_{uuid.uuid4().hex[:8]}"
    await session.sql(f"create table {name} (n int)").collect()
    return name


def rows_seen_elsewhere(sf: LocalSnowflake, table: str) -> list[int]:
    """The rows of ``table`` as another session sees them (committed data only)."""
    with connect(sf.connection_parameters) as conn:
        return sorted(r[0] for r in conn.cursor().execute(f"select n from {table}").fetchall())


def history(sf: LocalSnowflake, session_id: int) -> list[dict[str, Any]]:
    return sorted(
        (q for q in sf.queries() if q["session_id"] == session_id), key=lambda q: q["start_time"]
    )


def texts(sf: LocalSnowflake, session_id: int, since: int = 0) -> list[str]:
    return [q["sql_text"] for q in history(sf, session_id)][since:]


@both_backends
async def test_commit_on_normal_exit(
    session: AsyncSession, table: str, local_snowflake: LocalSnowflake
) -> None:
    start = len(history(local_snowflake, session.session_id))
    assert not session.in_transaction
    async with session.transaction():
        assert session.in_transaction
        await session.sql(f"insert into {table} values (?)", [1]).collect()
        await session.sql(f"insert into {table} values (?)", [2]).collect()
    assert not session.in_transaction
    assert rows_seen_elsewhere(local_snowflake, table) == [1, 2]
    assert texts(local_snowflake, session.session_id, start) == [
        "begin",
        f"insert into {table} values (?)",
        f"insert into {table} values (?)",
        "commit",
    ]


async def test_rollback_on_error(
    session: AsyncSession, table: str, local_snowflake: LocalSnowflake
) -> None:
    with pytest.raises(ZeroDivisionError):  # noqa: PT012 - the error leaves the block
        async with session.transaction():
            await session.sql(f"insert into {table} values (1)").collect()
            1 / 0  # noqa: B018
    assert not session.in_transaction
    assert rows_seen_elsewhere(local_snowflake, table) == []
    assert texts(local_snowflake, session.session_id)[-1] == "rollback"
    assert (await session.sql("select 1").collect())[0][0] == 1


@both_backends
async def test_rollback_on_cancellation_aborts_the_running_statement(
    session: AsyncSession, table: str, local_snowflake: LocalSnowflake
) -> None:
    sid = session.session_id
    with anyio.move_on_after(0.5) as scope:
        async with session.transaction():
            await session.sql(f"insert into {table} values (1)").collect()
            await session.sql("select system$wait(30)").collect()
    assert scope.cancelled_caught
    assert not session.in_transaction
    assert session.running_queries == ()
    assert not [q for q in local_snowflake.running_queries() if q["session_id"] == sid]
    [wait] = [q for q in history(local_snowflake, sid) if "system$wait" in q["sql_text"]]
    assert wait["status"] == "ABORTED"
    assert texts(local_snowflake, sid)[-1] == "rollback"
    assert rows_seen_elsewhere(local_snowflake, table) == []
    assert (await session.sql("select 2").collect())[0][0] == 2


async def test_nesting_is_a_clear_error(session: AsyncSession, table: str) -> None:
    async with session.transaction():
        with pytest.raises(TransactionError, match="no nested"):
            async with session.transaction():
                pass  # pragma: no cover
        await session.sql(f"insert into {table} values (1)").collect()
        assert session.in_transaction  # the outer one goes on
    assert (await session.sql(f"select count(*) from {table}").collect())[0][0] == 1


async def test_collect_nowait_inside_is_a_clear_error(session: AsyncSession) -> None:
    async with session.transaction():
        with pytest.raises(TransactionError, match="collect_nowait"):
            await session.sql("select 1").collect_nowait()
    assert session.running_queries == ()


async def test_begin_refused_while_jobs_may_run(session: AsyncSession) -> None:
    job = await session.sql("select system$wait(30)").collect_nowait()
    with pytest.raises(TransactionError, match="collect_nowait"):
        async with session.transaction():
            pass  # pragma: no cover
    await job.cancel()
    async with session.transaction():
        pass
    assert not session.in_transaction


@both_backends
async def test_other_tasks_wait_until_the_transaction_ends(
    session: AsyncSession, table: str, local_snowflake: LocalSnowflake
) -> None:
    sid = session.session_id
    start = len(history(local_snowflake, sid))
    inside = anyio.Event()
    release = anyio.Event()
    outcome: list[str] = []

    async def owner() -> None:
        async with session.transaction():
            await session.sql(f"insert into {table} values (1)").collect()
            inside.set()
            await release.wait()
            await session.sql(f"insert into {table} values (2)").collect()

    async def other() -> None:
        await inside.wait()
        rows = await session.sql(f"select count(*) as other from {table}").collect()
        outcome.append(f"other saw {rows[0][0]}")

    async def cancelled_waiter() -> None:
        await inside.wait()
        with anyio.move_on_after(0.2):
            await session.sql("select 'never sent' as w").collect()
        outcome.append("waiter cancelled")

    async with anyio.create_task_group() as tg:
        tg.start_soon(owner)
        tg.start_soon(other)
        tg.start_soon(cancelled_waiter)
        await until(lambda: "waiter cancelled" in outcome)
        assert not [q for q in history(local_snowflake, sid) if "other" in q["sql_text"]]
        release.set()
    assert outcome == ["waiter cancelled", "other saw 2"]
    sent = texts(local_snowflake, sid, start)
    assert sent.index("commit") < sent.index(f"select count(*) as other from {table}")
    assert not [t for t in sent if "never sent" in t]


async def test_transactions_of_two_tasks_run_one_after_the_other(
    session: AsyncSession, table: str, local_snowflake: LocalSnowflake
) -> None:
    start = len(history(local_snowflake, session.session_id))

    async def work(n: int) -> None:
        async with session.transaction():
            await session.sql(f"insert into {table} values ({n})").collect()
            await anyio.lowlevel.checkpoint()
            await session.sql(f"insert into {table} values ({n + 10})").collect()

    async with anyio.create_task_group() as tg:
        tg.start_soon(work, 1)
        tg.start_soon(work, 2)
    sent = texts(local_snowflake, session.session_id, start)
    assert [t.split()[0] for t in sent] == ["begin", "insert", "insert", "commit"] * 2
    assert rows_seen_elsewhere(local_snowflake, table) == [1, 2, 11, 12]


async def test_raw_transaction_statements_are_tracked(session: AsyncSession, table: str) -> None:
    await session.sql("BEGIN TRANSACTION").collect()
    assert session.in_transaction
    assert core_of(session).state.in_transaction
    with pytest.raises(TransactionError, match="already open on this session"):
        async with session.transaction():
            pass  # pragma: no cover
    await session.sql(f"insert into {table} values (1)").collect()
    await session.sql("/* done */ commit").collect()
    assert not session.in_transaction
    await session.sql("begin").collect()
    await session.sql(f"create table {table}_2 (n int)").collect()  # DDL commits
    assert not session.in_transaction
    await session.sql("begin").collect()
    assert await core_of(session).rollback() is True
    assert not session.in_transaction


async def test_session_state_changes_are_tracked(session: AsyncSession) -> None:
    state = core_of(session).state
    assert state.changed == frozenset()
    await session.sql("select 1").collect()
    await session.sql("create table if not exists t_plain (n int)").collect()
    assert state.changed == frozenset()
    await session.use_schema("PUBLIC")
    await session.set_query_tag("x")
    await session.sql("alter session set timezone = 'UTC'").collect()
    assert state.changed == {"schema", "query_tag", "parameters"}
    state.reset()
    database = await session.get_current_database()
    assert database
    assert state.changed == frozenset()
    await session.use_database(database)
    assert state.changed == {"database", "schema"}


@both_backends
async def test_tasks_started_inside_run_inside(
    session: AsyncSession, table: str, local_snowflake: LocalSnowflake
) -> None:
    sid = session.session_id
    start = len(history(local_snowflake, sid))
    with pytest.raises(RuntimeError, match="undo"):  # noqa: PT012 - the error leaves the block
        async with session.transaction():
            inserts = [session.sql(f"insert into {table} values ({n})") for n in range(4)]
            with anyio.fail_after(20):  # they would wait forever if they were "other tasks"
                await session.collect_many(inserts)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(session.sql(f"insert into {table} values (9)").collect)
            raise RuntimeError("undo")
    sent = texts(local_snowflake, sid, start)
    assert sent[0] == "begin"
    assert sent[-1] == "rollback"
    assert len(sent) == 7
    assert rows_seen_elsewhere(local_snowflake, table) == []


async def test_autocommit_off_is_tracked(local_snowflake: LocalSnowflake) -> None:
    params = {**local_snowflake.connection_parameters, "autocommit": False}
    async with Session.builder.configs(params).create() as session:
        assert not session.in_transaction
        table = f"t_{uuid.uuid4().hex[:8]}"
        await session.sql(f"create table {table} (n int)").collect()  # DDL: commits
        assert not session.in_transaction
        await session.sql(f"insert into {table} values (1)").collect()
        assert session.in_transaction  # AUTOCOMMIT off: the insert opened one
        assert rows_seen_elsewhere(local_snowflake, table) == []
        assert await core_of(session).rollback() is True
        assert not session.in_transaction
        assert rows_seen_elsewhere(local_snowflake, table) == []


@both_backends
async def test_aclose_during_a_transaction_releases_everyone(
    local_snowflake: LocalSnowflake,
) -> None:
    async with Session.builder.configs(local_snowflake.connection_parameters).create() as session:
        sid = session.session_id
        inside = anyio.Event()
        errors: list[str] = []

        async def owner() -> None:
            try:
                async with session.transaction():
                    inside.set()
                    await session.sql("select system$wait(30)").collect()
            except (QueryCancelledError, SessionClosedError) as e:
                errors.append(f"owner: {type(e).__name__}")

        async def waiter() -> None:
            await inside.wait()
            try:
                await session.sql("select 'waiting' as w").collect()
            except SessionClosedError:
                errors.append("waiter: SessionClosedError")

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(owner)
                tg.start_soon(waiter)
                await inside.wait()
                await until(lambda: session.running_queries)
                await session.aclose()
        assert sorted(errors) == ["owner: QueryCancelledError", "waiter: SessionClosedError"]
    assert not [q for q in local_snowflake.running_queries() if q["session_id"] == sid]
    assert sid not in {s["session_id"] for s in local_snowflake.sessions()}


@both_backends
async def test_a_busy_session_neither_starves_nor_leaks_into_a_transaction(
    session: AsyncSession, table: str, local_snowflake: LocalSnowflake
) -> None:
    sid = session.session_id
    start = len(history(local_snowflake, sid))
    stop = anyio.Event()

    async def busy(i: int) -> None:
        while not stop.is_set():
            await session.sql(f"select {i} as busy").collect()

    async with anyio.create_task_group() as tg:
        for i in range(8):
            tg.start_soon(busy, i)
        await until(lambda: len(history(local_snowflake, sid)) > start + 20)
        with anyio.fail_after(20):  # statements arriving meanwhile queue behind it
            async with session.transaction():
                for n in range(3):
                    await session.sql(f"insert into {table} values ({n})").collect()
        await until(lambda: texts(local_snowflake, sid)[-1].endswith("as busy"))
        stop.set()
    sent = texts(local_snowflake, sid, start)
    inside = sent[sent.index("begin") : sent.index("commit") + 1]
    assert inside == ["begin"] + [f"insert into {table} values ({n})" for n in range(3)] + [
        "commit"
    ]
