"""Tests for asyncsession._row: Row (Snowpark-like access on a plain tuple) and RowBatch."""

from __future__ import annotations

import copy
import doctest
import gc
import pickle
import sys
from collections.abc import Sequence

import pytest

from asyncsession import _row
from asyncsession._row import Row, RowBatch

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


# ---- RowBatch ---------------------------------------------------------------------------
TUPLES = [(1, "x", None), (2, "y", 2.5), (3, "z", None)]


def batch_of(
    rows: Sequence[tuple[object, ...]] = TUPLES, fields: tuple[str, ...] = FIELDS
) -> RowBatch:
    """As to_row_batches() makes them: the driver's list, one factory per result."""
    return RowBatch._of(list(rows), fields, Row._factory(fields))


def test_batch_items_are_the_rows_collect_makes() -> None:
    batch = batch_of()
    assert isinstance(batch, Sequence)
    assert len(batch) == 3
    first = batch[0]
    assert type(first) is type(Row._batch_factory(FIELDS)([(0, 0, 0)])[0])
    assert first.A == 1
    assert batch[-1]["B"] == "z"
    assert [row.A for row in batch] == [1, 2, 3]
    assert all(isinstance(row, Row) for row in batch)
    assert [row.A for row in reversed(batch)] == [3, 2, 1]
    assert list(batch) == TUPLES
    with pytest.raises(IndexError):
        batch[3]
    with pytest.raises(TypeError):
        batch["A"]  # type: ignore[call-overload]


def test_batch_makes_rows_only_when_read() -> None:
    batch = batch_of([(i,) for i in range(1000)], ("ONLY_WHEN_READ",))
    row_class = type(batch[0])
    gc.collect()
    assert sum(1 for o in gc.get_objects() if type(o) is row_class) == 0
    assert batch.tuples()[5] == (5,)
    assert type(batch.tuples()[5]) is tuple


def test_batch_slices_are_batches() -> None:
    batch = batch_of()
    part = batch[1:]
    assert isinstance(part, RowBatch)
    assert part.fields == FIELDS
    assert part == TUPLES[1:]
    assert part[0].B == "y"
    assert batch[::-1].tuples() == tuple(reversed(TUPLES))
    assert not batch[5:]


def test_batch_len_bool_contains_index_count() -> None:
    batch = batch_of([(1,), (2,), (1,)], ("N",))
    assert batch
    assert not batch_of([])
    assert len(batch_of([])) == 0
    assert (2,) in batch
    assert Row(N=1) in batch
    assert (5,) not in batch
    assert batch.index((1,)) == 0
    assert batch.index((1,), 1) == 2
    with pytest.raises(ValueError, match="not in"):
        batch.index((5,))
    assert batch.count(Row(N=1)) == 2


def test_batch_equality_compares_rows() -> None:
    batch = batch_of()
    assert batch == batch_of()
    assert batch == TUPLES
    assert batch == tuple(TUPLES)
    assert batch == [Row._from_values(t, FIELDS) for t in TUPLES]
    assert TUPLES == batch  # noqa: SIM300 (the list side asks the batch)
    assert batch == batch_of(fields=("P", "Q", "R"))  # names do not count, as for a Row
    assert batch != TUPLES[:2]
    assert batch != [*TUPLES[:2], (3, "z", 0)]
    assert batch != batch[1:]
    assert batch != "abc"
    assert batch_of([]) == []
    assert hash(batch) == hash(tuple(TUPLES)) == hash(batch_of())
    with pytest.raises(TypeError):
        hash(batch_of([([1],)], ("L",)))  # unhashable values, as in a tuple


def test_batch_repr() -> None:
    assert repr(batch_of()) == (
        "<RowBatch 3 rows (A, B, C): Row(A=1, B='x', C=None), Row(A=2, B='y', C=2.5), "
        "Row(A=3, B='z', C=None)>"
    )
    many = batch_of([(i,) for i in range(10_000)], ("N",))
    assert repr(many) == "<RowBatch 10000 rows (N): Row(N=0), Row(N=1), Row(N=2), ...>"
    assert repr(many[:1]) == "<RowBatch 1 row (N): Row(N=0)>"
    assert repr(batch_of([], ("N", "S"))) == "<RowBatch 0 rows (N, S)>"
    assert repr(RowBatch([(1, 2)])) == "<RowBatch 1 row: Row(1, 2)>"
    assert repr(RowBatch()) == "<RowBatch 0 rows>"


def test_batch_constructor() -> None:
    batch = RowBatch([[1, "x"], (2, "y")], ["A", "B"])
    assert batch.fields == ("A", "B")
    assert batch.tuples() == ((1, "x"), (2, "y"))
    assert batch[0].B == "x"
    assert type(batch[0]) is type(Row._from_values((0, 0), ("A", "B")))
    unnamed = RowBatch([(1, 2)])
    assert unnamed.fields == ()
    assert unnamed[0] == Row(1, 2)
    assert unnamed[0]._fields == ()
    with pytest.raises(ValueError, match="1 values for 2 fields"):
        RowBatch([(1, 2), (3,)], ("A", "B"))
    with pytest.raises(TypeError):
        RowBatch([(1,)], (1,))  # type: ignore[arg-type]


def test_batch_immutable() -> None:
    batch = batch_of()
    with pytest.raises(AttributeError):
        batch._rows = ()  # type: ignore[misc]
    with pytest.raises(AttributeError):
        batch.new = 5  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        del batch._rows
    with pytest.raises(TypeError):
        batch[0] = Row(1, 2, 3)  # type: ignore[index]
    assert not hasattr(batch, "__dict__")
    assert isinstance(batch.tuples(), tuple)
    assert copy.copy(batch) is batch


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_batch_pickle(protocol: int) -> None:
    for batch in (batch_of(), batch_of([], ("N",)), RowBatch([(1, 2)]), RowBatch()):
        back = pickle.loads(pickle.dumps(batch, protocol=protocol))
        assert type(back) is RowBatch
        assert back == batch
        assert back.fields == batch.fields
        assert repr(back) == repr(batch)
    assert pickle.loads(pickle.dumps(batch_of()))[1].B == "y"


def test_batch_docstring_example() -> None:
    runner = doctest.DocTestRunner()
    for test in doctest.DocTestFinder().find(
        RowBatch, "RowBatch", module=False, globs={"Row": Row, "RowBatch": RowBatch}
    ):
        runner.run(test)
    assert runner.tries > 0
    assert runner.failures == 0
