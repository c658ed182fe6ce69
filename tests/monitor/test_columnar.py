"""The Arrow read path against the row path, on real files.

Every test profiles the same object both ways (``profile_object(arrow=True)``
and ``arrow=False``) and requires the same counts and profiles: counters,
HLL and frequent-items bytes, KLL's count, bounds and (below its first
compaction) quantiles. Objects the Arrow path must not take are checked to
fall back, with the same results; the others to be read by it."""

from __future__ import annotations

import gzip
import os
import random
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from monitor_job.execute import ARROW_ENV, Partial, profile_object, profile_window
from monitor_job.locations import InputError, ObjectRef
from monitor_job.readers import list_captures, sampled_rate

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=timezone.utc)
START, END = T0, T0 + timedelta(hours=2)
QUANTILES = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def record(
    i: int,
    rows: list[dict[str, Any]],
    *,
    t: datetime | None = None,
    context: dict[str, Any] | None = None,
    lookups: dict[str, Any] | None = None,
    version: Any = "7",
    error: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """A record laid out as ``capture.record`` writes it (context onwards last)."""
    body = {"instances": [r.get("features", {}) for r in rows]}
    return {
        "schema": 1,
        "event_id": f"e{i}",
        "time": stamp(t or T0 + timedelta(seconds=i)),
        "model": {"name": "m", "version": version, "variant": None},
        "request": {"method": "POST", "body": {"encoding": "json", "data": body}},
        "response": {"status": 200, "body": {"data": {"predictions": [0.5]}}},
        "status": 200,
        "latency_ms": 1.5,
        "error": None,
        "context": {"tier": "gold"} if context is None else context,
        "lookups": {} if lookups is None else lookups,
        "rows": rows,
        "parse": {"adapter": "kserve_v1", "error": error},
        "sampling": {"rate": 1.0, "reason": "sampled"},
        **extra,
    }


def write(path: Path, lines: list[Any], *, gz: bool = True) -> ObjectRef:
    """``lines``: records (dicts, dumped by orjson) or raw bytes lines."""
    text = b"".join(
        (line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text) if gz else text)
    kind = "records"
    return ObjectRef(location=str(path.parent), key=path.name, size=path.stat().st_size, kind=kind)


def digest(data: bytes) -> dict[str, Any]:
    part = Partial.from_bytes(data)
    out: dict[str, Any] = {"counts": part.counts(), "keys": sorted(part.profiles)}
    for key, prof in part.profiles.items():
        cols = {}
        for name, col in prof.columns.items():
            d = col.to_dict()
            d.pop("kll")
            d["kll_n"] = col.kll.n
            if col.kll.n:
                d["kll_bounds"] = (col.kll.get_min_value(), col.kll.get_max_value())
                if col.kll.n <= col.kll_k:  # no compaction yet: exact, not random
                    d["quantiles"] = col.quantiles(QUANTILES)
            cols[name] = d
        out[key] = (prof.rows, list(prof.columns), cols)
    return out


def both(ref: ObjectRef, **kw: Any) -> tuple[Partial, dict[str, Any]]:
    """The Arrow attempt's Partial, after checking it equals the row path's."""
    kw.setdefault("start", START)
    kw.setdefault("end", END)
    start, end = kw.pop("start"), kw.pop("end")
    fast = profile_object(ref, start, end, arrow=True, **kw)
    slow = profile_object(ref, start, end, arrow=False, **kw)
    got, want = digest(fast), digest(slow)
    assert got == want
    return Partial.from_bytes(fast), want


def arrow_read(ref: ObjectRef, **kw: Any) -> dict[str, Any]:
    part, want = both(ref, **kw)
    assert (part.arrow_objects, part.fallbacks) == (1, {})
    return want


def fell_back(ref: ObjectRef, reason: str | None = None, **kw: Any) -> dict[str, Any]:
    part, want = both(ref, **kw)
    assert part.arrow_objects == 0
    assert sum(part.fallbacks.values()) == 1
    if reason is not None:
        assert part.fallbacks == {reason: 1}
    return want


# -- random alike objects ------------------------------------------------------

Gen = Callable[[random.Random], Any]


def _float(rng: random.Random) -> float:
    pick = rng.random()
    if pick < 0.2:
        return round(rng.uniform(-100, 100), rng.randint(0, 4))
    if pick < 0.3:
        return float(rng.randint(-5, 5))  # whole floats: 3.0 is "integral", like 3
    if pick < 0.35:
        return rng.choice([-0.0, 0.0, 5e-324, 1e-310, 2.5e-308, 9007199254740991.0])
    if pick < 0.5:
        return rng.uniform(-1, 1) * 10 ** rng.randint(-300, 15)
    return rng.gauss(0, 1)


def _int(rng: random.Random) -> int:
    if rng.random() < 0.1:
        return rng.randint(-(2**53) + 1, 2**53 - 1)
    return rng.randint(-3, 1000)


def _number(rng: random.Random) -> float | int:
    return _int(rng) if rng.random() < 0.5 else _float(rng)  # mixed in one column


# No "-0", "NaN" or "Inf" in them: the Arrow path refuses those bytes anywhere
# (see test_a_record_unlike_the_first_falls_back).
_WORDS = [
    "a",
    "b",
    "gold",
    "1",
    "1.0",
    "007",
    "-1",
    "1e3",
    "",
    " ",
    "é",
    "e\u0301",
    "日本",
    "x" * 300,
]


def _text(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return rng.choice(_WORDS)
    chars = 'abcXYZ019 _."\\/\n\té€😀'
    return "".join(rng.choice(chars) for _ in range(rng.randint(0, 12)))


def _bool(rng: random.Random) -> bool:
    return rng.random() < 0.3


KINDS: list[Gen] = [_float, _int, _number, _text, _bool]


def alike_object(seed: int, records: int = 300) -> list[dict[str, Any]]:
    """Records with the same keys and JSON types throughout, random values."""
    rng = random.Random(seed)
    feats = {f"f{i}": rng.choice(KINDS) for i in range(rng.randint(0, 6))}
    if rng.random() < 0.3:
        feats["score"] = _float  # a feature named like a row field: "features.score"
    ctx = {f"c{i}": rng.choice(KINDS) for i in range(rng.randint(0, 3))}
    lks = {f"l{i}": rng.choice(KINDS) for i in range(rng.randint(0, 2))}
    fields = {
        k: rng.choice([_float, _int, _text])
        for k in rng.sample(
            ["prediction", "score", "rank", "position", "item_id"], rng.randint(0, 3)
        )
    }
    per_record = rng.choice([1, 1, 3, 10])
    versions = rng.choice([["7"], ["7", "8"], [str(v) for v in range(25)]])
    with_features = bool(feats) or rng.random() < 0.5  # {} features: a column-less row
    out = []
    for i in range(records):
        rows = []
        for _ in range(rng.randint(1, per_record)):
            row: dict[str, Any] = {k: g(rng) for k, g in fields.items()}
            if with_features:
                row["features"] = {k: g(rng) for k, g in feats.items()}
            rows.append(row)
        # Times around the window's edges, and outside it.
        t = START + timedelta(milliseconds=rng.randint(-60_000, 2 * 3600 * 1000 + 60_000))
        if rng.random() < 0.02:
            t = rng.choice([START, END, END - timedelta(milliseconds=1)])
        out.append(
            record(
                i,
                rows,
                t=t,
                context={k: g(rng) for k, g in ctx.items()},
                lookups={k: g(rng) for k, g in lks.items()},
                version=rng.choice(versions),
                error=rng.choice([None, None, None, "", "bad payload"]),
            )
        )
    return out


@pytest.mark.parametrize("seed", range(40))
def test_random_alike_objects_are_read_by_arrow_with_the_same_profiles(
    tmp_path: Path, seed: int
) -> None:
    records = alike_object(seed)
    ref = write(tmp_path / "m" / "a.jsonl.gz", records)
    segments = ["context.c0", "f0", "item_id"] if seed % 2 else []
    want = arrow_read(ref, segments=segments)
    assert want["counts"]["records"] == sum(START <= _t(r) < END for r in records)


TRICKY_TEXT = [
    "plain",
    'a "quoted" word',
    "braces { [ inside",
    "closing } ] too",
    ',"context":{"x":1}',
    "back\\slash",
    "ends with a backslash \\",
    '\\"',
    '{"context": "not a key"}',
    "ünïcödé ✓",
]


def ranking_record(i: int, rng: random.Random, item_lookups: bool = False) -> dict[str, Any]:
    """A ranking record whose request body has its own ``context`` (the toy
    model's shape), with strings that look like JSON, before the record's own;
    with ``item_lookups``, each item's own (nested too) as the toy model reports."""
    items = [{"id": f"sku-{rng.randint(0, 50)}", "price": rng.random()} for _ in range(3)]
    rows = [
        {
            "position": p,
            "item_id": item["id"],
            "features": {"price": item["price"], "note": rng.choice(TRICKY_TEXT)},
            "score": rng.random(),
            "rank": p + 1,
        }
        for p, item in enumerate(items)
    ]
    if item_lookups:
        for row in rows:
            row["lookups"] = {"stock": rng.randint(0, 3), "store": {"eta_h": rng.random()}}
    rec = record(
        i,
        rows,
        context={"user_id": f"u{rng.randint(0, 9)}", "page": rng.choice(TRICKY_TEXT)},
        lookups={"ltv": rng.random()},
    )
    body = {"user_id": "u1", "context": {"page": rng.choice(TRICKY_TEXT), "nested": {"context": 1}}}
    rec["request"]["body"]["data"] = {**body, "items": items}
    rec["response"]["body"]["data"] = {"scores": [r["score"] for r in rows], "context": "x"}
    return rec


@pytest.mark.parametrize("seed", range(6))
def test_bodies_with_their_own_context_are_read_by_arrow(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    records = [ranking_record(i, rng, item_lookups=seed >= 3) for i in range(300)]
    assert all(orjson.dumps(r).count(b',"context":') > 1 for r in records)
    ref = write(tmp_path / "m" / "r.jsonl.gz", records)
    want = arrow_read(ref, segments=["context.user_id"] if seed % 2 else [])
    assert want["counts"]["records"] == 300
    if seed >= 3:
        assert {"lookups.stock", "lookups.store.eta_h", "lookups.ltv"} <= set(want[""][1])


ITEM_LOOKUP_CHANGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "one item without": lambda r: r["rows"][1].pop("lookups"),
    "one item with another": lambda r: r["rows"][1]["lookups"].__setitem__("eta", 1.0),
    "one item's empty": lambda r: r["rows"][1].__setitem__("lookups", {}),
    "one item's a list": lambda r: r["rows"][1].__setitem__("lookups", [1]),
    "named like the record's": lambda r: r["rows"][1]["lookups"].__setitem__("ltv", 2.0),
}


@pytest.mark.parametrize("at", [0, 7])
@pytest.mark.parametrize("name", sorted(ITEM_LOOKUP_CHANGES))
def test_item_lookups_unlike_the_first_fall_back(tmp_path: Path, name: str, at: int) -> None:
    rng = random.Random(at)
    records = [ranking_record(i, rng, item_lookups=True) for i in range(20)]
    ITEM_LOOKUP_CHANGES[name](records[at])
    fell_back(write(tmp_path / "m" / "r.jsonl.gz", records))


def test_item_lookups_named_like_the_records_fall_back(tmp_path: Path) -> None:
    rng = random.Random(1)
    records = [ranking_record(i, rng, item_lookups=True) for i in range(20)]
    for rec in records:
        for row in rec["rows"]:
            row["lookups"]["ltv"] = 1.5  # the item's wins on the row path
    fell_back(write(tmp_path / "m" / "r.jsonl.gz", records), "shape")


@pytest.mark.parametrize("at", [0, 5])
def test_one_record_with_context_in_its_request_is_read_by_arrow(tmp_path: Path, at: int) -> None:
    def change(r: dict[str, Any]) -> None:
        r["request"]["body"]["context"] = {"tier": "x"}

    lines = [orjson.dumps(r) for r in _with(change, at=at)]
    arrow_read(write(tmp_path / "m" / "a.jsonl.gz", lines), segments=["c"])


def _nested(i: int) -> dict[str, Any]:
    return {"user": {"tier": f"t{i % 3}", "geo": {"country": f"c{i % 5}", "lat": i * 0.1}}}


def test_nested_context_and_lookups_are_spread_as_the_row_path_spreads_them(
    tmp_path: Path,
) -> None:
    records = _base()
    for i, rec in enumerate(records):
        rec["context"] = {"page": "home", **_nested(i)}
        rec["lookups"] = {"store": {"ltv": i * 2.5}}
    want = arrow_read(write(tmp_path / "m" / "a.jsonl.gz", records), segments=["c"])
    columns = want[""][1]
    assert {"context.user.geo.country", "context.user.geo.lat", "lookups.store.ltv"} <= set(columns)


NESTED_CHANGES: dict[str, Callable[[dict[str, Any]], None]] = {
    "a nested key missing": lambda r: r["context"]["user"]["geo"].pop("lat"),
    "a nested key added": lambda r: r["context"]["user"]["geo"].__setitem__("zip", "1"),
    "a nested dict empty": lambda r: r["context"]["user"].__setitem__("geo", {}),
    "a nested dict a value": lambda r: r["context"]["user"].__setitem__("geo", "nl"),
    "a nested value null": lambda r: r["context"]["user"]["geo"].__setitem__("lat", None),
}


@pytest.mark.parametrize("at", [0, 20])
@pytest.mark.parametrize("name", sorted(NESTED_CHANGES))
def test_a_nested_record_unlike_the_rest_falls_back(tmp_path: Path, name: str, at: int) -> None:
    records = _base()
    for i, rec in enumerate(records):
        rec["context"] = _nested(i)
    NESTED_CHANGES[name](records[at])
    fell_back(write(tmp_path / "m" / "a.jsonl.gz", records), segments=["c"])


def test_nesting_deeper_than_the_row_path_spreads_falls_back(tmp_path: Path) -> None:
    from capture.rows import MAX_NESTING

    deep: dict[str, Any] = {"leaf": 1.0}
    for level in range(MAX_NESTING):
        deep = {f"l{level}": deep}
    records = _base()
    for rec in records:
        rec["context"] = deep
    fell_back(write(tmp_path / "m" / "a.jsonl.gz", records), "shape")


def test_records_without_a_model_version_are_read_by_arrow(tmp_path: Path) -> None:
    records = _base()
    for rec in records:
        rec["model"]["version"] = None
    want = arrow_read(write(tmp_path / "m" / "a.jsonl.gz", records), segments=["c"])
    assert "model.version" not in want[""][1]
    records[7]["model"]["version"] = "7"  # some name one, some do not
    fell_back(write(tmp_path / "m" / "b.jsonl.gz", records), "values")
    records[0]["model"]["version"] = "7"
    records[7]["model"]["version"] = None
    fell_back(write(tmp_path / "m" / "c.jsonl.gz", records), "values")


def _depth_reference(line: bytes) -> list[int]:
    """Depth at every byte by walking the JSON text, for _depth_at to match."""
    depth, in_string, escaped, out = 0, False, False, []
    for byte in line:
        out.append(depth)
        if in_string:
            if escaped:
                escaped = False
            elif byte == ord("\\"):
                escaped = True
            elif byte == ord('"'):
                in_string = False
        elif byte == ord('"'):
            in_string = True
        elif byte in b"{[":
            depth += 1
        elif byte in b"}]":
            depth -= 1
    return out


@pytest.mark.parametrize("seed", range(20))
def test_depth_at_matches_a_json_walk(seed: int) -> None:
    from monitor_job.columnar import _depth_at

    rng = random.Random(seed)

    def value(level: int) -> Any:
        kind = rng.random()
        if level > 3 or kind < 0.4:
            return rng.choice([*TRICKY_TEXT, 1, 2.5, None, True, "\\" * rng.randint(0, 4)])
        if kind < 0.7:
            return [value(level + 1) for _ in range(rng.randint(0, 3))]
        return {rng.choice(["context", "a", "b{", '"q"']): value(level + 1) for _ in range(3)}

    data = b"\n".join(orjson.dumps({"context": value(0), "x": value(0)}) for _ in range(30))
    arr = np.frombuffer(data, np.uint8)
    positions = np.arange(arr.size)
    want = []
    for line in data.split(b"\n"):
        want += [*_depth_reference(line), 0]
    assert _depth_at(arr, positions).tolist() == want[: arr.size]


def _t(rec: dict[str, Any]) -> datetime:
    return datetime.strptime(rec["time"], "%Y-%m-%dT%H:%M:%S.%f%z")


def test_batches_end_where_the_row_path_ends_them(tmp_path: Path) -> None:
    # ~40,000 rows: three batches of BATCH_ROWS (16,384) or a few more.
    rng = random.Random(3)
    records = [
        record(
            i,
            [
                {"features": {"x": rng.gauss(0, 1), "k": f"k{rng.randint(0, 5000)}"}, "rank": r}
                for r in range(rng.randint(1, 15))
            ],
            t=START + timedelta(milliseconds=i * 100),
            version=rng.choice(["1", "2"]),
        )
        for i in range(5000)
    ]
    want = arrow_read(write(tmp_path / "m" / "big.jsonl.gz", records), segments=["k"])
    assert want["counts"]["rows"] > 2 * 16384


def test_without_a_window_every_record_counts(tmp_path: Path) -> None:
    records = alike_object(7)
    ref = write(tmp_path / "m" / "a.jsonl.gz", records)
    want = arrow_read(ref, start=None, end=None)
    assert want["counts"]["records"] == len(records)


def test_a_plain_jsonl_object_and_a_multi_member_gzip(tmp_path: Path) -> None:
    records = alike_object(11, 100)
    arrow_read(write(tmp_path / "m" / "plain.jsonl", records, gz=False))
    text = b"".join(orjson.dumps(r) + b"\n" for r in records)
    path = tmp_path / "m" / "multi.jsonl.gz"
    path.write_bytes(gzip.compress(text[:5000]) + gzip.compress(text[5000:]))
    arrow_read(ObjectRef(str(path.parent), path.name, path.stat().st_size, "records"))


def test_window_edges(tmp_path: Path) -> None:
    edges = [START - timedelta(milliseconds=1), START, END - timedelta(milliseconds=1), END]
    records = [record(i, [{"features": {"x": i}}], t=t) for i, t in enumerate(edges * 3)]
    want = arrow_read(write(tmp_path / "m" / "a.jsonl.gz", records))
    assert want["counts"]["records"] == 6


def test_no_record_in_the_window(tmp_path: Path) -> None:
    records = [record(i, [{"features": {"x": i}}], t=END + timedelta(seconds=i)) for i in range(5)]
    want = arrow_read(write(tmp_path / "m" / "a.jsonl.gz", records))
    assert want["counts"]["records"] == 0


# -- what must fall back ---------------------------------------------------------


def _base(n: int = 50) -> list[dict[str, Any]]:
    return [
        record(i, [{"features": {"x": i * 0.5, "c": f"v{i % 3}", "n": i}, "prediction": 0.1 * i}])
        for i in range(n)
    ]


def _with(change: Callable[[dict[str, Any]], None], at: int = 20) -> list[dict[str, Any]]:
    records = _base()
    change(records[at])
    return records


def _feature(name: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda rec: rec["rows"][0]["features"].__setitem__(name, value)


CHANGES: dict[str, tuple[Callable[[dict[str, Any]], None], str | None]] = {
    "extra feature": (_feature("extra", 1.0), "parse"),
    "missing feature": (lambda r: r["rows"][0]["features"].pop("x"), "values"),
    "null feature": (_feature("x", None), "values"),
    "string in a number column": (_feature("x", "3"), "parse"),
    "bool in a number column": (_feature("n", True), "parse"),
    "number in a string column": (_feature("c", 3), "parse"),
    "nested feature": (_feature("x", {"a": 1}), "parse"),
    "list feature": (_feature("x", [1, 2]), "parse"),
    "huge int": (_feature("n", 2**53 + 1), "values"),
    "int beyond int64": (_feature("n", "HUGEINT"), "values"),
    "float beyond 2**53": (_feature("x", 1e300), "values"),
    "extra context key": (lambda r: r["context"].__setitem__("other", "x"), "parse"),
    "extra lookup": (lambda r: r["lookups"].__setitem__("ltv", 1.0), "parse"),
    "item lookups": (lambda r: r["rows"][0].__setitem__("lookups", {"p": 1}), "parse"),
    "no rows": (lambda r: r.__setitem__("rows", []), "values"),
    "rows not a list": (lambda r: r.__setitem__("rows", {"a": 1}), "parse"),
    "two rows of different keys": (
        lambda r: r["rows"].append({"features": {"x": 1.0}, "prediction": 0.2}),
        "values",
    ),
    "list prediction": (lambda r: r["rows"][0].__setitem__("prediction", [0.1, 0.9]), "parse"),
    "schema 2": (lambda r: r.__setitem__("schema", 2), "shape"),
    "no schema": (lambda r: r.pop("schema"), "values"),
    "no version": (lambda r: r["model"].pop("version"), "values"),
    "int version": (lambda r: r["model"].__setitem__("version", 7), "parse"),
    "time not ours": (lambda r: r.__setitem__("time", "2026-11-02T10:00:05+00:00"), "time"),
    "time not a date": (lambda r: r.__setitem__("time", "2026-02-30T10:00:05.000Z"), "time"),
    "no time": (lambda r: r.pop("time"), "values"),
    "parse error a dict": (lambda r: r["parse"].__setitem__("error", {"e": 1}), "parse"),
    "parse not a dict": (lambda r: r.__setitem__("parse", "oops"), "parse"),
    "context moved first": (lambda r: r.update({"context": r.pop("context")}), None),
    "later key after the tail": (lambda r: r.__setitem__("labels", {"y": 1}), "parse"),
    "captureData": (lambda r: r.__setitem__("captureData", {}), "bytes"),
    "int -0": (_feature("n", "MINUSZERO"), "bytes"),
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_a_record_unlike_the_first_falls_back(tmp_path: Path, name: str) -> None:
    change, reason = CHANGES[name]
    lines = [_raw(r) for r in _with(change)]
    fell_back(write(tmp_path / "m" / "a.jsonl.gz", lines), reason, segments=["c"])


def _raw(rec: dict[str, Any]) -> bytes:
    """Spellings orjson does not write: the int -0, an int beyond 64 bits."""
    line = orjson.dumps(rec).replace(b'"MINUSZERO"', b"-0")
    return line.replace(b'"HUGEINT"', b"1180591620717411303424")


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_a_first_record_unlike_the_rest_falls_back(tmp_path: Path, name: str) -> None:
    change, _ = CHANGES[name]
    lines = [_raw(r) for r in _with(change, at=0)]
    if name in ("no time", "time not ours", "time not a date", "no schema"):
        lines = lines[1:] + lines[:1]  # the row path needs a good record to not raise
    ref = write(tmp_path / "m" / "a.jsonl.gz", lines)
    if name == "later key after the tail":  # a field no profile reads, null elsewhere
        arrow_read(ref)
    else:
        fell_back(ref)


def _lines() -> list[bytes]:
    return [orjson.dumps(r) for r in _base()]


def _edit(fn: Callable[[list[bytes]], list[bytes]]) -> list[bytes]:
    return fn(_lines())


def _in_sixth(old: bytes, new: bytes) -> Callable[[list[bytes]], list[bytes]]:
    """A change to the object's sixth line: ``old`` replaced by ``new``."""
    return lambda ls: [*ls[:5], ls[5].replace(old, new), *ls[6:]]


BAD_LINES: dict[str, Callable[[list[bytes]], list[bytes]]] = {
    "truncated last line": lambda ls: [*ls[:-1], ls[-1][:-40]],
    "truncated middle line": lambda ls: [*ls[:10], ls[10][:300], *ls[11:]],
    "garbage line": lambda ls: [*ls[:5], b"not json", *ls[5:]],
    "blank line": lambda ls: [*ls[:5], b"", *ls[5:]],
    "spaces line": lambda ls: [*ls[:5], b"   ", *ls[5:]],
    "CRLF": lambda ls: [line + b"\r" for line in ls],
    "indented": lambda ls: [b" " + line for line in ls],
    "array line": lambda ls: [*ls[:5], b"[1, 2]", *ls[5:]],
    "two objects on a line": lambda ls: [*ls[:5], ls[5] + ls[6], *ls[7:]],
    "a line split in two": lambda ls: [*ls[:5], *ls[5].split(b',"request"', 1), *ls[6:]],
    "trailing comma": lambda ls: [*ls[:5], ls[5][:-1] + b",}", *ls[6:]],
    "comment": lambda ls: [*ls[:5], ls[5][:-1] + b"/*c*/}", *ls[6:]],
    "bad JSON in the request only": _in_sixth(b'"method":"POST"', b'"method":POST'),
    "NaN in the request": _in_sixth(b'"latency_ms":1.5', b'"latency_ms":NaN'),
    "Inf in the request": _in_sixth(b'"latency_ms":1.5', b'"latency_ms":Inf'),
    "Infinity in a feature": _in_sixth(b'"x":2.5', b'"x":-Infinity'),
    "lone surrogate": _in_sixth(b'"v2"', b'"v\\ud800"'),
    "invalid UTF-8": _in_sixth(b'"v2"', b'"v\xff"'),
    "control character in a string": _in_sixth(b'"v2"', b'"v\t"'),
    "duplicate context": lambda ls: [*ls[:5], ls[5][:-1] + b',"context":{"tier":"x"}}', *ls[6:]],
    "duplicate time": _in_sixth(b'"status":200', b'"time":"2026-11-02T10:00:05.000Z"'),
    "duplicate rows in the head": _in_sixth(b'"status":200', b'"rows":[]'),
    "a number leading zero": _in_sixth(b'"n":5', b'"n":05'),
    "a huge exponent": _in_sixth(b'"x":2.5', b'"x":1e400'),
    "a tiny exponent": _in_sixth(b'"x":2.5', b'"x":1e-400'),
    "an int as 1.0e2": _in_sixth(b'"n":5', b'"n":1.0e2'),
}


@pytest.mark.parametrize("name", sorted(BAD_LINES))
def test_bad_lines_fall_back_or_read_the_same(tmp_path: Path, name: str) -> None:
    lines = BAD_LINES[name](_lines())
    assert lines != _lines()
    both(write(tmp_path / "m" / "a.jsonl.gz", lines), segments=["c"])


def test_lines_that_change_nothing_are_read_by_arrow(tmp_path: Path) -> None:
    lines = _lines()
    lines[5] = lines[5].replace(b'"x":2.5', b'"x":25e-1')  # same number, other spelling
    lines[6] = lines[6].replace(b'"c":"v0"', b'"c":"\\u0076\\u0030"')  # "v0" escaped
    arrow_read(write(tmp_path / "m" / "a.jsonl.gz", lines), segments=["c"])


def test_the_odd_words_rare_bytes_alone_change_nothing(tmp_path: Path) -> None:
    # "N", "I" and "D" (NaN's, Inf's and captureData's rare bytes) are looked
    # for first; their presence without the word must not fall back.
    lines = [
        line.replace(b'"c":"v0"', b'"c":"NY Idaho Dallas"').replace(b'"c":"v1"', b'"c":"Na In"')
        for line in _lines()
    ]
    assert any(b"NY Idaho" in line for line in lines) and any(b"Na In" in line for line in lines)
    arrow_read(write(tmp_path / "m" / "a.jsonl.gz", lines), segments=["c"])


def test_a_corrupt_gzip_raises_as_the_row_path_does(tmp_path: Path) -> None:
    path = tmp_path / "m" / "a.jsonl.gz"
    data = gzip.compress(b"".join(line + b"\n" for line in _lines()))
    path.parent.mkdir(parents=True)
    path.write_bytes(data[: len(data) // 2] + b"\x00" * 50 + data[len(data) // 2 + 50 :])
    ref = ObjectRef(str(path.parent), path.name, path.stat().st_size, "records")
    for arrow in (True, False):
        with pytest.raises(InputError, match="corrupt gzip"):
            profile_object(ref, START, END, arrow=arrow)


def test_records_of_profiled_hours_fall_back(tmp_path: Path) -> None:
    ref = write(tmp_path / "m" / "a.jsonl.gz", _base())
    hour = int(START.timestamp() // 3600)
    fell_back(ref, "hours", segments=["c"], profiled_hours=[hour])
    arrow_read(ref, segments=["c"], profiled_hours=[hour + 1])


def test_float_spellings_parse_as_orjson_reads_them(tmp_path: Path) -> None:
    rng = random.Random(9)
    spellings = []
    for _ in range(3000):
        x = rng.choice(
            [rng.random(), rng.gauss(0, 1e6), rng.uniform(-1, 1) * 10.0 ** rng.randint(-300, 15)]
        )
        digits = rng.choice(
            [repr(x), f"{x:.17e}", f"{x:.25g}", f"{x:.3f}", str(rng.randint(-(10**15), 10**15))]
        )
        spellings.append(digits)
    lines = []
    for i, s in enumerate(spellings):
        line = orjson.dumps(record(i, [{"features": {"x": "SPELLING"}}]))
        lines.append(line.replace(b'"SPELLING"', s.encode()))
    want = arrow_read(write(tmp_path / "m" / "a.jsonl.gz", lines))
    assert want["counts"]["records"] == 3000


def test_profile_window_counts_what_each_path_read(tmp_path: Path) -> None:
    root = tmp_path / "caps"
    day = root / "m" / "dt=2026-11-02"
    write(day / "hour=10" / "h-1-1.jsonl.gz", alike_object(1))
    write(day / "hour=10" / "h-1-2.jsonl.gz", _with(CHANGES["extra feature"][0]))
    write(day / "hour=11" / "h-1-3.jsonl.gz", alike_object(2))
    refs = list_captures(str(root), START, END)
    assert len(refs) == 3
    parts = {}
    for flag in ("1", "0"):
        os.environ[ARROW_ENV] = flag
        try:
            parts[flag] = profile_window(refs, START, END, segments=["context.c0"], progress=False)
        finally:
            del os.environ[ARROW_ENV]
    fast, slow = parts["1"], parts["0"]
    assert (fast.arrow_objects, fast.fallbacks) == (2, {"parse": 1})
    assert (slow.arrow_objects, slow.fallbacks) == (0, {})
    assert digest(fast.to_bytes()) == digest(slow.to_bytes())


def _run_outputs(caps: Path, baseline: Path, out: Path, flag: str) -> tuple[Any, bytes]:
    from monitor_job.cli import main

    os.environ[ARROW_ENV] = flag
    try:
        args = ["run", "--captures", str(caps), "--baseline", str(baseline), "--out", str(out)]
        window = ["--start", "2026-11-20T10:00:00Z", "--end", "2026-11-20T13:00:00Z"]
        main([*args, *window, "--segment", "f1", "--no-progress"])
    finally:
        del os.environ[ARROW_ENV]
    stats = orjson.loads((out / "statistics.json").read_bytes())
    stats["modeltap"]["summary"].pop("generated_at")
    return stats, (out / "constraint_violations.json").read_bytes()


def test_monitor_run_writes_the_same_files_either_way(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Captures written by the real Capturer, two model versions, drifted. Fewer
    rows than KLL's k (200), so that its sketches are exact and the files
    comparable byte for byte (compactions are random: even two runs of one
    path differ in KS or PSI digits once they start)."""
    import logging

    from monitor_job.cli import main
    from tests.monitor.scenario import normal_instances, training_csv, write_captures

    t0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
    caps = tmp_path / "caps"
    write_captures(caps, normal_instances(95, seed=3), t0, 3600 * 1.5, version="1")
    later = normal_instances(95, seed=4, shift=0.6)
    write_captures(caps, later, t0 + timedelta(hours=1.5), 3600 * 1.5, version="2")
    baseline = tmp_path / "baseline"
    data = str(training_csv(tmp_path / "t.csv"))
    assert main(["baseline", "--data", data, "--out", str(baseline), "--label", "label"]) == 0
    with caplog.at_level(logging.INFO, logger="monitor_job.execute"):
        fast = _run_outputs(caps, baseline, tmp_path / "fast", "1")
    read = [r.getMessage() for r in caplog.records if "Arrow path" in r.getMessage()]
    assert read and read[0].endswith("read by the Arrow path; fallbacks: none")
    slow = _run_outputs(caps, baseline, tmp_path / "slow", "0")
    assert fast[0]["modeltap"]["summary"]["rows"] == 190
    assert fast[1] == slow[1]
    assert fast[0] == slow[0]


def test_record_times_are_read_as_record_time_reads_them() -> None:
    import numpy as np
    import pyarrow as pa

    from monitor_job.columnar import Fallback, Loaded
    from monitor_job.readers import record_time

    def loaded(times: list[str]) -> Loaded:
        n = len(times)
        empty = np.zeros(n, dtype=np.int64)
        nan = np.full(n, np.nan)
        strings = pa.array(times, pa.string())
        return Loaded(n, strings, empty.astype(bool), nan, empty, empty, {}, {})

    rng = random.Random(5)

    def some_time(valid: bool) -> str:
        if valid:
            t = datetime(2020, 1, 1, tzinfo=timezone.utc) + timedelta(
                milliseconds=rng.randint(0, 10 * 365 * 86400 * 1000)
            )
            return stamp(t)
        digits = [str(rng.randint(0, 9)) for _ in range(17)]
        text = "{}{}{}{}-{}{}-{}{}T{}{}:{}{}:{}{}.{}{}{}Z".format(*digits)
        return rng.choice([text, text[:-1] + "+", " " + text[1:], text.replace("T", "t")])

    good = [some_time(True) for _ in range(3000)]
    got = loaded(good).epochs()
    assert got.tolist() == [record_time(t) for t in good]
    for _ in range(300):
        odd = some_time(False)
        if record_time(odd) is None:
            with pytest.raises(Fallback):
                loaded([*good[:5], odd]).epochs()
        else:
            assert loaded([odd]).epochs().tolist() == [record_time(odd)]


# -- sampling weights: the volume check's traffic estimate -----------------------

SAMPLINGS: dict[str, Callable[[int], Any]] = {
    "rates and reasons mixed": lambda i: {
        "rate": [0.1, 0.25, 1.0, 0.1][i % 4],
        "reason": "error" if i % 7 == 0 else "sampled",
    },
    "one rate throughout": lambda i: {"rate": 0.05, "reason": "sampled"},
    "an int rate": lambda i: {"rate": 1 if i % 2 else 0.5, "reason": "sampled"},
    "rates out of range": lambda i: {"rate": [0.0, -0.5, 1.5, 0.3][i % 4], "reason": "sampled"},
    "reason missing in some": lambda i: (
        {"rate": 0.1} if i % 3 == 1 else {"rate": 0.1, "reason": "sampled"}
    ),
    "rate a string": lambda i: {"rate": "0.1", "reason": "sampled"},
    "reason a number": lambda i: {"rate": 0.1, "reason": 1},
    "sampling null in some": lambda i: None if i % 5 == 2 else {"rate": 0.2, "reason": "sampled"},
    "rate null in some": lambda i: {"rate": None if i % 4 == 3 else 0.2, "reason": "sampled"},
}


@pytest.mark.parametrize("name", sorted(SAMPLINGS))
def test_sampled_rows_are_counted_alike_on_both_paths(tmp_path: Path, name: str) -> None:
    sampling = SAMPLINGS[name]
    records = [
        record(i, [{"features": {"x": i * 0.5, "c": f"v{i % 3}"}, "prediction": 0.1}] * (1 + i % 3))
        for i in range(60)
    ]
    for i, rec in enumerate(records):
        rec["sampling"] = sampling(i)
    ref = write(tmp_path / "m" / "a.jsonl.gz", records)
    part, want = both(ref, segments=["c"])
    assert want["counts"]["sampled_rows"] == part.sampled_rows
    rows = 0.0  # what readers.sampled_rate gives, record by record
    for rec in records:
        rate = sampled_rate(rec)
        rows += len(rec["rows"]) / (1.0 if rate is None else float(rate))
    assert part.traffic_rows == pytest.approx(rows)
    assert part.arrow_objects == 1  # the first record has every key: Arrow reads them all
    if name == "rates and reasons mixed":
        assert set(part.sampled_rows) == {"0.1", "0.25"}
        assert part.traffic_rows > 4 * part.whole.rows


def test_sampling_in_a_head_falls_back(tmp_path: Path) -> None:
    records = _base()
    sampling = records[10].pop("sampling")
    records[10] = {"sampling": {**sampling, "rate": 0.1}, **records[10]}  # before the cut
    fell_back(write(tmp_path / "m" / "a.jsonl.gz", records), "shape")
