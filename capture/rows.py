"""Capture records as flat rows for profiling (``flatten``), and the dict
spreading shared with training data so both sides name nested fields alike.

Invariant: ``flatten`` never raises on a record's shape; what it cannot read
(rows that are not a list, features that are not a dict, ...) is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import chain
from operator import itemgetter
from typing import Any, NamedTuple

from capture.profile import DatasetProfile, _clean

MAX_PREDICTION_LIST = 16  # longer prediction lists (embeddings) stay one value
MAX_NESTING = 8  # dict levels spread into dotted columns; deeper stays a value


def spread(out: dict[str, Any], name: str, value: Any, depth: int = 1) -> None:
    """``out[name] = value``, a non-empty dict spread into ``name.key`` columns."""
    if isinstance(value, dict) and value and depth < MAX_NESTING:
        for k, v in value.items():
            spread(out, f"{name}.{k}", v, depth + 1)
    else:
        out[name] = value


#: Feature names that would collide with the row's own columns get "features." in front.
_RESERVED = frozenset(
    {"prediction", "score", "rank", "position", "item_id", "context", "lookups", "model"}
)
_RESERVED_PREFIXES = ("prediction.", "context.", "lookups.", "model.", "features.")
_ROW_FIELDS = ("score", "rank", "position", "item_id")


def feature_column(name: str) -> str:
    """The column of feature ``name``: itself, or ``features.<name>`` when it
    would collide with a row's own columns."""
    if name in _RESERVED or ("." in name and name.startswith(_RESERVED_PREFIXES)):
        return f"features.{name}"
    return name


def _prediction(out: dict[str, Any], value: Any) -> None:
    if isinstance(value, dict) and value:
        spread(out, "prediction", value, 0)
    elif isinstance(value, list) and 0 < len(value) <= MAX_PREDICTION_LIST:
        for i, v in enumerate(value):
            spread(out, f"prediction.{i}", v, 1)
    else:
        out["prediction"] = value


def _base(record: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The record's own columns (context, lookups, model.version), and whether
    it has context or lookups."""
    base: dict[str, Any] = {}
    for origin in ("context", "lookups"):
        level = record.get(origin)
        if isinstance(level, dict):
            for k, v in level.items():
                if type(v) is dict:
                    spread(base, f"{origin}.{k}", v, 1)
                else:  # what spread does, without the call
                    base[f"{origin}.{k}"] = v
    has_level = bool(base)
    model = record.get("model")
    if isinstance(model, dict) and model.get("version") is not None:
        base["model.version"] = model["version"]
    return base, has_level


def _tuples(keys: Sequence[Any]) -> Callable[[Any], tuple[Any, ...]]:
    """``itemgetter(*keys)`` that gives a tuple for any number of keys."""
    if len(keys) == 1:
        key = keys[0]
        return lambda obj: (obj[key],)
    return itemgetter(*keys) if keys else lambda obj: ()


_SCALAR_TYPES = frozenset({float, int, str, bool, type(None)})


def _scalars(values: Sequence[Any]) -> bool:
    """No value that ``flatten`` spreads as a prediction (a dict or a list)."""
    types = set(map(type, values))
    return types <= _SCALAR_TYPES or not any(issubclass(t, (dict, list)) for t in types)


class _Plan(NamedTuple):
    """How ``FlatColumns`` reads the rows of one shape of record."""

    shape: tuple[Any, ...]  # the record's column names, a row's keys, its features' names
    names: tuple[str, ...]  # the columns of a row tuple: the record's, the row's, features
    row: Callable[[Any], tuple[Any, ...]]  # a row's values, one per key of the shape
    fields: Callable[[tuple[Any, ...]], tuple[Any, ...]]  # prediction, score, ... of them
    prediction: bool  # the first field is the prediction
    features: Callable[[tuple[Any, ...]], Any] | None  # the features dict of them
    named: Callable[[Any], tuple[Any, ...]]  # a features dict's values, in the shape's order


def _plan(
    shape: tuple[tuple[Any, ...], tuple[Any, ...], tuple[Any, ...]],
    feature_name: Callable[[Any], str],
) -> _Plan | None:
    """The plan for records of ``shape`` (the record's column names, a row's
    keys, its features' names), or None if their rows need the value-by-value
    path: item lookups, names that are not strings, two values for one column."""
    own, keys, features = shape
    if "lookups" in keys or not all(type(k) is str for k in (*keys, *features)):
        return None
    fields = [k for k in ("prediction", *_ROW_FIELDS) if k in keys]
    feature_names = [feature_name(k) for k in features] if "features" in keys else []
    names = (*own, *fields, *feature_names)
    if len(set(names)) != len(names):
        return None
    at = {k: i for i, k in enumerate(keys)}
    return _Plan(
        shape=shape,
        names=names,
        row=_tuples(keys),
        fields=_tuples([at[k] for k in fields]),
        prediction="prediction" in keys,
        features=itemgetter(at["features"]) if "features" in keys else None,
        named=_tuples(features),
    )


class _Missing:
    """The value of a column in a row that lacks it (``None`` is a present null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
_NAMES_MAX = 10_000  # feature names remembered with their column name


class FlatColumns:
    """The flat rows of many records, kept as one list per column: what
    ``flatten`` gives, without a dict per row.

    ``add`` a record (the rows ``flatten`` describes), then read the batch
    with ``column``, ``profile`` (a ``DatasetProfile`` fed exactly what
    ``update_rows`` of the same rows would feed it) or ``to_rows``, and
    ``clear`` it. A column that some rows lack holds ``MISSING`` there (a
    present ``None`` stays ``None``); which column may is tracked, so full
    columns go to the profile untouched.

    >>> cols = FlatColumns()
    >>> cols.add({"model": {"version": "3"}, "context": {"user": "u1"},
    ...           "rows": [{"features": {"x": 1}}, {"features": {"x": 2, "y": "a"}}]})
    2
    >>> cols.column("x"), cols.column("y"), cols.column("context.user")
    ([1, 2], [None, 'a'], ['u1', 'u1'])
    """

    __slots__ = ("_cols", "_gaps", "_layout", "_names", "_plans", "_run", "rows")

    def __init__(self) -> None:
        self._cols: dict[str, list[Any]] = {}
        self._gaps: set[str] = set()  # columns that may hold MISSING
        self._names: dict[str, str] = {}  # feature name -> column name
        self._plans: dict[tuple[Any, ...], _Plan | None] = {}
        # Rows of alike records not yet in the columns: one tuple per row, the
        # values of the _layout's columns (see _add_alike).
        self._run: list[tuple[Any, ...]] = []
        self._layout: _Plan | None = None
        self.rows = 0

    def __len__(self) -> int:
        return self.rows

    def clear(self) -> None:
        self._cols = {}
        self._gaps = set()
        self._run = []
        self.rows = 0

    def _at(self, name: str, i: int) -> list[Any]:
        """Column ``name``, made to hold at least ``i`` values (MISSING for rows lacking it)."""
        col = self._cols.get(name)
        if col is None:
            col = self._cols[name] = [MISSING] * i
            if i:
                self._gaps.add(name)
        elif len(col) < i:
            col += [MISSING] * (i - len(col))
            self._gaps.add(name)
        return col

    def _put(self, i: int, name: str, value: Any) -> None:
        """Row ``i``'s value of ``name``; a later write to the same row wins."""
        col = self._at(name, i)
        if len(col) > i:  # written earlier for this row
            col[i] = value
        else:
            col.append(value)

    def _put_all(self, i: int, values: dict[str, Any]) -> None:
        for name, value in values.items():
            self._put(i, name, value)

    def _repeat(self, start: int, values: dict[str, Any], n: int) -> None:
        """``values`` in rows ``start .. start + n`` (columns hold ``start`` values before)."""
        for name, value in values.items():
            self._at(name, start).extend([value] * n)

    def _feature_name(self, key: Any) -> str:
        name = feature_column(key if type(key) is str else str(key))
        if type(key) is str:  # True == 1: only str keys are remembered
            if len(self._names) >= _NAMES_MAX:
                self._names.clear()
            self._names[key] = name
        return name

    def add(self, record: Any) -> int:
        """Append ``record``'s flat rows (see ``flatten``); how many there were."""
        if not isinstance(record, dict):
            return 0
        base, has_level = _base(record)
        n = self._add_alike(record, base)
        if n:
            return n
        self._flush()
        return self._add_rows(record, base, has_level)

    def _add_rows(self, record: dict[str, Any], base: dict[str, Any], has_level: bool) -> int:
        """Any record, value by value."""
        rows = record.get("rows")
        if not isinstance(rows, list):
            rows = []
        start = self.rows
        if not rows:
            if not has_level:
                return 0
            self._repeat(start, base, 1)
            self.rows = start + 1
            return 1
        # The record's values first, in as many rows as it has: a row's own
        # values (item lookups) then replace them where they collide.
        self._repeat(start, base, len(rows))
        cols = self._cols
        names = self._names
        i = start
        for row in rows:
            if not isinstance(row, dict):
                continue
            features = row.get("features")
            if isinstance(features, dict):
                for k, v in features.items():
                    key = names.get(k) if type(k) is str else None
                    if key is None:
                        key = self._feature_name(k)
                    if type(v) is dict:
                        flat: dict[str, Any] = {}
                        spread(flat, key, v, 1)
                        self._put_all(i, flat)
                        continue
                    col = cols.get(key)
                    if col is not None and len(col) == i:
                        col.append(v)
                    else:
                        self._put(i, key, v)
            if "prediction" in row:
                pred = row["prediction"]
                if isinstance(pred, (dict, list)):
                    flat = {}
                    _prediction(flat, pred)
                    self._put_all(i, flat)
                else:
                    self._put(i, "prediction", pred)
            for name in _ROW_FIELDS:
                if name in row:
                    col = cols.get(name)
                    if col is not None and len(col) == i:
                        col.append(row[name])
                    else:
                        self._put(i, name, row[name])
            item_lookups = row.get("lookups")
            if isinstance(item_lookups, dict):
                flat = {}
                for k, v in item_lookups.items():
                    spread(flat, f"lookups.{k}", v, 1)
                self._put_all(i, flat)
            i += 1
        n = i - start
        if n < len(rows):  # rows that are not dicts: the record's values were too many
            for name in base:
                del cols[name][start + n :]
            if not n:
                if not has_level:
                    return 0
                self._repeat(start, base, 1)
                n = 1
        self.rows = start + n
        return n

    def _add_alike(self, record: dict[str, Any], base: dict[str, Any]) -> int:
        """A record whose rows are alike (the same keys, features of the same
        names, no value to spread, no item lookups), appended to the run of such
        rows as tuples; 0, and nothing done, for any other record."""
        rows = record.get("rows")
        if type(rows) is not list or not rows or type(rows[0]) is not dict:
            return 0
        first = rows[0]
        features = first.get("features")
        if features is not None and type(features) is not dict:
            return 0
        shape = (tuple(base), tuple(first), () if features is None else tuple(features))
        plan = self._layout
        if plan is None or shape != plan.shape:
            plan = self._plans.get(shape)
            if plan is None:
                if shape in self._plans:
                    return 0
                if len(self._plans) >= _NAMES_MAX:
                    self._plans.clear()
                plan = self._plans[shape] = _plan(shape, self._feature_name)
                if plan is None:
                    return 0
        head = tuple(base.values())
        n = len(rows)
        if n == 1:  # the first row gave the shape: its keys are the plan's
            values = plan.row(first)
            fields = plan.fields(values)
            named = () if plan.features is None else plan.named(plan.features(values))
            if dict in map(type, named):
                return 0  # a value to spread
            if (
                plan.prediction
                and type(fields[0]) not in _SCALAR_TYPES
                and not _scalars(fields[:1])
            ):
                return 0
            tuples = [head + fields + named]
        else:
            try:
                if len(set(map(type, rows))) != 1 or len(set(map(len, rows))) != 1:
                    return 0
                values_n = list(map(plan.row, rows))  # KeyError: other keys
                fields_n = list(map(plan.fields, values_n))
                if plan.features is None:
                    tuples = [head + f for f in fields_n]
                else:
                    feats = list(map(plan.features, values_n))
                    if len(set(map(type, feats))) != 1 or len(set(map(len, feats))) != 1:
                        return 0
                    named_n = list(map(plan.named, feats))  # KeyError: other names
                    if dict in map(type, chain.from_iterable(named_n)):
                        return 0
                    tuples = [head + f + g for f, g in zip(fields_n, named_n, strict=True)]
            except (KeyError, TypeError):
                return 0
            if plan.prediction and not _scalars([f[0] for f in fields_n]):
                return 0
        if plan is not self._layout:
            self._flush()
            self._layout = plan
        self._run += tuples
        self.rows += n
        return n

    def _flush(self) -> None:
        """The run of alike rows into the columns."""
        run, plan = self._run, self._layout
        if not run or plan is None:
            return
        start = self.rows - len(run)
        for name, values in zip(plan.names, zip(*run, strict=True), strict=True):
            self._at(name, start).extend(values)
        self._run = []

    def _seal(self) -> None:
        """Every column as long as the batch (rows lacking it at the end: MISSING)."""
        self._flush()
        n = self.rows
        for name, col in self._cols.items():
            if len(col) < n:
                col += [MISSING] * (n - len(col))
                self._gaps.add(name)

    def column(self, name: str) -> list[Any] | None:
        """The values of one column, None where a row lacks it; None if no row has it."""
        self._seal()
        col = self._cols.get(name)
        if col is None:
            return None
        if name not in self._gaps:
            return col
        if col.count(MISSING) == len(col):
            return None
        return [None if v is MISSING else v for v in col]

    def _selected(self, rows: Sequence[int] | None) -> dict[str, list[Any]]:
        """Columns of the given rows (all when None), in name order, each with a
        value in at least one of them, MISSING made None."""
        self._seal()
        out: dict[str, list[Any]] = {}
        for name in sorted(self._cols):
            col = self._cols[name]
            if rows is not None:
                col = [col[j] for j in rows]
            if name in self._gaps:
                if col.count(MISSING) == len(col):
                    continue
                col = [None if v is MISSING else v for v in col]
            out[name] = col
        return out

    def profile(self, prof: DatasetProfile, rows: Sequence[int] | None = None) -> None:
        """``prof.update_rows`` of these rows (all, or those at the ``rows``
        indices, in that order), fed column-wise: the same values, in the same
        order, to the same columns."""
        n = self.rows if rows is None else len(rows)
        if not n:
            return
        columns = self._selected(rows)
        if all(k.isascii() or _clean(k) == k for k in columns):
            prof.update_columns(columns, n)
        else:
            # Names the profile rewrites (not NFC, lone surrogates): its own row
            # path. One difference from dicts built row by row: if a row holds
            # two names it makes one, the later column (not the later key of
            # that row) wins.
            prof.update_rows(self.to_rows(rows))

    def to_rows(self, rows: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """The rows as dicts (all, or those at the ``rows`` indices)."""
        self._seal()
        cols = self._cols.items()
        return [
            {name: col[j] for name, col in cols if col[j] is not MISSING}
            for j in (range(self.rows) if rows is None else rows)
        ]


def flatten(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per entry of ``record["rows"]``, for profiling.

    Columns: features under their own names (nested dicts as ``a.b``; a
    name that collides with the columns below as ``features.<name>``),
    ``prediction`` (a dict as ``prediction.<k>``, a list of at most
    ``MAX_PREDICTION_LIST`` as ``prediction.<i>``), ``score``, ``rank``,
    ``position``, ``item_id``, the item's lookups and the record's as
    ``lookups.<k>`` (the item's win), ``context.<k>`` and ``model.version``.
    A record without usable rows gives one row of its context and lookups,
    or nothing when it has neither. Odd shapes are skipped, never raised on.
    ``FlatColumns`` holds the same rows column-wise (this is built on it).

    >>> flatten({"model": {"version": "3"}, "context": {"user": "u1"},
    ...          "rows": [{"features": {"x": 1}, "prediction": {"p": 0.2}}]})
    [{'context.user': 'u1', 'model.version': '3', 'x': 1, 'prediction.p': 0.2}]
    """
    cols = FlatColumns()
    cols.add(record)
    return cols.to_rows()
