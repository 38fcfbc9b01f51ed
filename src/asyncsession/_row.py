"""``Row``: a tuple with column names, like ``snowflake.snowpark.Row``.

Rows are built by the million, so a row stores nothing but its values: the column
names live on a small per-column-list subclass (cached), shared by every row of a
result. ``type(row)`` is therefore a subclass of :class:`Row` named ``Row``;
``isinstance(row, Row)`` holds and equality and hashing are those of the tuple.

Snowpark semantics kept: ``row[i]``/``row[a:b]``, ``row["NAME"]`` (``KeyError`` if
unknown), ``row.NAME`` (``AttributeError`` if unknown), case-sensitive names, the first
of duplicate names wins for key/attribute access, ``as_dict()`` refuses rows without
names or with duplicates (``TypeError``), ``"NAME" in row`` tests the names of a named
row (values for an unnamed one), ``repr`` is ``Row(A=1, B='x')``. Unlike Snowpark a
slice keeps the sliced names.

``RowBatch``: a batch of rows (``to_row_batches()``) that keeps the driver's plain tuples
and makes each ``Row`` only when it is read: a whole batch of live Rows (GC-tracked
objects) set off full garbage collections again and again.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar, SupportsIndex, TypeVar, overload

__all__ = ["Row", "RowBatch"]

_R = TypeVar("_R", bound="Row")

# Per-field-tuple subclasses: by the tuple itself, and by id() for a fast path that
# does not hash every name of the tuple on each row (the entry keeps the tuple alive,
# so its id cannot be reused while cached). Cleared when it grows past the limit;
# rows keep their class alive, so clearing only costs re-creating classes.
_CACHE_LIMIT = 1024
_by_fields: dict[tuple[str, ...], type[Row]] = {}
_by_id: dict[int, tuple[tuple[str, ...], type[Row]]] = {}
_cache_lock = threading.Lock()


def _row_class(fields: tuple[str, ...]) -> type[Row]:
    hit = _by_id.get(id(fields))
    if hit is not None and hit[0] is fields:
        return hit[1]
    with _cache_lock:
        cls = _by_fields.get(fields)
        if cls is None:
            if not isinstance(fields, tuple) or not all(isinstance(f, str) for f in fields):
                raise TypeError("Row fields must be a tuple of str")
            if len(_by_fields) >= _CACHE_LIMIT:
                _by_fields.clear()
                _by_id.clear()
            index: dict[str, int] = {}
            for i, name in enumerate(fields):
                index.setdefault(name, i)
            cls = type(
                "Row",
                (Row,),
                {
                    "__slots__": (),
                    "__module__": Row.__module__,
                    "__qualname__": "Row",
                    "_fields": fields,
                    "_index": index,
                    "_has_duplicates": len(index) != len(fields),
                },
            )
            _by_fields[fields] = cls
        if len(_by_id) >= _CACHE_LIMIT:
            _by_id.clear()
        _by_id[id(fields)] = (fields, cls)
        return cls


def _restore_row(values: tuple[Any, ...], fields: tuple[str, ...] | None) -> Row:
    """Unpickling entry point (keep the name: pickles refer to it)."""
    if not fields:
        return tuple.__new__(Row, values)
    return Row._from_values(values, tuple(fields))


class Row(tuple[Any, ...]):
    """A result row: a tuple whose items can also be reached by column name.

    >>> row = Row(A=1, B="x")
    >>> row
    Row(A=1, B='x')
    >>> row[0], row["A"], row.B
    (1, 1, 'x')
    >>> row == (1, "x")
    True
    """

    __slots__ = ()

    _fields: ClassVar[tuple[str, ...]] = ()
    _index: ClassVar[dict[str, int]] = {}
    _has_duplicates: ClassVar[bool] = False

    def __new__(cls, *values: Any, **named_values: Any) -> Row:
        if values and named_values:
            raise ValueError("Either values or named_values is required but not both.")
        if named_values:
            return cls._from_values(tuple(named_values.values()), tuple(named_values))
        return tuple.__new__(cls, values)

    @classmethod
    def _from_values(cls, values: Sequence[Any], fields: tuple[str, ...]) -> Row:
        """A row of ``values`` named by ``fields`` (pass the same tuple for every row)."""
        if len(values) != len(fields):
            raise ValueError(f"{len(values)} values for {len(fields)} fields")
        return tuple.__new__(_row_class(fields), values)

    @classmethod
    def _factory(cls, fields: tuple[str, ...]) -> Callable[[Iterable[Any]], Row]:
        """A fast constructor for many rows with ``fields`` (no length check per row)."""
        # A partial of the C-level constructor: no Python frame per row.
        make: Callable[[Iterable[Any]], Row] = functools.partial(tuple.__new__, _row_class(fields))
        return make

    @classmethod
    def _batch_factory(cls, fields: tuple[str, ...]) -> Callable[[Iterable[Any]], list[Row]]:
        """Rows for a whole batch at once (no Python-level call per row)."""
        new = cls._factory(fields)

        def make_all(rows: Iterable[Any]) -> list[Row]:
            return list(map(new, rows))

        return make_all

    @overload
    def __getitem__(self, item: SupportsIndex) -> Any: ...
    @overload
    def __getitem__(self, item: slice) -> Row: ...
    @overload
    def __getitem__(self, item: str) -> Any: ...
    def __getitem__(self, item: SupportsIndex | slice | str) -> Any:
        if isinstance(item, str):
            index = type(self)._index.get(item)
            if index is None:
                raise KeyError(item)
            return tuple.__getitem__(self, index)
        if isinstance(item, slice):
            values = tuple.__getitem__(self, item)
            fields = self._fields
            if not fields:
                return tuple.__new__(Row, values)
            return Row._from_values(values, fields[item])
        return tuple.__getitem__(self, item)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails (tuple methods such as ``count`` win).
        index = type(self)._index.get(name)
        if index is None:
            raise AttributeError(f"Row object has no attribute {name}")
        return tuple.__getitem__(self, index)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Can't set attribute to Row object")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Can't delete attribute of Row object")

    def __contains__(self, item: object) -> bool:
        fields = self._fields
        if fields:
            return item in type(self)._index
        return tuple.__contains__(self, item)

    def __repr__(self) -> str:
        fields = self._fields
        if fields:
            return "Row({})".format(
                ", ".join(f"{k}={v!r}" for k, v in zip(fields, self, strict=False))
            )
        return "Row({})".format(", ".join(repr(v) for v in self))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_row, (tuple(self), self._fields or None))

    def __copy__(self) -> Row:
        return self

    def as_dict(self, recursive: bool = False) -> dict[str, Any]:
        """``{name: value}``; with ``recursive``, nested Rows, dicts and lists too.

        Raises ``TypeError`` for a row without names or with duplicate names.
        """
        fields = self._fields
        if not fields or self._has_duplicates:
            raise TypeError("Cannot convert a Row without key values or duplicated keys to a dict.")
        if not recursive:
            return dict(zip(fields, self, strict=False))
        return {k: _convert(v) for k, v in zip(fields, self, strict=False)}

    asDict = as_dict  # Snowpark / PySpark spelling


def _convert(obj: Any) -> Any:
    if isinstance(obj, Row):
        if obj._fields and not obj._has_duplicates:
            return obj.as_dict(True)
        return [_convert(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _convert(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_convert(x) for x in obj]
    return obj


#: Rows a ``RowBatch`` repr shows before ``...``.
_REPR_ROWS = 3


class RowBatch(Sequence[Row]):
    """An immutable batch of rows, as ``to_row_batches()`` hands them out.

    It holds the driver's plain tuples and makes a ``Row`` only when one is read
    (``batch[i]``, iteration): a ``Row`` from a batch is the same as one from
    ``collect()``. A slice is a ``RowBatch`` too (no Rows made). ``len()``, truth,
    ``in``, ``index()`` and ``count()`` work on the tuples. Equality compares rows, as
    ``Row`` does (by value, names ignored): a batch equals another batch or a list or
    tuple with equal rows. ``tuples()`` gives the plain tuples themselves (the fastest
    way through a batch) and ``fields`` the column names.

    >>> batch = RowBatch([(1, "x"), (2, "y")], ("A", "B"))
    >>> batch
    <RowBatch 2 rows (A, B): Row(A=1, B='x'), Row(A=2, B='y')>
    >>> batch[1].B, len(batch), batch == [Row(A=1, B="x"), (2, "y")]
    ('y', 2, True)
    >>> batch.tuples()
    ((1, 'x'), (2, 'y'))
    """

    __slots__ = ("_fields", "_make", "_rows")

    _rows: tuple[tuple[Any, ...], ...]
    _fields: tuple[str, ...]
    _make: Callable[[Iterable[Any]], Row]

    def __init__(self, rows: Iterable[Iterable[Any]] = (), fields: Iterable[str] = ()) -> None:
        """A batch of ``rows`` (each an iterable of values) named by ``fields``.

        With ``fields`` every row must have one value per name (``ValueError``); without,
        its rows are unnamed (as ``Row(1, 2)``).
        """
        names = tuple(fields)
        values = tuple(map(tuple, rows))
        if names:
            for row in values:
                if len(row) != len(names):
                    raise ValueError(f"{len(row)} values for {len(names)} fields")
        self._init(values, names, Row._factory(names) if names else _unnamed_row)

    @classmethod
    def _of(
        cls, rows: Sequence[Any], fields: tuple[str, ...], make: Callable[[Iterable[Any]], Row]
    ) -> RowBatch:
        """A batch over the driver's row tuples, with ``make = Row._factory(fields)``
        shared by every batch of a result (no check per row)."""
        batch = object.__new__(cls)
        # A tuple, so that tuples() can hand it out and the batch stays immutable (the
        # copy is ~2 ns a row, against ~100 ns for making a Row).
        batch._init(tuple(rows), fields, make)
        return batch

    def _init(
        self,
        rows: tuple[tuple[Any, ...], ...],
        fields: tuple[str, ...],
        make: Callable[[Iterable[Any]], Row],
    ) -> None:
        object.__setattr__(self, "_rows", rows)
        object.__setattr__(self, "_fields", fields)
        object.__setattr__(self, "_make", make)

    @property
    def fields(self) -> tuple[str, ...]:
        """The column names (``()`` for unnamed rows)."""
        return self._fields

    def tuples(self) -> tuple[tuple[Any, ...], ...]:
        """The rows as the driver's plain tuples (no ``Row`` made): the fastest access."""
        return self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def __bool__(self) -> bool:
        return bool(self._rows)

    @overload
    def __getitem__(self, index: SupportsIndex) -> Row: ...
    @overload
    def __getitem__(self, index: slice) -> RowBatch: ...
    def __getitem__(self, index: SupportsIndex | slice) -> Row | RowBatch:
        if isinstance(index, slice):
            return RowBatch._of(self._rows[index], self._fields, self._make)
        return self._make(self._rows[index])

    def __iter__(self) -> Iterator[Row]:
        # map() calls the C-level factory without a Python frame per row.
        return map(self._make, self._rows)

    def __reversed__(self) -> Iterator[Row]:
        return map(self._make, reversed(self._rows))

    # A Row equals the tuple of its values, so these need no Rows.
    def __contains__(self, value: object) -> bool:
        return value in self._rows

    def index(self, value: Any, start: int = 0, stop: int = sys.maxsize) -> int:
        return self._rows.index(value, start, stop)

    def count(self, value: Any) -> int:
        return self._rows.count(value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, RowBatch):
            return self._rows == other._rows
        if isinstance(other, tuple):
            return self._rows == other
        if isinstance(other, list):
            return len(self._rows) == len(other) and self._rows == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        # Equal to a tuple of the same rows, so it hashes as that tuple.
        return hash(self._rows)

    def __repr__(self) -> str:
        n = len(self._rows)
        head = f"<RowBatch {n} row{'' if n == 1 else 's'}"
        if self._fields:
            head += f" ({', '.join(self._fields)})"
        if not n:
            return head + ">"
        shown = ", ".join(repr(row) for row in self[:_REPR_ROWS])
        return f"{head}: {shown}{', ...' if n > _REPR_ROWS else ''}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (RowBatch, (self._rows, self._fields))

    def __copy__(self) -> RowBatch:
        return self

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Can't set attribute to RowBatch object")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Can't delete attribute of RowBatch object")


_unnamed_row: Callable[[Iterable[Any]], Row] = functools.partial(tuple.__new__, Row)

# Shown under its public name (``asyncsession`` imports this module on first use, see
# __init__.py), also when this module is imported before that name is looked up.
Row.__module__ = RowBatch.__module__ = "asyncsession"
