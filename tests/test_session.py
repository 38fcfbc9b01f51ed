"""Queries through AsyncSession, end to end through the real connector and the emulator."""

from __future__ import annotations

import gc
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
import pytest

from asyncsession import AsyncSession, ResultStream, Row, RowBatch, Session
from asyncsession._session import core_of
from asyncsession._threads import worker_threads
from asyncsession.testing import LocalSnowflake
from tests.helpers import both_backends, until

pytestmark = pytest.mark.anyio

#: 0 .. n-1 as column N, in SQL that Snowflake and the emulator both run (SEQ4() alone may
#: have gaps on a real warehouse).
NUMBERS = (
    "select row_number() over (order by seq4()) - 1 as n from table(generator(rowcount => {}))"
)


@pytest.fixture
async def session(snowflake_connection_parameters: dict[str, Any]) -> AsyncIterator[AsyncSession]:
    async with Session.builder.configs(snowflake_connection_parameters).create() as s:
        yield s


@pytest.fixture
async def table(session: AsyncSession) -> str:
    name = f"t_{uuid.uuid4().hex[:8]}"
    await session.sql(f"create temporary table {name} (n int, s varchar)").collect()
    await session.sql(f"insert into {name} values (1, 'a'), (2, 'b'), (3, null)").collect()
    return name


async def test_collect_and_first_with_binding(session: AsyncSession) -> None:
    rows = await session.sql("select ? as a, ? as b", params=[1, "x"]).collect()
    assert rows == [Row(A=1, B="x")]
    assert rows[0].A == 1
    assert rows[0]["B"] == "x"
    assert rows[0].as_dict() == {"A": 1, "B": "x"}
    assert await session.sql("select 1 as a where 1 = 0").first() is None
    assert await session.sql("select 5 as a").first() == Row(A=5)


async def test_first_n(session: AsyncSession, table: str) -> None:
    rows = await session.sql(f"select n from {table} order by n").first(2)
    assert rows == [Row(N=1), Row(N=2)]


async def test_hostile_parameter_stays_data(session: AsyncSession) -> None:
    hostile = "'); drop table x; --"
    assert (await session.sql("select ?", [hostile]).collect())[0][0] == hostile


async def test_params_must_be_a_sequence(session: AsyncSession) -> None:
    with pytest.raises(TypeError, match="list or tuple"):
        session.sql("select ?", "abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty SQL"):
        session.sql("  ")


async def test_pandas_and_arrow(session: AsyncSession, table: str) -> None:
    df = await session.sql(f"select * from {table} order by n").to_pandas()
    assert df["N"].tolist() == [1, 2, 3]
    arrow = await session.sql(f"select * from {table} order by n").to_arrow()
    assert arrow.column("S").to_pylist() == ["a", "b", None]
    empty = await session.sql(f"select * from {table} where n > 10").to_arrow()
    assert empty.num_rows == 0


async def test_streaming_rows_and_batches(session: AsyncSession) -> None:
    sql = f"{NUMBERS.format(25000)} order by n"
    seen = [row[0] async for row in session.sql(sql).to_local_iterator(batch_rows=1000)]
    assert seen == list(range(25000))
    sizes: list[int] = []
    async with session.sql(sql).to_row_batches(batch_rows=10_000) as row_batches:
        async for batch in row_batches:
            assert isinstance(batch, RowBatch)
            assert isinstance(batch[0], Row)
            assert batch[0][0] == 10_000 * len(sizes)
            sizes.append(len(batch))
    assert sum(sizes) == 25000
    assert max(sizes) <= 10_000
    with pytest.raises(ValueError, match="batch_rows"):
        session.sql(sql).to_row_batches(batch_rows=0)
    total = 0
    async with session.sql(sql).to_arrow_batches() as batches:
        async for table in batches:
            total += table.num_rows
    assert total == 25000
    frames = [df async for df in session.sql(sql).to_pandas_batches()]
    assert sum(len(f) for f in frames) == 25000


@both_backends
async def test_row_batches_make_the_rows_collect_makes(session: AsyncSession) -> None:
    sql = f"select n, 'v' || n as s from ({NUMBERS.format(25)}) order by n"
    collected = await session.sql(sql).collect()
    batches: list[RowBatch] = []
    async with session.sql(sql).to_row_batches(batch_rows=10) as stream:
        async for batch in stream:
            batches.append(batch)
    assert session.running_queries == ()
    assert [len(b) for b in batches] == [10, 10, 5]
    assert all(type(b) is RowBatch and b.fields == ("N", "S") for b in batches)
    rows = [row for b in batches for row in b]
    assert rows == collected
    assert {type(row) for row in rows} == {type(collected[0])}  # one Row class for both
    assert batches[1][0].S == "v10"
    assert batches[2][-1].as_dict() == {"N": 24, "S": "v24"}
    assert batches[0] == collected[:10]
    assert batches[0][2:4] == collected[2:4]
    # The driver's own tuples, for consumers that want no Rows at all.
    tuples = [t for b in batches for t in b.tuples()]
    assert tuples == [tuple(row) for row in collected]
    assert all(type(t) is tuple for t in tuples)


async def test_row_batches_of_an_empty_result(session: AsyncSession) -> None:
    sql = f"{NUMBERS.format(10)} where 1 = 0"
    assert [b async for b in session.sql(sql).to_row_batches()] == []
    assert session.running_queries == ()


async def test_streaming_an_empty_result_and_empty_batches(session: AsyncSession) -> None:
    sql = f"{NUMBERS.format(10)} where 1 = 0"
    assert [row async for row in session.sql(sql).to_local_iterator()] == []
    # A batch source may yield empty batches (never from the connector we know, but the
    # stream must skip them, not recurse or stop early).
    # A flattened stream's batches are the driver's row tuples; it makes the Rows.
    runner = core_of(session).runner
    sql = f"{NUMBERS.format(3)} order by n"
    stream: ResultStream[Any] = ResultStream(
        runner,
        lambda: runner.run(sql, None, lambda cursor: cursor, keep_cursor=True),
        lambda cursor: iter([[], [(1,)], [], [], [(2,), (3,)], []]),
        flatten=True,
    )
    rows = [item async for item in stream]
    assert rows == [(1,), (2,), (3,)]
    assert all(isinstance(row, Row) and row[0] == row.N for row in rows)
    assert session.running_queries == ()


async def test_local_iterator_rows_are_named_across_batch_boundaries(
    session: AsyncSession,
) -> None:
    sql = f"{NUMBERS.format(10)} order by n"
    rows = [row async for row in session.sql(sql).to_local_iterator(batch_rows=3)]
    assert [row.N for row in rows] == list(range(10))
    assert all(isinstance(row, Row) for row in rows)
    assert len({type(row) for row in rows}) == 1  # one Row class per result, not per batch
    assert rows[4].as_dict() == {"N": 4}


async def test_local_iterator_does_not_hold_a_batch_of_rows(session: AsyncSession) -> None:
    # Rows are made as they are handed out (a batch of live Rows costs full GC passes):
    # while the consumer is mid-batch, only the Rows it kept exist.
    sql = f"{NUMBERS.format(2000)} order by n"
    kept: list[Row] = []
    live: list[int] = []
    async with session.sql(sql).to_local_iterator(batch_rows=1000) as stream:
        async for row in stream:
            if row.N in (10, 1500):
                kept.append(row)
                live.append(sum(1 for o in gc.get_objects() if type(o) is type(row)))
    assert [row.N for row in kept] == [10, 1500]
    # The kept ones and the loop variable's (a batch was 1000 Rows before).
    assert live[0] <= 2
    assert live[1] <= 3


async def test_stream_closed_early_releases_its_cursor(session: AsyncSession) -> None:
    stream = session.sql(NUMBERS.format(50000)).to_local_iterator()
    async with stream:
        async for row in stream:
            assert row[0] is not None
            break
    assert session.running_queries == ()
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


async def test_concurrent_queries_overlap_on_the_server(
    session: AsyncSession, local_snowflake: LocalSnowflake
) -> None:
    tag = f"overlap-{uuid.uuid4().hex[:6]}"
    await session.set_query_tag(tag)
    assert session.query_tag == tag
    results = await session.collect_many(["select system$wait(1)"] * 10)
    assert len(results) == 10
    waits = [
        q for q in local_snowflake.queries() if q["query_tag"] == tag and "wait" in q["sql_text"]
    ]
    assert len(waits) == 10
    assert max(q["start_time"] for q in waits) < min(q["end_time"] for q in waits)


async def test_collect_many_keeps_input_order_and_limit(session: AsyncSession) -> None:
    queries: list[Any] = [("select ?", [i]) for i in range(20)]
    results = await session.collect_many(queries, limit=3)
    assert [r[0][0] for r in results] == list(range(20))
    with pytest.raises(ValueError, match="limit"):
        await session.collect_many(queries, limit=0)
    with pytest.raises(TypeError, match="each query"):
        await session.collect_many([42])  # type: ignore[list-item]


async def test_running_queries_from_submission_until_end(
    session: AsyncSession, local_snowflake: LocalSnowflake
) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(session.sql("select system$wait(400, 'MILLISECONDS')").collect)
        await until(lambda: session.running_queries)
        (running,) = session.running_queries
        assert running.sql_text.startswith("select system$wait")
    assert session.running_queries == ()
    # Learnt from the response: the id the server gave that very query.
    sql = "select system$wait(400, 'MILLISECONDS')"
    assert running.query_id == server_query(local_snowflake, session, sql)["query_id"]


async def test_jobs(session: AsyncSession, local_snowflake: LocalSnowflake) -> None:
    job = await session.sql("select system$wait(200, 'MILLISECONDS') as w").collect_nowait()
    assert job.query_id in [q.query_id for q in session.running_queries]
    on_server = local_snowflake.query(job.query_id)
    assert on_server["session_id"] == session.session_id
    assert on_server["sql_text"] == "select system$wait(200, 'MILLISECONDS') as w"
    assert await job.status() in ("RUNNING", "SUCCESS")
    assert await job.result() == [Row(W="waited 200 milliseconds")]
    assert await job.is_done()
    assert session.running_queries == ()
    same = await session.create_async_job(job.query_id)
    assert await same.result() == [Row(W="waited 200 milliseconds")]
    df = await (await session.sql("select 1 as a").collect_nowait()).result("pandas")
    assert df["A"].tolist() == [1]
    assert await (await session.sql("select 1").collect_nowait()).result("no_result") is None
    with pytest.raises(ValueError, match="result_type"):
        await job.result("nope")  # type: ignore[arg-type]


async def test_failed_job_raises_the_connector_error(session: AsyncSession) -> None:
    from snowflake.connector.errors import ProgrammingError

    job = await session.sql("select * from no_such_table_anywhere").collect_nowait()
    with pytest.raises(ProgrammingError):
        await job.result()


@pytest.mark.emulator_only  # the emulator's TEST_DB / TEST_WH / OTHER_WH
async def test_context_functions(session: AsyncSession) -> None:
    assert await session.get_current_database() == "TEST_DB"
    assert await session.get_current_schema() == "PUBLIC"
    assert await session.get_current_warehouse() == "TEST_WH"
    await session.use_warehouse("OTHER_WH")
    assert await session.get_current_warehouse() == "OTHER_WH"
    await session.sql("create schema if not exists s2").collect()
    await session.use_schema("S2")
    assert await session.get_current_schema() == "S2"
    with pytest.raises(ValueError, match="invalid database name"):
        await session.use_database("x; drop table y")


async def test_event_loop_is_not_blocked(session: AsyncSession) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        await session.sql("select system$wait(500, 'MILLISECONDS')").collect()
        tg.cancel_scope.cancel()
    assert ticks >= 10  # it ticked all along (a blocked loop would tick ~once)


def server_overlap(queries: list[dict[str, Any]]) -> int:
    """The most of ``queries`` the server ran at one moment (from its start and end times)."""
    events = sorted(
        [(q["start_time"], 1) for q in queries] + [(q["end_time"], -1) for q in queries]
    )  # at equal times an end (-1) sorts before a start: touching is not overlapping
    peak = now = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def session_queries(sf: LocalSnowflake, session: AsyncSession, text: str) -> list[dict[str, Any]]:
    return [
        q for q in sf.queries() if q["session_id"] == session.session_id and q["sql_text"] == text
    ]


async def test_max_concurrent_queries_bounds_the_server_side_overlap(
    local_snowflake: LocalSnowflake,
) -> None:
    """Guarantee: a session never runs more than ``max_concurrent_queries`` queries at once
    on the server, and does run that many when asked for more (a limit that were silently
    raised, or not used, would show in the server's own start and end times)."""
    params = {**local_snowflake.connection_parameters, "max_concurrent_queries": 3}
    sql = "select system$wait(400, 'MILLISECONDS')"
    async with Session.builder.configs(params).create() as session:
        assert session.max_concurrent_queries == 3
        results = await session.collect_many([sql] * 8)
        assert len(results) == 8
        waits = session_queries(local_snowflake, session, sql)
        assert len(waits) == 8
        assert all(q["status"] == "SUCCESS" for q in waits)
        assert server_overlap(waits) == 3


async def test_own_limiter_leaves_anyio_default_free(local_snowflake: LocalSnowflake) -> None:
    params = {**local_snowflake.connection_parameters, "max_concurrent_queries": 60}
    async with Session.builder.configs(params).create() as session:
        assert session.max_concurrent_queries == 60
        default = anyio.to_thread.current_default_thread_limiter()
        peak_default = 0
        peak_running = 0
        peak_threads = 0

        async def watch() -> None:
            nonlocal peak_default, peak_running, peak_threads
            while True:
                peak_default = max(peak_default, default.borrowed_tokens)
                peak_running = max(peak_running, len(session.running_queries))
                peak_threads = max(peak_threads, worker_threads())
                await anyio.sleep(0.005)

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await session.collect_many(["select system$wait(300, 'MILLISECONDS')"] * 80)
            tg.cancel_scope.cancel()
        assert peak_default == 0
        # At most 60 in flight; the others wait their turn, untracked until they run.
        assert 1 <= peak_running <= 60
        # Beyond the first few, queries are submitted and polled: few threads (loosely).
        assert peak_threads <= 40
        sql = "select system$wait(300, 'MILLISECONDS')"
        # (Reaching the limit is checked with a small one above.)
        assert server_overlap(session_queries(local_snowflake, session, sql)) <= 60


# ---- API no other test calls ---------------------------------------------------------------


def server_query(sf: LocalSnowflake, session: AsyncSession, text: str) -> dict[str, Any]:
    """The one query of ``session`` with ``text``, as the server recorded it."""
    (query,) = session_queries(sf, session, text)
    return query


async def test_current_role_account_user_and_use_role_and_database(
    session: AsyncSession, local_snowflake: LocalSnowflake
) -> None:
    assert await session.get_current_role() == "TEST_ROLE"
    assert await session.get_current_account() == "LOCAL"
    assert await session.get_current_user() == "TEST"
    await session.use_role("OTHER_ROLE")
    assert await session.get_current_role() == "OTHER_ROLE"
    name = f"DB_{uuid.uuid4().hex[:8].upper()}"
    await session.sql(f"create database {name}").collect()
    await session.use_database(name)
    assert await session.get_current_database() == name
    # Each ran in this very session on the server.
    for text in ("use role OTHER_ROLE", f"use database {name}"):
        assert server_query(local_snowflake, session, text)["status"] == "SUCCESS"


async def test_set_query_tag_none_unsets_it_on_the_server(
    session: AsyncSession, local_snowflake: LocalSnowflake
) -> None:
    tag = f"tag-{uuid.uuid4().hex[:6]}"
    await session.set_query_tag(tag)
    await session.sql("select 'tagged'").collect()
    await session.set_query_tag(None)
    assert session.query_tag is None
    await session.sql("select 'untagged'").collect()
    assert server_query(local_snowflake, session, "select 'tagged'")["query_tag"] == tag
    assert server_query(local_snowflake, session, "select 'untagged'")["query_tag"] == ""
    (mine,) = [s for s in local_snowflake.sessions() if s["session_id"] == session.session_id]
    assert "QUERY_TAG" not in mine["parameters"]


async def test_first_with_a_negative_n_is_a_value_error(session: AsyncSession) -> None:
    with pytest.raises(ValueError, match="non-negative int"):
        await session.sql("select 1").first(-1)
    with pytest.raises(ValueError, match="non-negative int"):
        await session.sql("select 1").first(1.5)  # type: ignore[call-overload]
    assert await session.sql("select 1").first(0) == []


async def test_job_session_and_query_id_match_the_server(
    session: AsyncSession, local_snowflake: LocalSnowflake
) -> None:
    job = await session.sql("select 'job'").collect_nowait()
    assert job.session is session
    assert await job.result() == [Row(**{"'JOB'": "job"})]
    described = local_snowflake.query(job.query_id)
    assert described["session_id"] == session.session_id
    assert described["sql_text"] == "select 'job'"


async def test_create_async_job_errors_and_a_query_of_another_session(
    session: AsyncSession, local_snowflake: LocalSnowflake
) -> None:
    for bad in ("", "   ", None, 42):
        with pytest.raises(ValueError, match="non-empty str"):
            await session.create_async_job(bad)  # type: ignore[arg-type]
    async with Session.builder.configs(local_snowflake.connection_parameters).create() as other:
        submitted = await other.sql("select 'from the other session' as s").collect_nowait()
        job = await session.create_async_job(submitted.query_id)
        assert job.session is session
        assert await job.result() == [Row(S="from the other session")]
        assert local_snowflake.query(job.query_id)["session_id"] == other.session_id
    # Not a query id at all: refused at once (the server would say NO_DATA forever).
    for bad in ("not-a-query-id", "01b2c3d4-0000", "'); drop table t; --"):
        with pytest.raises(ValueError, match="Snowflake query id"):
            await session.create_async_job(bad)
    assert session.running_queries == ()


async def test_no_result_of_a_failed_job_raises_its_error(session: AsyncSession) -> None:
    from snowflake.connector.errors import ProgrammingError

    job = await session.sql("select * from no_such_table_for_no_result").collect_nowait()
    with pytest.raises(ProgrammingError) as info:
        await job.result("no_result")
    assert info.value.errno == 2003
    assert session.running_queries == ()
