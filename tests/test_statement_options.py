"""Per-statement options (query_tag, timeout, statement_params), through the real connector."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from snowflake.connector.errors import ProgrammingError

from asyncsession import AsyncSession, Session
from asyncsession._statement_options import StatementOptions, statement_options
from asyncsession.testing import LocalSnowflake
from tests.helpers import both_backends

pytestmark = pytest.mark.anyio

TIMEOUT_ERRNO = 630


@pytest.fixture
async def session(local_snowflake: LocalSnowflake, query_path: str) -> AsyncIterator[AsyncSession]:
    # Every path of the executor (one round trip, submitted, mixed) sends the options.
    params = {**local_snowflake.connection_parameters, "query_tag": "session-tag"}
    async with Session.builder.configs(params).create() as s:
        yield s


def recorded(sf: LocalSnowflake, marker: str) -> list[dict[str, Any]]:
    """The server's record of the queries whose text contains ``marker``."""
    return [q for q in sf.queries() if marker in q["sql_text"]]


def alias(query: dict[str, Any]) -> str:
    """``x`` of a recorded ``select … as x_<marker>``."""
    return str(query["sql_text"].rsplit(" as ", 1)[1].split("_")[0])


def require_statement_tags(sf: LocalSnowflake, session_id: int, marker: str) -> None:
    """Skip (visibly) while the emulator records only the session's tag, not the statement's."""
    mine = [q for q in recorded(sf, marker) if q["session_id"] == session_id]
    if mine and all(q["query_tag"] == "session-tag" for q in mine):
        pytest.skip("the emulator does not record per-statement QUERY_TAG yet (branch emulator)")


# ---- validation (no server) ----------------------------------------------------------


def test_options_are_one_small_value() -> None:
    assert statement_options() is None
    options = statement_options("t", 1.2, {"timezone": "UTC", "Rows_Per_Resultset": 10})
    assert options == StatementOptions("t", 2, (("TIMEZONE", "UTC"), ("ROWS_PER_RESULTSET", 10)))
    assert options.parameters() == {
        "TIMEZONE": "UTC",
        "ROWS_PER_RESULTSET": 10,
        "QUERY_TAG": "t",
        "STATEMENT_TIMEOUT_IN_SECONDS": 2,
    }
    assert statement_options(timeout=0.001) == StatementOptions(timeout=1)  # rounded up


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"query_tag": 5}, TypeError, "query_tag must be a str"),
        ({"query_tag": "x" * 2001}, ValueError, "at most 2000"),
        ({"timeout": "10"}, TypeError, "timeout must be a number"),
        ({"timeout": True}, TypeError, "timeout must be a number"),
        ({"timeout": 0}, ValueError, "positive"),
        ({"timeout": -1}, ValueError, "positive"),
        ({"timeout": float("nan")}, ValueError, "positive"),
        ({"timeout": 10**7}, ValueError, "maximum"),
        ({"statement_params": [("a", 1)]}, TypeError, "statement_params must be a dict"),
        ({"statement_params": {1: "x"}}, TypeError, "keys must be non-empty str"),
        ({"statement_params": {"tz": None}}, TypeError, r"statement_params\['tz'\]"),
        ({"statement_params": {"tz": [1]}}, TypeError, r"statement_params\['tz'\]"),
        ({"statement_params": {"x": float("inf")}}, ValueError, r"\['x'\] must be a finite"),
        ({"statement_params": {"requestId": "a"}}, ValueError, "requestId is reserved"),
        ({"statement_params": {"REQUESTID": "a"}}, ValueError, "requestId is reserved"),
        ({"statement_params": {"a": 1, "A": 2}}, ValueError, "given twice"),
        ({"query_tag": "a", "statement_params": {"query_tag": "b"}}, ValueError, "twice"),
        (
            {"timeout": 1, "statement_params": {"STATEMENT_TIMEOUT_IN_SECONDS": 2}},
            ValueError,
            "twice",
        ),
        ({"statement_params": {"statement_timeout_in_seconds": 1.5}}, ValueError, "whole number"),
    ],
)
def test_bad_options_name_what_is_wrong(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        statement_options(**kwargs)


async def test_sql_checks_options_up_front(session: AsyncSession) -> None:
    with pytest.raises(ValueError, match="requestId is reserved"):
        session.sql("select 1", statement_params={"RequestId": str(uuid.uuid4())})
    assert session.running_queries == ()


# ---- through the connector -------------------------------------------------------------


async def test_timeout_stops_the_query_on_the_server(
    session: AsyncSession, local_snowflake: LocalSnowflake
) -> None:
    marker = uuid.uuid4().hex
    with pytest.raises(ProgrammingError) as caught:
        await session.sql(f"select system$wait(30) as w_{marker}", timeout=0.2).collect()
    assert caught.value.errno == TIMEOUT_ERRNO
    assert caught.value.sqlstate == "57014"
    [query] = recorded(local_snowflake, marker)
    assert query["status"] == "FAILED_WITH_ERROR"
    assert query["error_code"] == "000630"
    assert query["end_time"] - query["start_time"] < 20  # stopped by the server, not waited out
    # The session's own parameter is untouched: the next statement has no limit.
    rows = await session.sql("select system$wait(1500, 'MILLISECONDS')").collect()
    assert rows[0][0].startswith("waited")


async def test_timeout_reaches_jobs_and_streams(
    session: AsyncSession, local_snowflake: LocalSnowflake
) -> None:
    marker = uuid.uuid4().hex
    job = await session.sql(f"select system$wait(30) as j_{marker}", timeout=1).collect_nowait()
    with pytest.raises(ProgrammingError) as caught:
        await job.result()
    assert caught.value.errno == TIMEOUT_ERRNO
    query = session.sql(
        f"select system$wait(30) as s_{marker}",
        statement_params={"STATEMENT_TIMEOUT_IN_SECONDS": 1},
    )
    with pytest.raises(ProgrammingError) as caught:  # noqa: PT012 - a stream is entered, then read
        async with query.to_local_iterator() as stream:
            async for _ in stream:
                pass
    assert caught.value.errno == TIMEOUT_ERRNO
    assert {q["error_code"] for q in recorded(local_snowflake, marker)} == {"000630"}
    assert not [q for q in recorded(local_snowflake, marker) if q["status"] == "RUNNING"]


async def test_query_tag_is_per_statement(
    session: AsyncSession, local_snowflake: LocalSnowflake
) -> None:
    marker = uuid.uuid4().hex
    await session.sql(f"select 1 as a_{marker}", query_tag="orders-api").collect()
    require_statement_tags(local_snowflake, session.session_id, marker)
    await session.sql(f"select 2 as b_{marker}").collect()
    await session.sql(f"select 3 as c_{marker}", query_tag="rows").first()
    await session.sql(f"select 4 as d_{marker}", query_tag="arrow").to_arrow()
    await session.sql(f"select 5 as e_{marker}", query_tag="pandas").to_pandas()
    async with session.sql(f"select 6 as f_{marker}", query_tag="stream").to_arrow_batches() as s:
        async for _ in s:
            pass
    job = await session.sql(f"select 7 as g_{marker}", query_tag="job").collect_nowait()
    await job.result()
    await session.collect_many([session.sql(f"select 8 as h_{marker}", query_tag="many")])
    tags = {alias(q): q["query_tag"] for q in recorded(local_snowflake, marker)}
    assert tags == {
        "a": "orders-api", "b": "session-tag", "c": "rows", "d": "arrow",
        "e": "pandas", "f": "stream", "g": "job", "h": "many",
    }  # fmt: skip
    assert session.query_tag == "session-tag"
    [me] = [s for s in local_snowflake.sessions() if s["session_id"] == session.session_id]
    assert me["parameters"].get("QUERY_TAG") == "session-tag"


@both_backends
async def test_concurrent_tags_never_race(local_snowflake: LocalSnowflake, query_path: str) -> None:
    marker = uuid.uuid4().hex
    params = {**local_snowflake.connection_parameters, "query_tag": "session-tag"}
    async with Session.builder.configs(params).create() as session:
        await session.sql(f"select 0 as probe_{marker}", query_tag="probe").collect()
        require_statement_tags(local_snowflake, session.session_id, marker)

        async def tagged(i: int) -> None:
            sql = f"select system$wait({i % 5 * 20}, 'MILLISECONDS') as q{i}_{marker}"
            await session.sql(sql, query_tag=f"request-{i}").collect()

        async with anyio.create_task_group() as tg:
            for i in range(30):
                tg.start_soon(tagged, i)
        assert session.query_tag == "session-tag"
    queries = recorded(local_snowflake, marker)
    assert len(queries) == 31
    for query in queries:
        name = alias(query)
        if name != "probe":
            assert query["query_tag"] == f"request-{name[1:]}", query


@both_backends
async def test_cancelling_a_query_with_options_still_aborts_it(
    local_snowflake: LocalSnowflake, query_path: str
) -> None:
    marker = uuid.uuid4().hex
    async with Session.builder.configs(local_snowflake.connection_parameters).create() as session:
        query = session.sql(
            f"select system$wait(30) as c_{marker}",
            query_tag="cancel-me",
            timeout=60,
            statement_params={"TIMEZONE": "UTC"},
        )
        with anyio.move_on_after(0.3):
            await query.collect()
        assert session.running_queries == ()
    [record] = recorded(local_snowflake, marker)
    # Aborted (by its request id, or by query id once submitted), not timed out.
    assert record["status"] == "ABORTED", record
