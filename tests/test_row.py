"""Tests for asyncsession._row.Row: Snowpark-like access on a plain tuple."""

from __future__ import annotations

import copy
import pickle
import sys

import pytest

from asyncsession import _row
from asyncsession._row import Row

FIELDS = ("A", "B", "C")


def make(*values: object, fields: tuple[str, ...] = FIELDS) -> Row:
    return Row._from_values(values, fields)


def test_positional_access() -> None:
    row = make(1, "x", None)
    assert row[0] == 1
    assert row[-1] is None
    assert list(row) == [1, "x", None]
    assert len(row) == len(FIELDS)
    a, b, c = row
    assert (a, b, c) == (1, "x", None)
    with pytest.raises(IndexError):
        row[3]


def test_index_accepts_index_objects() -> None:
    class Two:
        def __index__(self) -> int:
            return 2

    assert make(1, 2, 3)[Two()] == 3
    with pytest.raises(TypeError):
        make(1, 2, 3)[1.0]  # type: ignore[call-overload]


def test_slice_keeps_names() -> None:
    row = make(1, "x", None)
    part = row[1:]
    assert isinstance(part, Row)
    assert part.B == "x"
    assert part == ("x", None)
    assert repr(part) == "Row(B='x', C=None)"
    assert repr(row[::-1]) == "Row(C=None, B='x', A=1)"
    assert repr(Row(1, 2, 3)[:2]) == "Row(1, 2)"


def test_key_access() -> None:
    row = make(1, "x", None)
    assert row["A"] == 1
    assert row["C"] is None
    with pytest.raises(KeyError, match="'a'"):
        row["a"]  # names are case-sensitive, like Snowpark
    with pytest.raises(KeyError):
        Row(1, 2)["A"]


def test_attribute_access() -> None:
    row = make(1, "x", None)
    assert row.A == 1
    assert row.B == "x"
    with pytest.raises(AttributeError, match="no attribute D"):
        row.D  # noqa: B018
    with pytest.raises(AttributeError):
        Row(1).A  # noqa: B018
    assert getattr(make(5, fields=("odd name",)), "odd name") == 5


def test_tuple_methods_win_over_fields() -> None:
    row = make(1, 2, fields=("COUNT", "count"))
    assert row["count"] == 2
    assert row.count(1) == 1  # the tuple method, as in Snowpark
    assert row.COUNT == 1


def test_duplicate_names() -> None:
    row = make(1, 2, 3, fields=("A", "B", "A"))
    assert row[2] == 3
    assert row["A"] == 1
    assert row.A == 1
    assert repr(row) == "Row(A=1, B=2, A=3)"
    with pytest.raises(TypeError, match="duplicated keys"):
        row.as_dict()


def test_as_dict() -> None:
    inner = make(3, fields=("X",))
    row = make(1, inner, [inner, {"k": inner}], fields=("A", "B", "C"))
    assert row.as_dict() == {"A": 1, "B": inner, "C": [inner, {"k": inner}]}
    assert row.as_dict(recursive=True) == {"A": 1, "B": {"X": 3}, "C": [{"X": 3}, {"k": {"X": 3}}]}
    assert row.asDict(True) == row.as_dict(True)
    assert Row.asDict is Row.as_dict
    with pytest.raises(TypeError):
        Row(1, 2).as_dict()
    d = row.as_dict()
    d["A"] = 99
    assert row.A == 1


def test_repr() -> None:
    assert repr(make(1, "x", None)) == "Row(A=1, B='x', C=None)"
    assert repr(Row(1, "x")) == "Row(1, 'x')"
    assert repr(Row()) == "Row()"
    assert str(Row(A=1)) == "Row(A=1)"


def test_equality_and_hash_are_the_tuples() -> None:
    row = make(1, "x", None)
    assert row == (1, "x", None)
    assert row == make(1, "x", None, fields=("P", "Q", "R"))  # names do not count
    assert row != (1, "x")
    assert hash(row) == hash((1, "x", None))
    lookup: dict[tuple[object, ...], int] = {row: 1}
    assert lookup[(1, "x", None)] == 1
    assert Row(A=1, B=2) == Row(1, 2)
    assert sorted([make(2, 0, 0), make(1, 0, 0)])[0].A == 1


def test_constructor_like_snowpark() -> None:
    named = Row(NAME="n", AGE=3)
    assert named.NAME == "n"
    assert named["AGE"] == 3
    assert Row(1, 2)[1] == 2
    with pytest.raises(ValueError, match="not both"):
        Row(1, A=2)


def test_contains_like_snowpark() -> None:
    assert "A" in make(1, 2, 3)  # a named row: membership of the names
    assert 1 not in make(1, 2, 3)
    assert 1 in Row(1, 2)  # an unnamed row: membership of the values


def test_immutable() -> None:
    row = make(1, 2, 3)
    with pytest.raises(AttributeError):
        row.A = 5
    with pytest.raises(AttributeError):
        row.new = 5
    with pytest.raises(AttributeError):
        del row.A
    with pytest.raises(TypeError):
        row[0] = 5
    assert not hasattr(row, "__dict__")


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle(protocol: int) -> None:
    for row in (make(1, "x", [1, 2]), Row(1, 2), make(1, 2, fields=("A", "A")), Row()):
        back = pickle.loads(pickle.dumps(row, protocol=protocol))
        assert back == row
        assert repr(back) == repr(row)
        assert isinstance(back, Row)
        assert back._fields == row._fields
    named = pickle.loads(pickle.dumps(make(1, 2, 3), protocol=protocol))
    assert named.B == 2
    assert type(named) is type(make(0, 0, 0))


def test_copy() -> None:
    row = make(1, [2], 3)
    assert copy.copy(row) is row
    deep = copy.deepcopy(row)
    assert deep == row
    assert deep.B is not row.B
    assert deep.B == [2]


def test_rows_share_one_class_per_field_tuple() -> None:
    fields = ("X", "Y")
    same = tuple(["X", "Y"])  # equal but (maybe) another object
    r1 = Row._from_values((1, 2), fields)
    r2 = Row._from_values([3, 4], fields)
    r3 = Row._from_values((5, 6), same)
    assert type(r1) is type(r2) is type(r3)
    assert type(r1).__name__ == "Row"
    assert isinstance(r1, Row)
    assert isinstance(r1, tuple)
    assert r1._fields is fields or r1._fields == fields


def test_no_per_row_overhead() -> None:
    row = make(1, 2, 3)
    assert sys.getsizeof(row) == sys.getsizeof((1, 2, 3))


def test_from_values_checks() -> None:
    with pytest.raises(ValueError, match="2 values for 3 fields"):
        Row._from_values((1, 2), FIELDS)
    with pytest.raises(TypeError):
        Row._from_values((1,), (1,))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Row._from_values((1,), ["A"])  # type: ignore[arg-type]


def test_factory() -> None:
    make_row = Row._factory(("A", "B"))
    rows = [make_row(v) for v in [(1, 2), (3, 4)]]
    assert rows[1].B == 4
    assert repr(rows[0]) == "Row(A=1, B=2)"
    assert type(rows[0]) is type(Row._from_values((0, 0), ("A", "B")))


def test_class_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_row, "_CACHE_LIMIT", 4)
    rows = [Row._from_values((i,), (f"F{i}",)) for i in range(20)]
    assert len(_row._by_fields) <= 4
    assert len(_row._by_id) <= 4
    assert [getattr(r, f"F{i}") for i, r in enumerate(rows)] == list(range(20))
    again = Row._from_values((7,), ("F7",))
    assert again.F7 == 7
    assert again == rows[7]


def test_many_rows() -> None:
    fields = tuple(f"C{i}" for i in range(20))
    rows = [Row._from_values(range(i, i + 20), fields) for i in range(20000)]
    assert rows[-1].C19 == 20018
    assert len({type(r) for r in rows}) == 1
