"""The emulator speaks Snowflake's wire protocol to the real connector (4.x and 5.x)."""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.error
import uuid
from typing import Any

import pytest
from snowflake.connector.errors import DatabaseError, Error, ProgrammingError

from asyncsession.testing import LocalSnowflake
from tests.emulator.raw import RawClient
from tests.helpers import CONNECTOR_MAJOR, connect

# Tests of the emulator itself.
pytestmark = pytest.mark.emulator_only

#: How long an aborted statement may take to really stop (its worker polls every 50 ms;
#: a DuckDB interrupt takes ~0.5 s). Far below the 30 s the statements would run.
WORKER_STOPS = 10.0


def test_login_and_logout_really_delete_the_session(emulator: LocalSnowflake) -> None:
    conn = connect(emulator.connection_parameters)
    assert [s["session_id"] for s in emulator.sessions()] == [conn.session_id]
    conn.close()
    assert emulator.sessions() == []


def test_queries_with_qmark_and_pyformat_binding(local_snowflake: LocalSnowflake) -> None:
    params = local_snowflake.connection_parameters
    with connect(params, paramstyle="qmark") as conn:
        rows = conn.cursor().execute("select ? as a, ? as b", [1, "it's"]).fetchall()
        assert rows == [(1, "it's")]
    with connect(params) as conn:
        rows = conn.cursor().execute("select %s, %s", (2, "y")).fetchall()
        assert rows == [(2, "y")]


def test_hostile_string_parameter_stays_data(local_snowflake: LocalSnowflake) -> None:
    hostile = "x'); drop table t; --"
    with connect(local_snowflake.connection_parameters, paramstyle="qmark") as conn:
        assert conn.cursor().execute("select ?", [hostile]).fetchone() == (hostile,)


def test_dml_pandas_and_arrow(local_snowflake: LocalSnowflake) -> None:
    table = f"t_{uuid.uuid4().hex[:8]}"
    with connect(local_snowflake.connection_parameters) as conn:
        cur = conn.cursor()
        cur.execute(f"create table {table} (a int, b varchar)")
        cur.execute(f"insert into {table} values (1, 'a'), (2, 'b'), (3, null)")
        assert cur.rowcount == 3
        df = cur.execute(f"select * from {table} order by a").fetch_pandas_all()
        assert list(df.columns) == ["A", "B"]
        assert df["A"].tolist() == [1, 2, 3]
        arrow = cur.execute(f"select * from {table} order by a").fetch_arrow_all()
        assert arrow.num_rows == 3
        assert arrow.column("B").to_pylist() == ["a", "b", None]


def test_execute_async_status_and_result(local_snowflake: LocalSnowflake) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        cur = conn.cursor()
        cur.execute_async("select system$wait(200, 'MILLISECONDS')")
        qid = cur.sfqid
        assert conn.is_still_running(conn.get_query_status(qid))
        cur.get_results_from_sfqid(qid)
        assert cur.fetchall() == [("waited 200 milliseconds",)]
        assert conn.get_query_status(qid).name == "SUCCESS"


def test_abort_by_query_id_really_stops_the_query(local_snowflake: LocalSnowflake) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        cur = conn.cursor()
        cur.execute_async("select system$wait(30)")
        qid = cur.sfqid
        raw = RawClient(local_snowflake.url)
        try:
            # Same user, another session: Snowflake lets a user abort their own queries.
            assert raw.post(f"/queries/{qid}/abort-request", {})["success"]
        finally:
            raw.logout()
        assert local_snowflake.query(qid)["status"] == "ABORTED"
        assert conn.get_query_status(qid).name == "ABORTED"
        # The statement really stopped (an ABORTED mark alone would not free its worker).
        assert local_snowflake.wait_until(lambda sf: sf.worker_stopped(qid), WORKER_STOPS)
        assert local_snowflake.query(qid)["abort_requests"] == 1


def test_abort_by_request_id_ends_a_sync_query_with_604(local_snowflake: LocalSnowflake) -> None:
    raw = RawClient(local_snowflake.url)
    request_id = str(uuid.uuid4())
    replies: list[dict[str, Any]] = []
    worker = threading.Thread(
        target=lambda: replies.append(raw.query("select system$wait(30)", request_id=request_id))
    )
    started = time.monotonic()
    worker.start()
    try:
        local_snowflake.wait_until(
            lambda sf: any(q["request_id"] == request_id for q in sf.running_queries())
        )
        raw.post("/queries/v1/abort-request", {"sqlText": "", "requestId": request_id})
        worker.join(10)
        assert not worker.is_alive()
        assert time.monotonic() - started < 10  # far from the 30 s it would have run
        assert replies[0]["success"] is False
        assert replies[0]["code"] == "000604"
        assert replies[0]["data"]["sqlState"] == "57014"
    finally:
        worker.join(30)
        raw.logout()


def test_abort_before_the_query_arrives_still_aborts_it(local_snowflake: LocalSnowflake) -> None:
    raw = RawClient(local_snowflake.url)
    try:
        request_id = str(uuid.uuid4())
        raw.post("/queries/v1/abort-request", {"sqlText": "", "requestId": request_id})
        reply = raw.query("select system$wait(30)", request_id=request_id)
        assert reply["code"] == "000604"
    finally:
        raw.logout()


@pytest.mark.skipif(CONNECTOR_MAJOR >= 5, reason="4.x API: _cancel_query with a chosen requestId")
def test_connector4_cancel_by_request_id(local_snowflake: LocalSnowflake) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        request_id = str(uuid.uuid4())
        errors: list[BaseException] = []

        def run() -> None:
            try:
                conn.cursor().execute(
                    "select system$wait(30)", _statement_params={"requestId": request_id}
                )
            except BaseException as e:
                errors.append(e)

        worker = threading.Thread(target=run)
        worker.start()
        local_snowflake.wait_until(
            lambda sf: any(q["request_id"] == request_id for q in sf.running_queries())
        )
        conn._cancel_query("select system$wait(30)", uuid.UUID(request_id))
        worker.join(10)
        assert not worker.is_alive()
        assert isinstance(errors[0], ProgrammingError)
        assert errors[0].errno == 604


def test_system_wait_aborted_by_system_cancel_query(local_snowflake: LocalSnowflake) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        cur = conn.cursor()
        cur.execute_async("select system$wait(30)")
        victim = cur.sfqid
        other = conn.cursor()
        other.execute_async("select system$wait(30)")
        bystander = other.sfqid
        reply = conn.cursor().execute(f"select system$cancel_query('{victim}')").fetchone()
        assert reply == (f"query [{victim}] terminated.",)
        assert local_snowflake.query(victim)["status"] == "ABORTED"
        assert local_snowflake.wait_until(lambda sf: sf.worker_stopped(victim), WORKER_STOPS)
        # Only that query's wait was interrupted.
        assert local_snowflake.query(bystander)["status"] == "RUNNING"
        assert not local_snowflake.worker_stopped(bystander)
        conn.cursor().execute(f"select system$cancel_all_queries({conn.session_id})")
        assert local_snowflake.query(bystander)["status"] == "ABORTED"
        assert local_snowflake.wait_until(lambda sf: sf.worker_stopped(bystander), WORKER_STOPS)


def test_wait_inside_a_larger_statement_is_interruptible(local_snowflake: LocalSnowflake) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        cur = conn.cursor()
        cur.execute_async("select system$wait(30) as w, 1 as x")
        qid = cur.sfqid
        local_snowflake.wait_until(lambda sf: sf.query(qid)["status"] == "RUNNING")
        conn.cursor().execute(f"select system$cancel_query('{qid}')")
        assert local_snowflake.query(qid)["status"] == "ABORTED"
        # Guarantee (the emulator's "aborts really stop queries"): the wait inside DuckDB
        # polls its cancel flag, so the statement ends and its SQL thread is free again.
        assert local_snowflake.wait_until(lambda sf: sf.worker_stopped(qid), WORKER_STOPS)


def test_a_wait_inside_duckdb_keeps_literals_and_its_column_name(
    local_snowflake: LocalSnowflake,
) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        cur = conn.cursor().execute("select 'system$wait(5)' as t, system$wait(0.01), 1 as x")
        assert cur.fetchall() == [("system$wait(5)", "waited 0.01 seconds", 1)]
        assert [d.name for d in cur.description] == ["T", '"system$wait"(0.01)', "X"]


def test_an_aborted_cpu_bound_duckdb_statement_frees_its_worker(
    local_snowflake: LocalSnowflake,
) -> None:
    """Guarantee: an abort interrupts a DuckDB statement itself (not only its status)."""
    with connect(local_snowflake.connection_parameters) as conn:
        cur = conn.cursor()
        cur.execute_async("select max(hash(range)) from range(1000000000000)")
        qid = cur.sfqid
        local_snowflake.wait_until(lambda sf: sf.query(qid)["status"] == "RUNNING")
        conn.cursor().execute(f"select system$cancel_query('{qid}')")
        assert local_snowflake.query(qid)["status"] == "ABORTED"
        assert local_snowflake.wait_until(lambda sf: sf.worker_stopped(qid), WORKER_STOPS)


@pytest.mark.parametrize(
    "sql",
    ["select system$wait(30)", "select system$wait(30) as w, 1 as x"],
    ids=["light", "duckdb"],
)
def test_an_aborted_system_wait_frees_its_worker_by_either_route(
    local_snowflake: LocalSnowflake, sql: str
) -> None:
    """Guarantee: an aborted ``SYSTEM$WAIT`` stops waiting, answered by the emulator itself
    (light) or inside a DuckDB statement; its status alone would say ABORTED at once."""
    raw = RawClient(local_snowflake.url)
    try:
        by_id = raw.query(sql, async_exec=True)["data"]["queryId"]
        request_id = str(uuid.uuid4())
        worker = threading.Thread(target=lambda: raw.query(sql, request_id=request_id))
        worker.start()
        by_request = local_snowflake.wait_until(
            lambda sf: next(
                (q["query_id"] for q in sf.running_queries() if q["request_id"] == request_id),
                None,
            )
        )
        assert not local_snowflake.worker_stopped(by_id)
        raw.post(f"/queries/{by_id}/abort-request", {})
        raw.post("/queries/v1/abort-request", {"sqlText": sql, "requestId": request_id})
        worker.join(WORKER_STOPS)
        assert not worker.is_alive()
        assert isinstance(by_request, str)
        for qid in (by_id, by_request):

            def stopped(sf: LocalSnowflake, q: str = qid) -> bool:
                return sf.worker_stopped(q)

            assert local_snowflake.wait_until(stopped, WORKER_STOPS)
            described = local_snowflake.query(qid)
            assert described["status"] == "ABORTED"
            assert described["worker_end_time"] - described["end_time"] < WORKER_STOPS
        counts = local_snowflake.abort_requests()
        assert counts["by_query"][by_id] == 1
        assert counts["by_query"][by_request] == 1
        assert counts["by_request_id"][request_id] == 1
    finally:
        worker.join(30)
        raw.logout()


def test_abort_requests_are_counted_per_query_and_per_request_id(
    local_snowflake: LocalSnowflake,
) -> None:
    raw = RawClient(local_snowflake.url)
    try:
        qid = raw.query("select system$wait(30)", async_exec=True)["data"]["queryId"]
        for _ in range(3):  # a second and third abort of an ended query are still received
            raw.post(f"/queries/{qid}/abort-request", {})
        early = str(uuid.uuid4())  # an abort before its query arrives counts for that query
        raw.post("/queries/v1/abort-request", {"sqlText": "", "requestId": early})
        raw.post("/queries/v1/abort-request", {"sqlText": "", "requestId": early})
        assert raw.query("select system$wait(30)", request_id=early)["code"] == "000604"
        (late,) = [q for q in local_snowflake.queries() if q["request_id"] == early]
        counts = local_snowflake.abort_requests()
        assert counts["by_query"][qid] == 3
        assert counts["by_request_id"][early] == 2
        assert counts["by_query"][late["query_id"]] == 1  # the query saw one (pre-)abort
        assert late["worker_stopped"]  # it never ran
    finally:
        raw.logout()


def test_concurrent_waits_on_one_connection_overlap(local_snowflake: LocalSnowflake) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        tag = f"overlap-{uuid.uuid4().hex[:8]}"
        conn.cursor().execute(f"alter session set query_tag = '{tag}'")
        threads = [
            threading.Thread(target=lambda: conn.cursor().execute("select system$wait(1)"))
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        waits = [
            q
            for q in local_snowflake.queries()
            if q["query_tag"] == tag and "system$wait" in q["sql_text"]
        ]
        assert len(waits) == 8
        assert all(q["status"] == "SUCCESS" for q in waits)
        # All eight were running at the same moment: the last start precedes the first end.
        assert max(q["start_time"] for q in waits) < min(q["end_time"] for q in waits)


def test_statement_timeout_really_aborts(local_snowflake: LocalSnowflake) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        cur = conn.cursor()
        cur.execute("alter session set statement_timeout_in_seconds = 1")
        with pytest.raises(ProgrammingError) as info:
            cur.execute("select system$wait(30)")
        assert info.value.errno == 630
        assert info.value.sqlstate == "57014"
        assert "timeout" in (info.value.msg or "")


def test_last_query_id_and_query_history(local_snowflake: LocalSnowflake) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        cur = conn.cursor()
        cur.execute("alter session set query_tag = 'history-test'")
        cur.execute("select 42")
        ok = cur.sfqid
        assert cur.execute("select last_query_id()").fetchone() == (ok,)
        with pytest.raises(ProgrammingError):
            cur.execute("select * from no_such_table_here")
        failed = cur.sfqid
        running = conn.cursor()
        running.execute_async("select system$wait(30)")
        try:
            rows = cur.execute(
                "select query_id, query_text, execution_status, query_tag, start_time, end_time "
                "from table(information_schema.query_history_by_session()) "
                "where query_tag = 'history-test' order by start_time"
            ).fetchall()
            status = {r[0]: r[2] for r in rows}
            assert status[ok] == "SUCCESS"
            assert status[failed] == "FAILED_WITH_ERROR"
            assert status[running.sfqid] == "RUNNING"
            assert all(r[3] == "history-test" for r in rows)
        finally:
            conn.cursor().execute(f"select system$cancel_query('{running.sfqid}')")


def test_errors_are_snowflake_errors_not_http_500(local_snowflake: LocalSnowflake) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        cur = conn.cursor()
        started = time.monotonic()
        with pytest.raises(ProgrammingError) as info:
            cur.execute("select no_such_function(1)")
        assert info.value.errno == 2003
        with pytest.raises(ProgrammingError) as info:
            cur.execute("selec 1")
        assert info.value.errno in (1003, 2003)
        # An HTTP 500 would have made the connector retry for seconds.
        assert time.monotonic() - started < 5


def test_malformed_requests_get_4xx(local_snowflake: LocalSnowflake) -> None:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        local_snowflake.url + "/session/v1/login-request", data=b"{nope", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 400
    assert b"JSON" in info.value.read()


def test_wrong_password_is_refused(local_snowflake: LocalSnowflake) -> None:
    params = {**local_snowflake.connection_parameters, "password": "wrong"}
    with pytest.raises(DatabaseError) as info:
        connect(params)
    assert "390100" in str(info.value) or info.value.errno == 390100


# ---- fault injection ------------------------------------------------------------


def test_latency_is_added_to_every_request(shared_emulator: LocalSnowflake) -> None:
    emulator = shared_emulator
    with connect(emulator.connection_parameters) as conn:
        emulator.set_latency(150)
        started = time.monotonic()
        conn.cursor().execute("select 1")
        assert time.monotonic() - started >= 0.15
        emulator.set_latency(0)


def test_injected_faults_are_retried_and_counted(shared_emulator: LocalSnowflake) -> None:
    emulator = shared_emulator
    with connect(emulator.connection_parameters) as conn:
        emulator.fail_next("/queries/v1/query-request", status=503, count=2)
        cur = conn.cursor()
        assert cur.execute("select 7").fetchone() == (7,)
        # Both injected failures fired, on that query's request (resolved by request id).
        counts = emulator.fault_counts()
        (rule,) = counts["rules"]
        assert (rule["route"], rule["status"], rule["count"]) == (
            "/queries/v1/query-request",
            503,
            2,
        )
        assert (rule["fired"], rule["remaining"]) == (2, 0)
        assert counts["fired_by_route"] == {"/queries/v1/query-request": 2}
        assert counts["fired_by_query"] == {cur.sfqid: 2}
        assert sum(counts["fired_by_request_id"].values()) == 2
        emulator.clear_faults()
        assert emulator.fault_counts()["rules"] == []
    # A fault on a route with the query id in its path counts for that query.
    raw = RawClient(emulator.url)
    try:
        qid = raw.query("select system$wait(30)", async_exec=True)["data"]["queryId"]
        emulator.fail_next("abort-request", status=503, count=1)
        with pytest.raises(urllib.error.HTTPError):
            raw.post(f"/queries/{qid}/abort-request", {})
        assert raw.post(f"/queries/{qid}/abort-request", {})["success"]
        counts = emulator.fault_counts()
        assert counts["fired_by_query"] == {qid: 1}
        assert counts["rules"][0]["fired"] == 1
        # The failed one never reached the abort route: the server received one abort.
        assert emulator.abort_requests()["by_query"][qid] == 1
    finally:
        raw.logout()


def test_blackholed_route_never_answers(shared_emulator: LocalSnowflake) -> None:
    emulator = shared_emulator
    raw = RawClient(emulator.url)
    emulator.blackhole("/queries/v1/query-request")
    with pytest.raises(OSError, match="timed out"):  # the client's own timeout fires
        raw.query("select 1", timeout=0.5)
    emulator.clear_faults()
    assert raw.query("select 1")["success"]
    raw.logout()


def test_expired_tokens_are_renewed_by_the_connector(emulator: LocalSnowflake) -> None:
    with connect(emulator.connection_parameters) as conn:
        assert emulator.expire_tokens() == 1
        assert conn.cursor().execute("select 3").fetchone() == (3,)


def test_kill_and_restart(emulator: LocalSnowflake) -> None:
    old = connect(emulator.connection_parameters)
    emulator.kill()
    assert not emulator.is_running
    started = time.monotonic()
    with pytest.raises(Error):
        connect(emulator.connection_parameters, login_timeout=5)
    assert time.monotonic() - started < 60  # a clear error, not a hang
    emulator.restart()
    with connect(emulator.connection_parameters) as fresh:
        assert fresh.cursor().execute("select 1").fetchone() == (1,)
    # The restarted server does not know the old session (its state is new).
    assert [s["session_id"] for s in emulator.sessions()] == []
    with pytest.raises(Error):
        old.cursor().execute("select 1")
    with contextlib.suppress(Error):
        old.close()


def test_system_wait_in_a_duckdb_statement_and_in_a_string(
    local_snowflake: LocalSnowflake,
) -> None:
    with connect(local_snowflake.connection_parameters) as conn:
        cur = conn.cursor()
        row = cur.execute(
            "select 'select system$wait(' as text, 'it''s system$wait(1)' as other "
            "where system$wait(0.01) is not null"
        ).fetchone()
        assert row == ("select system$wait(", "it's system$wait(1)")
