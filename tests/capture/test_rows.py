"""``FlatColumns`` (records flattened straight into columns) against the row-wise
reference: the dict-per-row ``flatten`` it replaced, kept here as the oracle."""

from __future__ import annotations

import random
import unicodedata
from typing import Any

import pytest

from capture.profile import DatasetProfile
from capture.rows import (
    _RESERVED,
    _RESERVED_PREFIXES,
    _ROW_FIELDS,
    FlatColumns,
    _prediction,
    flatten,
    spread,
)


def reference_flatten(record: Any) -> list[dict[str, Any]]:
    """``capture.rows.flatten`` as it was before ``FlatColumns``: a dict per row."""
    if not isinstance(record, dict):
        return []
    base: dict[str, Any] = {}
    for origin in ("context", "lookups"):
        level = record.get(origin)
        if isinstance(level, dict):
            for k, v in level.items():
                spread(base, f"{origin}.{k}", v, 1)
    has_level = bool(base)
    model = record.get("model")
    if isinstance(model, dict) and model.get("version") is not None:
        base["model.version"] = model["version"]
    out: list[dict[str, Any]] = []
    rows = record.get("rows")
    for row in rows if isinstance(rows, list) else ():
        if not isinstance(row, dict):
            continue
        flat = dict(base)
        features = row.get("features")
        if isinstance(features, dict):
            for k, v in features.items():
                key = k if type(k) is str else str(k)
                if key in _RESERVED or ("." in key and key.startswith(_RESERVED_PREFIXES)):
                    key = f"features.{key}"
                if type(v) is dict:
                    spread(flat, key, v, 1)
                else:
                    flat[key] = v
        if "prediction" in row:
            pred = row["prediction"]
            if isinstance(pred, (dict, list)):
                _prediction(flat, pred)
            else:
                flat["prediction"] = pred
        for name in _ROW_FIELDS:
            if name in row:
                flat[name] = row[name]
        item_lookups = row.get("lookups")
        if isinstance(item_lookups, dict):
            for k, v in item_lookups.items():
                spread(flat, f"lookups.{k}", v, 1)
        out.append(flat)
    if not out and has_level:
        out.append(base)
    return out


def typed(rows: list[dict[str, Any]]) -> list[list[tuple[str, str]]]:
    """Rows compared with their types (1 == 1.0 == True for ``==``)."""
    return [sorted((k, f"{type(v).__name__}:{v!r}") for k, v in r.items()) for r in rows]


NAMES = ["x", "y", "price", "a.b", "a", "score", "rank", "context.u", "features.q", "é", "é"]
NAMES += ["model", "prediction.0", "lookups.z", "features", 1, True]


def scalar(rng: random.Random) -> Any:
    return rng.choice(
        [None, 0, 1, 2.5, float("nan"), True, "s", "é", 10**20, -3, "", [1, 2], rng.random()]
    )


def value(rng: random.Random, depth: int = 0) -> Any:
    if depth < 9 and rng.random() < 0.15:
        keys = [rng.choice(["b", "c", "x"]) for _ in range(rng.randint(0, 2))]
        return {k: value(rng, depth + 1) for k in keys}
    return scalar(rng)


def names(rng: random.Random, pool: list[Any], most: int) -> dict[Any, Any]:
    return {rng.choice(pool): value(rng) for _ in range(rng.randint(0, most))}


def row(rng: random.Random) -> Any:
    if rng.random() < 0.05:
        return rng.choice([None, 3, "row", [1]])
    r: dict[str, Any] = {}
    if rng.random() < 0.9:
        r["features"] = names(rng, NAMES, 5) if rng.random() < 0.95 else [1, 2]
    if rng.random() < 0.7:
        r["prediction"] = rng.choice(
            [
                scalar(rng),
                {"p": scalar(rng), "label": value(rng)},
                [scalar(rng) for _ in range(rng.choice([0, 1, 3, 17]))],
                {},
            ]
        )
    for name in _ROW_FIELDS:
        if rng.random() < 0.5:
            r[name] = scalar(rng)
    if rng.random() < 0.3:
        r["lookups"] = names(rng, ["z", "ltv", "a.b", "a"], 2) if rng.random() < 0.9 else [1]
    return r


def record(rng: random.Random) -> Any:
    if rng.random() < 0.03:
        return rng.choice([None, [], "x", 5])
    rec: dict[str, Any] = {}
    for origin in ("context", "lookups"):
        if rng.random() < 0.6:
            rec[origin] = names(rng, ["u", "ltv", "z", "a.b", "a"], 3) if rng.random() < 0.9 else 7
    if rng.random() < 0.8:
        rec["model"] = rng.choice([{"version": rng.choice(["1", "2", 3, None])}, {}, "m"])
    if rng.random() < 0.95:
        n = rng.choice([0, 1, 1, 1, 2, 10])
        rec["rows"] = [row(rng) for _ in range(n)] if rng.random() < 0.95 else "rows"
    return rec


def profiles_equal(a: DatasetProfile, b: DatasetProfile) -> None:
    """Same columns, in the same order, with the same counters and sketches. The
    quantile sketch compacts at random once it holds more than k values: then
    its count and bounds are compared instead of its bytes."""
    assert a.rows == b.rows
    assert list(a.columns) == list(b.columns)
    for name, col in a.columns.items():
        mine, other = col.to_dict(), b.columns[name].to_dict()
        if col.kll.is_estimation_mode():
            for d, c in ((mine, col), (other, b.columns[name])):
                d["kll"] = (c.kll.n, c.kll.get_min_value(), c.kll.get_max_value())
        assert mine == other, name


@pytest.mark.parametrize("seed", range(40))
def test_columns_equal_the_row_wise_flatten(seed: int) -> None:
    rng = random.Random(seed)
    records = [record(rng) for _ in range(rng.randint(1, 25))]
    cols = FlatColumns()
    expected: list[dict[str, Any]] = []
    for rec in records:
        rows = reference_flatten(rec)
        assert cols.add(rec) == len(rows)
        expected += rows
        assert typed(flatten(rec)) == typed(rows)
    assert len(cols) == len(expected)
    assert typed(cols.to_rows()) == typed(expected)
    for name in {k for r in expected for k in r} | {"absent"}:
        col = cols.column(name)
        if any(name in r for r in expected):
            assert col is not None
            assert typed([{"v": v} for v in col]) == typed([{"v": r.get(name)} for r in expected])
        else:
            assert col is None
    # The profile sees what update_rows of the row-wise rows sees: whole ...
    whole, reference = DatasetProfile(), DatasetProfile()
    cols.profile(whole)
    reference.update_rows(expected)
    profiles_equal(whole, reference)
    # ... and for a subset of the rows (a segment), columns none of them has left out.
    picked = sorted(rng.sample(range(len(expected)), k=len(expected) // 3))
    part, reference = DatasetProfile(), DatasetProfile()
    part.update_rows([{"earlier": 1}])
    reference.update_rows([{"earlier": 1}])
    cols.profile(part, picked)
    reference.update_rows([expected[j] for j in picked])
    profiles_equal(part, reference)
    cols.clear()
    assert len(cols) == 0 and cols.to_rows() == [] and cols.column("x") is None


def test_ragged_batch_missing_is_not_null() -> None:
    cols = FlatColumns()
    cols.add({"rows": [{"features": {"a": 1}}, {"features": {"b": None}}]})
    cols.add({"rows": [{"features": {"a": "two", "c": {"d": 1.5}}}]})  # a changes type
    assert cols.column("b") == [None, None, None]
    assert cols.column("a") == [1, None, "two"]
    assert cols.to_rows() == [{"a": 1}, {"b": None}, {"a": "two", "c.d": 1.5}]
    prof = DatasetProfile()
    cols.profile(prof, [0, 2])  # b is in neither row: not a column of that profile
    assert sorted(prof.columns) == ["a", "c.d"]
    assert prof.columns["a"].types == {"integral": 1, "string": 1}
    prof = DatasetProfile()
    cols.profile(prof, [1])  # b holds a null there, so it is a column
    assert sorted(prof.columns) == ["b"] and prof.columns["b"].nulls == 1


def test_item_lookups_win_over_the_records_and_bad_rows_are_dropped() -> None:
    cols = FlatColumns()
    rec = {
        "context": {"u": "u1"},
        "lookups": {"stock": 1, "ltv": 9},
        "rows": [{"lookups": {"stock": 5}}, "bad", {"score": 0.5}, None],
    }
    assert cols.add(rec) == 2
    assert cols.to_rows() == [
        {"context.u": "u1", "lookups.stock": 5, "lookups.ltv": 9},
        {"context.u": "u1", "lookups.stock": 1, "lookups.ltv": 9, "score": 0.5},
    ]
    # Only bad rows: one row of the record's own values, as for no rows at all.
    assert cols.add({"context": {"u": "u2"}, "rows": [1, 2]}) == 1
    assert cols.add({"model": {"version": 1}, "rows": [1, 2]}) == 0
    assert cols.column("context.u") == ["u1", "u1", "u2"]
    assert cols.column("model.version") is None  # no row kept it


def test_names_the_profile_rewrites_take_its_row_path() -> None:
    nfd = unicodedata.normalize("NFD", "é")
    cols = FlatColumns()
    cols.add({"rows": [{"features": {nfd: 1, "x": 2}}, {"features": {"x": 3}}]})
    prof, reference = DatasetProfile(), DatasetProfile()
    cols.profile(prof)
    reference.update_rows([{nfd: 1, "x": 2}, {"x": 3}])
    assert sorted(prof.columns) == ["x", "é"]
    profiles_equal(prof, reference)


def alike_record(rng: random.Random, template: int) -> Any:
    """Records of a few shapes that take the tuple path, now and then changed a
    little (a key more or less, a type, a nested value) so they must not."""
    n = [1, 1, 10, 3][template]
    feats = [["age", "plan", "score", "context.x"], ["price", "cat"], [], ["v"]][template]
    rows: list[Any] = []
    for j in range(n):
        r: dict[str, Any] = {"features": {k: scalar(rng) for k in feats}}
        if template in (0, 3):
            r["prediction"] = rng.random()
        if template == 1:
            r = {"position": j, "item_id": f"i{j}", **r, "score": rng.random(), "rank": j + 1}
        if template == 2:
            r = {"score": rng.random()}
        rows.append(r)
    rec: dict[str, Any] = {"model": {"version": rng.choice(["7", "7", "8"])}, "rows": rows}
    if template != 3:
        rec["context"] = {"tier": rng.choice(["gold", "silver"]), "n": rng.randint(0, 3)}
    if rng.random() < 0.2:  # one change somewhere
        row = rng.choice(rows)
        change = rng.randrange(8)
        if change == 0 and "features" in row:
            row["features"]["extra"] = 1
        elif change == 1 and "features" in row and row["features"]:
            row["features"].popitem()
        elif change == 2 and "features" in row and row["features"]:
            row["features"][next(iter(row["features"]))] = {"b": 1}
        elif change == 3:
            row["prediction"] = rng.choice([[0.1, 0.9], {"p": 1}, [], "yes"])
        elif change == 4:
            row["lookups"] = {"stock": 2}
        elif change == 5:
            rows.append(rng.choice([None, {"score": 1}, {"features": None}]))
        elif change == 6:
            row["features"] = {1: "int key", **row.get("features", {})}
        else:
            rec["context"] = {"tier": {"nested": 1}, "n": None}
    return rec


@pytest.mark.parametrize("seed", range(40))
def test_alike_records_equal_the_row_wise_flatten(seed: int) -> None:
    rng = random.Random(seed)
    cols = FlatColumns()
    expected: list[dict[str, Any]] = []
    template = rng.randrange(4)
    for _ in range(rng.randint(1, 60)):
        if rng.random() < 0.1:
            template = rng.randrange(4)
        rec = alike_record(rng, template) if rng.random() < 0.9 else record(rng)
        rows = reference_flatten(rec)
        assert cols.add(rec) == len(rows)
        expected += rows
    for name in ("model.version", "context.tier", "score", "age", "absent"):  # a run pending
        col = cols.column(name)
        if any(name in r for r in expected):
            assert col == [r.get(name) for r in expected]
        else:
            assert col is None
    assert typed(cols.to_rows()) == typed(expected)
    whole, reference = DatasetProfile(), DatasetProfile()
    cols.profile(whole)
    reference.update_rows(expected)
    profiles_equal(whole, reference)
    picked = [j for j in range(len(expected)) if rng.random() < 0.5]
    part, reference = DatasetProfile(), DatasetProfile()
    cols.profile(part, picked)
    reference.update_rows([expected[j] for j in picked])
    profiles_equal(part, reference)


def test_alike_records_take_the_tuple_path() -> None:
    """The fast path is taken (a run of row tuples), and a change of shape ends it."""
    cols = FlatColumns()
    rec = {"context": {"u": "a"}, "rows": [{"features": {"x": 1}, "score": 0.5}] * 3}
    assert cols.add(rec) == 3 and cols.add(rec) == 3
    assert len(cols._run) == 6 and not cols._cols
    assert cols.add({"rows": [{"features": {"x": {"deep": 1}}}]}) == 1
    assert not cols._run and cols.column("x") == [1] * 6 + [None]
    assert cols.column("x.deep") == [None] * 6 + [1]
    assert cols.add({"rows": [{"score": "s", "rank": 1}]}) == 1  # another shape
    assert cols.column("score") == [0.5] * 6 + [None, "s"]
    assert cols.column("rank") == [None] * 7 + [1]
