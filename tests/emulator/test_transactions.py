"""Transactions per session, through the real connector (4.x and 5.x).

Asserted on what other sessions see and on the server's own record (query history,
``CURRENT_TRANSACTION()``), as one would against a real account.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from snowflake.connector.errors import Error

from asyncsession.testing import LocalSnowflake
from tests.emulator.raw import RawClient
from tests.helpers import connect


@pytest.fixture
def table(local_snowflake: LocalSnowflake) -> Iterator[str]:
    name = f"txn_{uuid.uuid4().hex[:8]}"
    with connect(local_snowflake.connection_parameters) as conn:
        conn.cursor().execute(f"create table {name} (a int)")
        yield name
        conn.cursor().execute(f"drop table if exists {name}")


@pytest.fixture
def two(local_snowflake: LocalSnowflake) -> Iterator[tuple[Any, Any]]:
    """Two connections: two sessions of the same user."""
    a = connect(local_snowflake.connection_parameters)
    b = connect(local_snowflake.connection_parameters)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def count(conn: Any, table: str) -> int:
    result: int = conn.cursor().execute(f"select count(*) from {table}").fetchone()[0]
    return result


def current_transaction(conn: Any) -> str | None:
    value: str | None = conn.cursor().execute("select current_transaction()").fetchone()[0]
    return value


@pytest.mark.parametrize(
    ("begin", "commit"),
    [
        ("begin", "commit"),
        ("BEGIN TRANSACTION", "COMMIT WORK"),
        ("begin work;", "commit;"),
        ("start transaction", "commit"),
        ("begin name load_1", "commit"),
    ],
)
def test_uncommitted_writes_are_the_sessions_own_until_commit(
    two: tuple[Any, Any], table: str, begin: str, commit: str
) -> None:
    a, b = two
    assert current_transaction(a) is None
    cur = a.cursor()
    assert cur.execute(begin).fetchall() == [("Statement executed successfully.",)]
    txn = current_transaction(a)
    assert txn is not None
    assert int(txn) > 0
    cur.execute(f"insert into {table} values (1), (2)")
    assert cur.rowcount == 2
    assert count(a, table) == 2  # its own writes
    assert count(b, table) == 0  # invisible elsewhere
    assert current_transaction(b) is None
    cur.execute(commit)
    assert current_transaction(a) is None
    assert count(b, table) == 2


def test_rollback_undoes_the_transaction(two: tuple[Any, Any], table: str) -> None:
    a, b = two
    a.cursor().execute(f"insert into {table} values (0)")  # autocommitted before
    a.cursor().execute("begin")
    a.cursor().execute(f"insert into {table} values (1)")
    a.cursor().execute(f"delete from {table} where a = 0")
    assert count(a, table) == 1
    a.cursor().execute("rollback work")
    assert count(a, table) == count(b, table) == 1
    assert a.cursor().execute(f"select a from {table}").fetchall() == [(0,)]


def test_a_second_begin_is_ignored(two: tuple[Any, Any], table: str) -> None:
    # Snowflake's BEGIN: "If two BEGIN statements in a row are executed (within the same
    # scope), the second one is ignored"; the open transaction continues.
    a, b = two
    a.cursor().execute("begin")
    first = current_transaction(a)
    a.cursor().execute(f"insert into {table} values (1)")
    a.cursor().execute("begin transaction")
    assert current_transaction(a) == first
    a.cursor().execute(f"insert into {table} values (2)")
    a.cursor().execute("rollback")
    assert count(b, table) == 0


def test_commit_and_rollback_without_a_transaction_succeed(
    local_snowflake: LocalSnowflake,
) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        for sql in ("commit", "rollback", "commit work", "rollback work"):
            assert conn.cursor().execute(sql).fetchall() == [("Statement executed successfully.",)]
        assert current_transaction(conn) is None


def test_ddl_commits_the_open_transaction(two: tuple[Any, Any], table: str) -> None:
    a, b = two
    a.cursor().execute("begin")
    a.cursor().execute(f"insert into {table} values (1)")
    other = f"{table}_ddl"
    a.cursor().execute(f"create table {other} (b int)")
    try:
        assert current_transaction(a) is None  # the DDL committed it
        assert count(b, table) == 1
        a.cursor().execute("rollback")  # nothing left to roll back
        assert count(b, table) == 1
        # Back in autocommit: the next write is visible at once.
        a.cursor().execute(f"insert into {table} values (2)")
        assert count(b, table) == 2
    finally:
        a.cursor().execute(f"drop table if exists {other}")


def test_logout_rolls_back_an_open_transaction(local_snowflake: LocalSnowflake, table: str) -> None:
    with connect(local_snowflake.connection_parameters) as b:
        a = connect(local_snowflake.connection_parameters)
        a.cursor().execute("begin")
        a.cursor().execute(f"insert into {table} values (1)")
        a.close()
        assert count(b, table) == 0
        # The rolled-back connection went back to the pool clean: writes work there.
        with connect(local_snowflake.connection_parameters) as c:
            c.cursor().execute(f"insert into {table} values (2)")
        assert count(b, table) == 1


def test_concurrent_statements_of_a_transaction_run_one_at_a_time(
    two: tuple[Any, Any], table: str
) -> None:
    a, b = two
    a.cursor().execute("begin")
    errors: list[BaseException] = []

    def insert(n: int) -> None:
        try:
            # SYSTEM$WAIT inside a DuckDB statement: a few milliseconds on the connection.
            a.cursor().execute(
                f"insert into {table} select {n} where system$wait(0.005) is not null"
            )
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=insert, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert count(a, table) == 8
    assert count(b, table) == 0
    a.cursor().execute("commit")
    assert count(b, table) == 8


def test_transaction_statements_are_in_query_history(
    local_snowflake: LocalSnowflake, table: str
) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        cur = conn.cursor()
        for sql in ("begin", f"insert into {table} values (1)", "commit"):
            cur.execute(sql)
        rows = cur.execute(
            "select query_text, execution_status from table("
            "information_schema.query_history_by_session()) order by start_time desc limit 4"
        ).fetchall()
        assert [r[0] for r in rows[1:]] == ["commit", f"insert into {table} values (1)", "begin"]
        assert {r[1] for r in rows[1:]} == {"SUCCESS"}


def test_commit_after_a_failed_statement_rolls_back_and_says_why(
    two: tuple[Any, Any], table: str
) -> None:
    # DuckDB aborts the whole transaction when one statement fails (Snowflake would roll
    # back that statement only): the emulator refuses to pretend the COMMIT worked.
    a, b = two
    a.cursor().execute("begin")
    a.cursor().execute(f"insert into {table} values (1)")
    with pytest.raises(Error):
        a.cursor().execute(f"insert into {table} values ('not a number')")
    with pytest.raises(Error, match="rolled back"):
        a.cursor().execute("commit")
    assert current_transaction(a) is None
    assert count(b, table) == 0
    a.cursor().execute(f"insert into {table} values (2)")  # the session goes on
    assert count(b, table) == 1


def test_rollback_after_a_failed_statement_succeeds(two: tuple[Any, Any], table: str) -> None:
    a, b = two
    a.cursor().execute("begin")
    a.cursor().execute(f"insert into {table} values (1)")
    with pytest.raises(Error):
        a.cursor().execute("select * from no_such_table")
    a.cursor().execute("rollback")
    assert count(a, table) == count(b, table) == 0


def test_sessions_show_the_open_transaction(local_snowflake: LocalSnowflake) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        assert local_snowflake.session(conn.session_id)["transaction_id"] is None
        conn.cursor().execute("begin")
        txn = current_transaction(conn)
        assert str(local_snowflake.session(conn.session_id)["transaction_id"]) == txn
        conn.cursor().execute("commit")
        assert local_snowflake.session(conn.session_id)["transaction_id"] is None


def test_autocommit_off_starts_a_transaction_at_the_first_dml(
    two: tuple[Any, Any], table: str
) -> None:
    # Snowflake: with AUTOCOMMIT off, the first DML after a COMMIT or ROLLBACK implicitly
    # starts a transaction; changing AUTOCOMMIT commits the open one.
    a, b = two
    a.autocommit(False)  # the connector sends ALTER SESSION SET autocommit=False
    assert current_transaction(a) is None  # a query does not start one
    a.cursor().execute(f"insert into {table} values (1)")
    assert current_transaction(a) is not None
    assert count(b, table) == 0
    a.commit()
    assert count(b, table) == 1
    a.cursor().execute(f"insert into {table} values (2)")
    a.rollback()
    assert count(b, table) == 1
    a.cursor().execute(f"insert into {table} values (3)")
    a.autocommit(True)  # commits it
    assert current_transaction(a) is None
    assert count(b, table) == 2
    a.cursor().execute(f"insert into {table} values (4)")  # autocommitted again
    assert count(b, table) == 3


def test_autocommit_off_at_login(local_snowflake: LocalSnowflake, table: str) -> None:
    with connect(local_snowflake.connection_parameters, autocommit=False) as a:
        a.cursor().execute(f"insert into {table} values (1)")
        assert current_transaction(a) is not None
        a.rollback()
        assert count(a, table) == 0


def test_logout_does_not_wait_for_a_statement_running_in_the_transaction(
    local_snowflake: LocalSnowflake, table: str
) -> None:
    # Raw protocol: connector 4.x's close() skips the logout while async queries run.
    raw = RawClient(local_snowflake.url)
    assert raw.query("begin")["success"]
    assert raw.query(f"insert into {table} values (1)")["success"]
    qid = raw.query(
        f"insert into {table} select 2 where system$wait(2) is not null", async_exec=True
    )["data"]["queryId"]
    local_snowflake.wait_until(lambda sf: sf.query(qid)["executing"])
    raw.logout()
    # The logout answered while the insert still ran (queries outlive a logout)...
    assert local_snowflake.query(qid)["status"] == "RUNNING"
    assert raw.session_id not in [s["session_id"] for s in local_snowflake.sessions()]
    local_snowflake.wait_until(lambda sf: not sf.query(qid)["executing"], timeout=30)
    # ...and the transaction it ran in was rolled back after it, not committed.
    with connect(local_snowflake.connection_parameters) as b:
        assert count(b, table) == 0


def test_a_statement_waiting_for_the_transaction_can_be_aborted(
    local_snowflake: LocalSnowflake, table: str
) -> None:
    with connect(local_snowflake.connection_parameters) as a:
        a.cursor().execute("begin")
        busy, waiting = a.cursor(), a.cursor()
        busy.execute_async("select count(*) from (select 1) where system$wait(30) is not null")
        local_snowflake.wait_until(lambda sf: sf.query(busy.sfqid)["executing"])
        waiting.execute_async(f"insert into {table} values (1)")
        assert local_snowflake.query(waiting.sfqid)["status"] == "RUNNING"  # queued behind
        a.cursor().execute(f"select system$cancel_query('{waiting.sfqid}')")
        assert local_snowflake.query(waiting.sfqid)["status"] == "ABORTED"
        a.cursor().execute(f"select system$cancel_query('{busy.sfqid}')")
        local_snowflake.wait_until(lambda sf: not sf.query(busy.sfqid)["executing"])
        a.cursor().execute("rollback")  # the interrupted transaction still rolls back
        assert count(a, table) == 0
        assert current_transaction(a) is None
