"""Per-statement parameters (``_statement_params``) reach the server and apply to that
statement only, through the real connector (4.x and 5.x)."""

from __future__ import annotations

import pytest
from snowflake.connector.errors import ProgrammingError

from asyncsession.testing import LocalSnowflake
from tests.helpers import connect


def tag_in_history(cur: object, query_id: str) -> str:
    row = cur.execute(  # type: ignore[attr-defined]
        "select query_tag from table(information_schema.query_history_by_session()) "
        f"where query_id = '{query_id}'"
    ).fetchone()
    assert row is not None
    return str(row[0])


def test_query_tag_for_one_statement(local_snowflake: LocalSnowflake) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        cur = conn.cursor()
        cur.execute("alter session set query_tag = 'session-tag'")
        cur.execute("select 1", _statement_params={"QUERY_TAG": "just-this-one"})
        tagged = cur.sfqid
        cur.execute("select 2")
        untagged = cur.sfqid
        assert local_snowflake.query(tagged)["query_tag"] == "just-this-one"
        assert local_snowflake.query(untagged)["query_tag"] == "session-tag"
        assert tag_in_history(cur, tagged) == "just-this-one"
        assert tag_in_history(cur, untagged) == "session-tag"


def test_query_tag_of_an_async_statement(local_snowflake: LocalSnowflake) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        cur = conn.cursor()
        cur.execute_async("select 3", _statement_params={"QUERY_TAG": "async-one"})
        qid = cur.sfqid
        cur.get_results_from_sfqid(qid)
        assert cur.fetchall() == [(3,)]
        assert local_snowflake.query(qid)["query_tag"] == "async-one"
        assert tag_in_history(conn.cursor(), qid) == "async-one"


@pytest.mark.parametrize(
    "sql",
    [
        "select system$wait(30)",  # answered on the server's event loop
        "select system$wait(30) as w from (select 1)",  # runs in a DuckDB worker
    ],
)
def test_statement_timeout_for_one_statement_stops_it(
    local_snowflake: LocalSnowflake, sql: str
) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        cur = conn.cursor()
        with pytest.raises(ProgrammingError) as timed_out:
            cur.execute(sql, _statement_params={"STATEMENT_TIMEOUT_IN_SECONDS": 1})
        assert (timed_out.value.errno, timed_out.value.sqlstate) == (630, "57014")
        (query,) = [q for q in local_snowflake.queries() if q["sql_text"] == sql][-1:]
        assert query["status"] == "FAILED_WITH_ERROR"
        assert query["error_code"] == "000630"
        # The worker really stopped: nothing of it still executes on the server.
        local_snowflake.wait_until(lambda sf: not sf.query(query["query_id"])["executing"])
        assert cur.execute("select 4").fetchone() == (4,)  # the next statement is unbounded
        assert local_snowflake.query(cur.sfqid)["status"] == "SUCCESS"
