"""The statement classifier and session-state tracking (pure functions: no server)."""

from __future__ import annotations

import pytest

from asyncsession._state import CHANGES, SessionState, classify, split_statements

NOTHING: frozenset[str] = frozenset()

CASES = [
    # (sql, changes, transaction effect)
    ("select 1", NOTHING, None),
    ("  \n\tSELECT * from t", NOTHING, None),
    ("-- a comment\nselect 1", NOTHING, None),
    ("/* use schema x */ select 1", NOTHING, None),
    ("// snowflake comment\nselect 'use schema x; begin'", NOTHING, None),
    ("with x as (select 1) select * from x", NOTHING, None),
    ("insert into t values (1)", NOTHING, None),
    ("update t set a = 1", NOTHING, None),
    ("delete from t", NOTHING, None),
    ("merge into t using s on t.a = s.a when matched then delete", NOTHING, None),
    ("show tables", NOTHING, None),
    ("(select 1)", NOTHING, None),
    ("select 1;", NOTHING, None),
    ("select 1; -- trailing comment", NOTHING, None),
    # transaction control
    ("begin", NOTHING, "open"),
    ("BEGIN;", NOTHING, "open"),
    ("begin transaction", NOTHING, "open"),
    ("begin work", NOTHING, "open"),
    ("Begin Transaction Name t1", NOTHING, "open"),
    ("start transaction", NOTHING, "open"),
    ("  /* why */ begin", NOTHING, "open"),
    ("commit", NOTHING, "close"),
    ("COMMIT WORK", NOTHING, "close"),
    ("rollback", NOTHING, "close"),
    ("rollback work", NOTHING, "close"),
    # a Snowflake Scripting block is not a BEGIN
    ("begin\n  insert into t values (1);\nend;", frozenset({"unknown"}), None),
    ("declare x int; begin return x; end", frozenset({"unknown"}), None),
    # DDL commits implicitly and is not session state
    ("create table t (a int)", NOTHING, "close"),
    ("alter table t add column b int", NOTHING, "close"),
    ("drop table t", NOTHING, "close"),
    ("grant select on t to role r", NOTHING, "close"),
    ("create temporary table t (a int)", frozenset({"unknown"}), "close"),
    ("create or replace temp table t (a int)", frozenset({"unknown"}), "close"),
    # session state
    ("use schema x", frozenset({"schema"}), None),
    ("USE SCHEMA db.x", frozenset({"schema", "database"}), None),
    ('use schema "My Schema"', frozenset({"schema"}), None),
    ("use database d", frozenset({"database", "schema"}), None),
    ("use d", frozenset({"database", "schema"}), None),
    ("use warehouse wh", frozenset({"warehouse"}), None),
    ("use role r", frozenset({"role"}), None),
    ("use secondary roles all", frozenset({"role"}), None),
    ("alter session set query_tag = 'a; b'", frozenset({"query_tag"}), None),
    ("alter session unset query_tag", frozenset({"query_tag"}), None),
    ("alter session set timezone = 'UTC'", frozenset({"parameters"}), None),
    (
        "ALTER SESSION SET query_tag='x' timezone='UTC'",
        frozenset({"query_tag", "parameters"}),
        None,
    ),
    ("alter session unset timezone, query_tag", frozenset({"query_tag", "parameters"}), None),
    ("alter session set statement_timeout_in_seconds = 10", frozenset({"parameters"}), None),
    # what we cannot read surely
    ("call my_proc()", frozenset({"unknown"}), None),
    ("execute immediate 'use schema x'", frozenset({"unknown"}), None),
    ("set x = 1", frozenset({"unknown"}), None),
    ("unset x", frozenset({"unknown"}), None),
    ("select 1; select 2", frozenset({"unknown"}), None),
    ("begin; insert into t values (1); commit", frozenset({"unknown"}), "close"),
    ("insert into t values (1); begin", frozenset({"unknown"}), "open"),
    ("frobnicate everything", frozenset({"unknown"}), None),
]


@pytest.mark.parametrize(("sql", "changes", "transaction"), CASES)
def test_classify(sql: str, changes: frozenset[str], transaction: str | None) -> None:
    effect = classify(sql)
    assert (effect.changes, effect.transaction) == (changes, transaction), sql
    assert effect.changes <= CHANGES


def test_split_keeps_quoted_semicolons_and_drops_comments() -> None:
    sql = "select ';' as a, \"x;y\" -- c;\n; /* ; */ select $$ ; $$"
    assert split_statements(sql) == ["select  ''  as a, \"x;y\"", "select  ''"]
    assert split_statements("select 'it''s; here'") == ["select  ''"]
    assert split_statements("select 'unterminated; ") == ["select  ''"]


def test_a_long_statement_is_classified_quickly() -> None:
    sql = "insert into t values " + ", ".join(f"({i}, 'x;{i}')" for i in range(50_000))
    assert classify(sql).changes == NOTHING


def test_state_folds_effects() -> None:
    state = SessionState()
    assert not state.in_transaction
    assert state.changed == frozenset()
    for sql in ("select 1", "insert into t values (1)"):
        state.started(classify(sql))
        state.finished(classify(sql), True)
    assert state.changed == frozenset()
    begin = classify("begin")
    state.started(begin)
    state.finished(begin, True)
    assert state.in_transaction
    state.finished(classify("commit"), False)  # failed: maybe still open
    assert state.in_transaction
    state.finished(classify("create table t (a int)"), True)  # implicit commit
    assert not state.in_transaction
    state.started(classify("use schema x"))  # counts even if it never finishes
    assert state.changed == {"schema"}
    state.note("query_tag")
    assert state.changed == {"schema", "query_tag"}
    state.finished(classify("use schema x"), False)  # aborted: it may still land later
    assert state.changed == {"schema", "query_tag", "unknown"}
    state.reset()
    assert state.changed == frozenset()


def test_autocommit_off_makes_every_statement_open_a_transaction() -> None:
    effect = classify("alter session set autocommit = false")
    assert (effect.changes, effect.transaction, effect.autocommit) == (
        frozenset({"parameters"}),
        "close",
        False,
    )
    assert classify("ALTER SESSION SET AUTOCOMMIT=TRUE").autocommit is True
    assert classify("alter session unset autocommit").autocommit is True
    assert classify("alter session set timezone = 'UTC'").autocommit is None
    state = SessionState()
    state.finished(classify("alter session set autocommit = false"), True)
    state.finished(classify("select 1"), True)
    assert state.in_transaction
    state.finished(classify("commit"), True)
    assert not state.in_transaction
    state.finished(classify("insert into t values (1)"), False)
    assert state.in_transaction  # maybe ran: maybe open
    state.finished(classify("alter session set autocommit = true"), True)  # commits
    assert not state.in_transaction
    assert state.autocommit
    state.finished(classify("insert into t values (1)"), True)
    assert not state.in_transaction
    assert SessionState(autocommit=False).autocommit is False


def test_a_begin_of_unknown_outcome_counts_as_open() -> None:
    state = SessionState()
    state.finished(classify("begin"), False)  # cancelled mid-flight
    assert state.in_transaction
    state.finished(classify("rollback"), True)
    assert not state.in_transaction
