"""The emulator's SQL engine, the parts that are pure functions."""

from __future__ import annotations

import pytest

# The engine runs in the emulator's environment (fakesnow, connector 4.x) only.
pytest.importorskip("fakesnow")

from asyncsession.testing._engine import _with_query_id


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("select system$wait(1)", "select system$wait_for_query('Q', 1)"),
        ("select SYSTEM$WAIT (2) as w", "select system$wait_for_query('Q', 2) as w"),
        # Quoted text is data: a LIKE pattern or an identifier naming the call stays as is.
        (
            "select 1 from t where q like 'select system$wait(%' and system$wait(1) = 'x'",
            "select 1 from t where q like 'select system$wait(%' and "
            "system$wait_for_query('Q', 1) = 'x'",
        ),
        ("select 1 as \"system$wait(\", 'it''s system$wait('", None),
    ],
)
def test_wait_calls_get_their_query_id_outside_quotes(sql: str, expected: str | None) -> None:
    assert _with_query_id(sql, "Q") == (sql if expected is None else expected)
