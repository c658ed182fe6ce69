"""Column and dataset profiles: canonical keys, counters, merges, bytes, bad input."""

from __future__ import annotations

import base64
import functools
import math
import unicodedata
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capture.profile import (
    FORMAT,
    HLL_LG_K,
    MAX_STRING,
    ColumnProfile,
    DatasetProfile,
    _float_key,
    _float_texts,
    _text,
    canonical,
    value_kind,
)


def assert_same_moments(p: ColumnProfile, ref: ColumnProfile) -> None:
    """Counts, types, bounds and moments equal (mean and std to rounding)."""
    fields = ("count", "nulls", "nan", "inf", "types", "numeric_count", "min", "max")
    assert [getattr(p, f) for f in fields] == [getattr(ref, f) for f in fields]
    assert p.mean == pytest.approx(ref.mean) and p.std == pytest.approx(ref.std)


# -- canonical keys ------------------------------------------------------


@pytest.mark.parametrize("value", [1, 1.0, "1", "1.0", "1e0", "1.000", np.int64(1), np.float64(1)])
def test_one_in_every_spelling_is_one_key(value: Any) -> None:
    assert canonical(value) == "1"


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (True, "true"),
        (False, "false"),
        (None, None),
        (float("nan"), None),
        (float("inf"), "inf"),
        (float("-inf"), "-inf"),
        ("1e400", "inf"),
        (-0.0, "0"),
        ("-0", "0"),
        (2.5, "2.5"),
        ("2.5", "2.5"),
        ("01", "01"),  # not a JSON number: a code, kept as written
        (" 1", " 1"),
        ("nan", "nan"),
        (10**30, "1" + "0" * 30),
        ({"b": 1, "a": [1, 2]}, '{"a":[1,2],"b":1}'),
        ([1, "x"], '[1,"x"]'),
    ],
)
def test_canonical_cases(value: Any, key: str | None) -> None:
    assert canonical(value) == key


def test_bool_is_not_a_number() -> None:
    assert canonical(True) != canonical(1)
    assert value_kind(True) == "boolean"
    col = ColumnProfile()
    col.update([True, False, True])
    assert col.numeric_count == 0 and col.types == {"boolean": 3}


def test_nfc_and_nfd_spellings_agree() -> None:
    nfd = unicodedata.normalize("NFD", "café")
    assert nfd != "café"
    assert canonical(nfd) == canonical("café") == unicodedata.normalize("NFC", "café")
    col = ColumnProfile()
    col.update([nfd, "café"])
    assert col.top(5) == [(unicodedata.normalize("NFC", "café"), 2)]


def test_dict_key_order_does_not_matter() -> None:
    assert canonical({"a": 1, "b": {"y": 2, "x": 1}}) == canonical({"b": {"x": 1, "y": 2}, "a": 1})


def test_long_strings_are_cut_with_a_hash_suffix() -> None:
    a, b = "x" * 10_000, "x" * 9_999 + "y"
    ka, kb = canonical(a), canonical(b)
    assert ka is not None and kb is not None
    assert len(ka) <= MAX_STRING and ka.startswith("x" * 200) and "…#" in ka
    assert ka != kb  # same prefix, different hash
    assert canonical(a) == ka
    nested = canonical({"text": a})
    assert nested is not None and len(nested) <= MAX_STRING


def test_hostile_values_still_get_keys() -> None:
    deep: list[Any] = []
    cur = deep
    for _ in range(3000):
        cur.append([])
        cur = cur[0]
    for value in ["\ud800", {"s": "\udfff"}, 10**5000, -(10**5000), deep, b"\xff", object()]:
        key = canonical(value)
        assert key is not None and len(key) <= MAX_STRING
        key.encode("utf-8")  # valid UTF-8: the sketches need it


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "null"),
        (True, "boolean"),
        (3, "integral"),
        (3.0, "integral"),
        (3.5, "fractional"),
        (float("nan"), "fractional"),
        (float("inf"), "fractional"),
        ("3", "string"),
        ([3], "other"),
        ({"a": 3}, "other"),
    ],
)
def test_value_kind(value: Any, kind: str) -> None:
    assert value_kind(value) == kind


# -- column counters -----------------------------------------------------


def test_counters_of_a_mixed_batch() -> None:
    col = ColumnProfile()
    col.update([1, 2.5, None, float("nan"), float("inf"), "a", True, {"x": 1}, 4.0])
    assert (col.count, col.nulls, col.nan, col.inf) == (9, 1, 1, 1)
    assert col.types == {
        "integral": 2,
        "fractional": 3,
        "null": 1,
        "string": 1,
        "boolean": 1,
        "other": 1,
    }
    nums = np.array([1, 2.5, 4.0])
    assert col.numeric_count == 3
    assert (col.min, col.max, col.sum) == (1.0, 4.0, 7.5)
    assert col.mean == pytest.approx(nums.mean()) and col.std == pytest.approx(nums.std())
    assert col.inferred_type() == "String"


def test_batch_paths_agree() -> None:
    """Floats via a list, via update_numeric, and mixed in with a string
    (the general path) give the same counters and the same keys."""
    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=3000), 1)
    x[::50] = np.nan
    listed = [None if i % 7 == 0 else float(v) for i, v in enumerate(x)]
    a, b, c = ColumnProfile(), ColumnProfile(), ColumnProfile()
    a.update(listed)
    a.update(["s"])
    b.update_numeric(np.array([v for v in listed if v is not None]), nulls=listed.count(None))
    b.update(["s"])
    c.update([*listed, "s"])
    for p in (b, c):
        assert_same_moments(p, a)
        assert p.distinct() == a.distinct()  # HLL is order-free: same keys, same registers
        assert p.top(10) == a.top(10)


def test_numeric_and_string_spellings_share_keys() -> None:
    col = ColumnProfile()
    col.update_numeric(np.array([1.0, 2.5, 3.0]))
    col.update(["1", "2.5", "3.0", 1, 3])
    assert col.distinct() == pytest.approx(3, abs=0.01)
    assert dict(col.top(10)) == {"1": 3, "2.5": 2, "3": 3}


def test_big_ints_keep_exact_keys() -> None:
    col = ColumnProfile()
    col.update([2**60, 2**60 + 1, 2**60 + 2, None])  # one float64 for all three
    assert col.distinct() == pytest.approx(3, abs=0.01)
    arr = ColumnProfile()
    arr.update_numeric(np.array([2**60, 2**60 + 1], dtype=np.int64))
    assert arr.distinct() == pytest.approx(2, abs=0.01)
    assert {k for k, _ in arr.top(5)} == {str(2**60), str(2**60 + 1)}


def test_integral_floats_count_as_integral_in_every_path() -> None:
    a, b = ColumnProfile(), ColumnProfile()
    a.update([3.0, 4.0, 5])
    b.update_numeric(np.array([3.0, 4.0, 5.0]))
    assert a.types == b.types == {"integral": 3}
    assert a.inferred_type() == b.inferred_type() == "Integral"


def test_empty_and_all_null_columns_answer_without_raising() -> None:
    for col in (ColumnProfile(), _col([None, None]), _col(["a", "b"])):
        assert col.quantiles([0.5]) == []
        assert col.cdf([0.0]) == []
        assert col.pmf([0.0, 1.0]) == []
        assert col.mean is None and col.std is None and col.min is None
    empty = ColumnProfile()
    assert empty.distinct() == 0 and empty.top(3) == [] and empty.inferred_type() == "Unknown"
    assert _col([None]).inferred_type() == "Unknown"


def test_queries_on_known_numbers() -> None:
    col = _col(list(range(1, 101)))  # 100 values: exact below k
    assert col.quantiles([0.0, 0.5, 1.0]) == [1.0, 50.0, 100.0]
    assert col.cdf([50, 50.5, 0]) == [0.5, 0.5, 0.0]
    assert col.cdf([50], inclusive=False) == [0.49]
    assert col.pmf([10, 90]) == pytest.approx([0.1, 0.8, 0.1])
    with pytest.raises(ValueError, match="increase strictly"):
        col.pmf([2, 1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        col.quantiles([1.5])


def test_inferred_type() -> None:
    assert _col([1, 2, None]).inferred_type() == "Integral"
    assert _col([1, 2.5]).inferred_type() == "Fractional"
    assert _col([1, float("nan")]).inferred_type() == "Fractional"
    assert _col([1, "x"]).inferred_type() == "String"


def test_frequent_items_survive_high_cardinality_batches() -> None:
    """The batch pre-filter drops only values below the sketch's resolution:
    a heavy hitter among unique noise keeps a count within N/1024 (a numeric
    batch's pre-filter) + sketch error."""
    rng = np.random.default_rng(5)
    col = ColumnProfile()
    hits = 0
    for _ in range(10):
        batch = rng.normal(size=10_000)
        batch[rng.random(10_000) < 0.05] = 0.5
        hits += int((batch == 0.5).sum())
        col.update_numeric(batch)
    key, est = col.top(1)[0]
    assert key == "0.5"
    assert abs(est - hits) <= 100_000 * (1 / 1024 + 3.5 / 1024)
    assert col.distinct() == pytest.approx(95_000, rel=0.05)


def _numeric_case(case: str, n: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    if case == "fractional":  # no whole number: keys skip the per-value masks
        return rng.normal(size=n)
    if case == "whole":  # every number whole and in int64 range: keys skip the masks too
        return np.round(rng.normal(0, 1e4, size=n))
    if case == "whole_beyond_int64":  # whole, but the ends need string keys
        x = np.round(rng.normal(0, 1e4, size=n))
        x[:3] = (2.0**63, -(2.0**63), 1e300)
        return x
    if case == "mixed":  # whole and not, inf, NaN, signed zeros, few distinct values
        x = np.round(rng.normal(size=n), 1)
        x[::97], x[::89], x[::83], x[::79] = np.inf, -np.inf, np.nan, -0.0
        return x
    if case == "ints_few":  # few runs: every run counted
        x = rng.integers(0, 40, size=n) ** 2
        # In the first third, 20 of a value are frequent enough for frequent-items
        # (20 * 1024 > 20,000) and 19 of another are not: a bound checked both ways.
        x[:39] = [-1] * 19 + [-2] * 20
        return x
    if case == "ints_many":  # many runs, and a heavy value among them
        x = rng.integers(-(10**12), 10**12, size=n)
        x[::10] = 42
        return x
    if case == "int32":
        return rng.integers(-100, 100, size=n, dtype=np.int32)
    return rng.integers(0, 2**64 - 1, size=n, dtype=np.uint64)  # "uint64": beyond int64


@pytest.mark.parametrize(
    "case",
    [
        "fractional",
        "whole",
        "whole_beyond_int64",
        "mixed",
        "ints_few",
        "ints_many",
        "int32",
        "uint64",
    ],
)
@pytest.mark.parametrize("n", [3000, 60_000])
def test_numeric_arrays_profile_as_their_values_one_by_one(case: str, n: int) -> None:
    """``update_numeric`` (sorted in reused buffers, keys split by the batch's
    whole/fractional counts, heavy values found by runs) against the general
    path, which classifies value by value: same counters and extremes, HLL
    registers byte for byte, same frequent items."""
    arr = _numeric_case(case, n)
    fast, slow = ColumnProfile(), ColumnProfile()
    for part in np.array_split(arr, 3):
        fast.update_numeric(part)
        slow._update_general(part.tolist())
    assert_same_moments(fast, slow)
    theirs = slow.hll.serialize_compact()
    if len(theirs) == 40 + (1 << HLL_LG_K):  # HLL mode: the registers
        assert fast.hll.serialize_compact()[40:] == theirs[40:]
        assert fast.distinct() == pytest.approx(slow.distinct(), rel=0.02)  # HIP or not
    else:  # a list or set of coupons, in arrival order: its estimate is exact
        assert fast.distinct() == slow.distinct()
    # Beyond ~750 distinct keys the frequent-items sketch purges, and what
    # survives depends on the order of updates: compare the values it must keep.
    items = slow.top(1000)
    if np.unique(arr).size < 500:  # the sketch never purged: every count exact
        assert fast.top(1000) == items
    else:
        heavy = [(k, c) for k, c in items if c > n / 200]
        assert fast.top(len(heavy)) == heavy
        assert heavy or case in ("fractional", "whole", "whole_beyond_int64", "uint64")


def _without_kll(col: ColumnProfile) -> dict[str, Any]:
    d = col.to_dict()
    del d["kll"]  # KLL compacts at random
    return d


def test_numeric_batches_of_changing_size_and_type_reuse_scratch_safely(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch profiles the same whatever the batches before it left in the
    per-thread buffers, and batches too large to keep buffers for still work."""
    from capture import profile as mod

    cases = ("mixed", "ints_many", "fractional", "int32")
    batches = [_numeric_case(c, n) for c in cases for n in (9000, 500)]
    for keep in (mod.WORK_KEEP_BYTES, 1024):
        monkeypatch.setattr(mod, "WORK_KEEP_BYTES", keep)
        mod._WORK.raw.clear()
        fresh = []
        for b in batches:
            mod._WORK.raw.clear()
            col = ColumnProfile()
            col.update_numeric(b)
            fresh.append(_without_kll(col))
        for b, want in zip(batches[::-1], fresh[::-1], strict=True):
            ColumnProfile().update_numeric(b[::-1] * 3)  # other values in the buffers
            col = ColumnProfile()
            col.update_numeric(b)
            assert _without_kll(col) == want
        assert all(raw.size <= keep for raw in mod._WORK.raw.values())


def test_threads_profiling_at_once_each_have_their_own_scratch() -> None:
    """numpy releases the GIL while sorting: threads profiling at the same time
    must not share buffers (their profiles equal those built one at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(8)
    jobs = [[rng.normal(j, 1, size=100_000) for _ in range(4)] for j in range(4)]
    jobs += [[rng.integers(0, 10**9 * (j + 1), size=100_000) for _ in range(4)] for j in range(4)]

    def build(batches: list[np.ndarray]) -> dict[str, Any]:
        col = ColumnProfile()
        for b in batches:
            col.update_numeric(b)
        return _without_kll(col)

    alone = [build(job) for job in jobs]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            assert list(pool.map(build, jobs)) == alone


# -- merge ---------------------------------------------------------------


def _col(values: list[Any], k: int = 200) -> ColumnProfile:
    col = ColumnProfile(k)
    col.update(values)
    return col


def _mixed(rng: np.random.Generator, n: int) -> list[Any]:
    x = rng.normal(10, 3, size=n).tolist()
    out: list[Any] = []
    for i, v in enumerate(x):
        out.append(None if i % 11 == 0 else f"c{i % 13}" if i % 5 == 0 else v)
    return out


@pytest.mark.parametrize(("k1", "k2"), [(200, 200), (200, 1000), (1000, 200)])
def test_merge_of_halves_equals_the_whole(k1: int, k2: int) -> None:
    rng = np.random.default_rng(7)
    values = _mixed(rng, 40_000)
    whole = _col(values, k1)
    left, right = _col(values[:25_000], k1), _col(values[25_000:], k2)
    left.merge(right)
    exact = ("count", "nulls", "nan", "inf", "types", "numeric_count", "min", "max")
    assert [getattr(left, a) for a in exact] == [getattr(whole, a) for a in exact]
    assert left.mean == pytest.approx(whole.mean, rel=1e-12)
    assert left.std == pytest.approx(whole.std, rel=1e-9)
    assert left.sum == pytest.approx(whole.sum, rel=1e-12)
    ranks = [0.05, 0.25, 0.5, 0.75, 0.95]
    numbers = np.sort([v for v in values if isinstance(v, float)])
    true_ranks = np.searchsorted(numbers, left.quantiles(ranks), side="right") / numbers.size
    assert np.allclose(true_ranks, ranks, atol=1.5 * left.kll.normalized_rank_error(False))
    assert left.distinct() == pytest.approx(whole.distinct(), rel=0.03)
    assert left.top(3) == whole.top(3)


def test_dataset_merge_fills_missing_columns_with_nulls() -> None:
    a, b = DatasetProfile(), DatasetProfile()
    a.update_rows([{"x": 1}, {"x": 2}])
    b.update_rows([{"y": "u"}, {"y": "v"}, {"x": 3}])
    a.merge(b)
    assert a.rows == 5
    assert (a.columns["x"].count, a.columns["x"].nulls) == (5, 2)
    assert (a.columns["y"].count, a.columns["y"].nulls) == (5, 3)


# -- dataset updates -----------------------------------------------------


def test_update_rows_counts_missing_keys_as_nulls() -> None:
    prof = DatasetProfile()
    prof.update_rows([{"a": 1, "b": "x"}, {"a": 2}, {"a": None, "b": "y"}])
    prof.update_rows([{"c": 1.5}])  # c is new: the 3 earlier rows lacked it
    assert prof.rows == 4
    for name, nulls in {"a": 2, "b": 2, "c": 3}.items():
        col = prof.columns[name]
        assert (col.count, col.nulls, col.types.get("null")) == (4, nulls, nulls)
    assert prof.columns["a"].quantiles([0.0, 1.0]) == [1.0, 2.0]


def test_update_rows_full_and_ragged_batches_agree() -> None:
    rows = [{"a": i, "b": f"v{i % 3}"} for i in range(50)]
    full, ragged = DatasetProfile(), DatasetProfile()
    full.update_rows(rows)
    ragged.update_rows([*rows, {"a": 0}])  # one short row: the per-column path
    assert ragged.columns["b"].nulls == 1
    assert ragged.columns["b"].top(3) == full.columns["b"].top(3)
    assert ragged.columns["a"].numeric_count == full.columns["a"].numeric_count + 1


def test_update_rows_odd_keys_and_bad_rows() -> None:
    prof = DatasetProfile()
    odd: dict[Any, Any] = {1: "a", "k\ud800": 2}
    prof.update_rows([odd])
    assert set(prof.columns) == {"1", "k\\ud800"}
    prof.to_bytes()  # names are valid JSON strings
    with pytest.raises(TypeError, match="row 1 is a list"):
        prof.update_rows([{"a": 1}, [1, 2]])  # type: ignore[list-item]


def test_update_columns() -> None:
    prof = DatasetProfile()
    prof.update_columns({"x": np.array([1.0, np.nan, 3.0]), "s": ["a", None, "b"]}, 3)
    prof.update_columns({"x": np.array([4, 5])}, 2)
    assert prof.rows == 5
    assert (prof.columns["x"].count, prof.columns["x"].nan, prof.columns["x"].nulls) == (5, 1, 0)
    assert prof.columns["x"].types == {"integral": 4, "fractional": 1}
    assert (prof.columns["s"].count, prof.columns["s"].nulls) == (5, 3)
    with pytest.raises(ValueError, match="'x' has 2 values, expected 3"):
        prof.update_columns({"x": [1, 2]}, 3)


# -- bytes ---------------------------------------------------------------


@functools.cache
def _sample_bytes() -> bytes:
    return _sample_profile().to_bytes()


def _sample_profile() -> DatasetProfile:
    rng = np.random.default_rng(11)
    prof = DatasetProfile(meta={"model": "m", "start": "2024-01-01T00:00:00+00:00"})
    values = _mixed(rng, 5000)
    prof.update_rows([{"v": v, "n": float(rng.normal())} for v in values])
    prof.update_rows([{"inf": float("inf"), "big": 10**400}])
    return prof


def test_round_trip_through_bytes() -> None:
    prof = _sample_profile()
    back = DatasetProfile.from_bytes(prof.to_bytes())
    assert (back.rows, back.meta, back.kll_k) == (prof.rows, prof.meta, prof.kll_k)
    for name, col in prof.columns.items():
        other = back.columns[name]
        mine, theirs = col.to_dict(), other.to_dict()
        # frequent-items bytes list its hash map in slot order, which a reload changes
        assert mine.pop("freq") and theirs.pop("freq")
        assert theirs == mine
        assert other.quantiles([0.1, 0.9]) == col.quantiles([0.1, 0.9])
        assert other.distinct() == col.distinct()
        assert other.top(1000) == col.top(1000)
    back.merge(DatasetProfile.from_bytes(prof.to_bytes()))  # loaded sketches still merge
    assert back.rows == 2 * prof.rows
    assert back.columns["v"].top(3) == [(k, 2 * n) for k, n in prof.columns["v"].top(3)]


def _edited(mutate: Any) -> bytes:
    doc = orjson.loads(_sample_bytes())
    mutate(doc)
    return orjson.dumps(doc)


def _flip_sketch_byte(doc: dict[str, Any]) -> None:
    sk = doc["columns"]["n"]["kll"]
    raw = bytearray(base64.b64decode(sk["data"]))
    raw[len(raw) // 2] ^= 0xFF
    sk["data"] = base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x01garbage", "not valid JSON"),
        (b"", "not valid JSON"),
        (_sample_bytes()[:-40], "not valid JSON"),
        (b'{"hello": "world"}', "not a modeltap profile"),
        (b"[1, 2]", "not a modeltap profile"),
        (_edited(lambda d: d.update(format=FORMAT + 1)), "format 2 is not supported"),
        (_edited(lambda d: d.update(rows=-1)), "'rows' is -1"),
        (_edited(lambda d: d.update(columns=[])), "'columns' must be JSON objects"),
        (_edited(lambda d: d["columns"]["n"].update(count="x")), "column 'n': 'count' is 'x'"),
        (_edited(lambda d: d["columns"]["n"].update(min="low")), "'min' is 'low'"),
        (_edited(lambda d: d["columns"]["n"].pop("hll")), "'hll' sketch is missing"),
        (_edited(lambda d: d["columns"]["n"]["freq"].update(data="%%%")), "not base64"),
        (_edited(_flip_sketch_byte), "'kll' sketch fails its checksum"),
        (_edited(lambda d: d["columns"]["n"].update(numeric_count=3)), "numeric_count is 3"),
        (_edited(lambda d: d["columns"]["n"]["types"].update(weird=1)), "'types'"),
        (_edited(lambda d: d.update(rows=d["rows"] + 1)), "counts 5001 values in 5002 rows"),
        (_edited(lambda d: d["columns"].update(n=[1])), "column 'n': column profile is a list"),
    ],
)
def test_from_bytes_rejects_bad_input_saying_why(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DatasetProfile.from_bytes(data)


def test_unserialisable_meta_is_a_value_error() -> None:
    prof = DatasetProfile(meta={"x": object()})
    with pytest.raises(ValueError, match="meta is not JSON-serialisable"):
        prof.to_bytes()


# -- properties ----------------------------------------------------------

_chars = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([400, -5000, 63, 64]).map(lambda e: 2**e if e in (63, 64) else 10**e)
    | st.just(5000).map(lambda e: -(10**e))  # more digits than int->str allows
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(_chars, max_size=20)
    | st.sampled_from(["1", "1.0", "-0", "1e400", "x" * 300, "café"])
)
_json_like = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(_chars, max_size=5), inner),
    max_leaves=8,
)


def _check_counts(col: ColumnProfile) -> None:
    assert col.count == sum(col.types.values())
    assert col.nulls == col.types.get("null", 0)
    numeric = col.types.get("integral", 0) + col.types.get("fractional", 0)
    assert col.numeric_count + col.nan + col.inf <= numeric
    assert col.numeric_count == col.kll.n
    assert (col.min is None) == (col.numeric_count == 0)


@settings(max_examples=100, deadline=None)
@given(st.lists(_json_like, max_size=25), st.lists(_json_like, max_size=25))
def test_update_never_raises_and_counts_add_up(a: list[Any], b: list[Any]) -> None:
    left, right, whole = ColumnProfile(), ColumnProfile(), ColumnProfile()
    left.update(a)
    right.update(b)
    whole.update(a + b)
    for col in (left, right, whole):
        _check_counts(col)
        col.quantiles([0.5])
        col.top(3)
        col.distinct()
    left.merge(right)
    _check_counts(left)
    assert (left.count, left.types, left.numeric_count) == (
        whole.count,
        whole.types,
        whole.numeric_count,
    )
    prof = DatasetProfile()
    prof.update_columns({"c": a}, len(a))
    back = DatasetProfile.from_bytes(prof.to_bytes()).columns["c"]
    assert back.top(100) == prof.columns["c"].top(100)
    assert back.to_dict().pop("kll") == prof.columns["c"].to_dict().pop("kll")


@settings(max_examples=200, deadline=None)
@given(st.integers(-(10**60), 10**60) | st.floats(allow_nan=False))
def test_a_number_and_its_text_share_a_key(x: int | float) -> None:
    key = canonical(x)
    assert key == canonical(str(x))
    if isinstance(x, float) and math.isfinite(x) and x.is_integer():
        assert key == canonical(int(x))


@pytest.mark.parametrize("kind", ["ints", "floats", "strings", "strings_of_one_length"])
def test_numpy_hll_path_sets_the_registers_one_call_per_key_would(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Big batches reach HLL through registers computed in numpy; the sketch
    must end byte for byte as if every key had been fed to datasketches."""
    from capture import profile as mod

    assert mod._vector_hll()  # the self-check passed, so the fast path runs below
    rng = np.random.default_rng(11)
    n = 20_000
    values: list[Any]
    if kind == "ints":
        values = rng.integers(-(10**12), 10**12, n).tolist()
    elif kind == "floats":  # whole numbers key as ints, others as floats
        values = [*rng.normal(size=n).tolist(), *map(float, range(2000)), float("inf")]
    elif kind == "strings":  # plain ASCII, accents (NFC), number spellings, long strings, empty
        plain = [f"user-{i}" for i in rng.integers(0, 10**9, n)]
        values = [*plain, "café", "cafe\u0301", "1.0", "1e999", "x" * 400, ""]
    else:  # evenly spaced in the joined buffer: hashed from a strided view
        values = [f"k{i:020x}" for i in rng.integers(0, 2**62, n)]
    fast = ColumnProfile()
    fast.update(values)
    monkeypatch.setattr(mod, "VECTOR_HLL_MIN", 10**9)
    slow = ColumnProfile()
    slow.update(values)
    assert fast.hll.serialize_compact()[40:] == slow.hll.serialize_compact()[40:]
    assert fast.distinct() == pytest.approx(slow.distinct(), rel=0.02)
    assert fast.top(5) == slow.top(5)


def test_copy_is_the_decoded_profile_and_merges_as_it_does() -> None:
    """``copy()`` stands for ``from_bytes(to_bytes())`` between threads: the same
    document, and merges that give the same frequent items (a purge depends on
    the order a sketch's items come out in, which is the deserialised one's)."""
    rng = np.random.default_rng(11)
    parts = []
    for i in range(6):
        prof = DatasetProfile(meta={"part": i})
        for _ in range(2):
            n = 5000
            prof.update_columns(
                {
                    "s": [f"v{k}" for k in rng.zipf(1.2, n) % 20000],  # > FREQ_LG_MAX's map
                    "x": rng.normal(size=n),
                    "z": np.array([-0.0] * n),
                    "m": [None, "a", 1, float("nan"), math.inf] * (n // 5),
                },
                n,
            )
        parts.append(prof)
    parts[0].columns["z"].sum = parts[0].columns["z"]._mean = -0.0  # decoded as 0.0
    for prof in parts:
        decoded = DatasetProfile.from_bytes(prof.to_bytes())
        assert prof.copy().to_bytes() == decoded.to_bytes()
        assert prof.copy() is not prof and prof.copy().columns["s"] is not prof.columns["s"]
    by_copy, by_bytes = DatasetProfile(), DatasetProfile()
    for prof in parts:
        by_copy.merge(prof.copy())
        by_bytes.merge(DatasetProfile.from_bytes(prof.to_bytes()))
    assert by_copy.rows == by_bytes.rows and list(by_copy.columns) == list(by_bytes.columns)
    for name, col in by_copy.columns.items():
        assert _without_kll(col) == _without_kll(by_bytes.columns[name])
    assert by_copy.columns["x"].kll.n == by_bytes.columns["x"].kll.n == 60000


_EDGES = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0**53, 2.0**63, -(2.0**63), 1e300, -1e300, math.inf]
_EDGES.append(-math.inf)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(st.sampled_from(_EDGES), st.floats(allow_nan=False), st.integers(-1000, 1000)),
        max_size=40,
    )
)
def test_float_texts_are_the_canonical_keys_as_text(values: list[float]) -> None:
    """``_float_texts`` (keys of a batch's heavy floats, at C speed) against
    ``_text(_float_key(v))`` value by value, with ``whole`` as the numeric
    path derives it from the batch's counts, and unknown."""
    x = np.sort(np.array(values, dtype=np.float64))
    expected = [_text(_float_key(v)) for v in x.tolist()]
    finite = np.isfinite(x)
    is_whole = finite & (x == np.floor(x))
    known = None
    if finite.all() and x.size:
        known = True if is_whole.all() else False if not is_whole.any() else None
    assert _float_texts(x, known) == expected
    assert _float_texts(x, None) == expected


@pytest.mark.parametrize("kind", ["numbers", "strings", "mixed"])
def test_frequent_items_resolution_numbers_coarser_than_strings(kind: str) -> None:
    """In a batch of 20,000 values, frequent-items is fed a value seen more
    than 20,000/1024 times when the batch holds numbers only, and more than
    20,000/4096 times when it holds a string (see FREQ_RESOLUTION_NUMERIC):
    the rare values of a String column count as outside its domain, a
    number's never do."""

    def top_keys(sevens: int, eights: int) -> set[str]:
        batch: list[Any] = [*range(1000, 21_000 - sevens - eights), *[7] * sevens, *[8] * eights]
        if kind == "strings":
            batch = [f"{v}x" for v in batch]
        elif kind == "mixed":
            batch[0] = "a string"
        col = ColumnProfile()
        col.update(batch)
        return {k for k, _ in col.top(50)}

    bound = 20_000 // (1024 if kind == "numbers" else 4096)  # fed when seen more often
    seven, eight = ("7x", "8x") if kind == "strings" else ("7", "8")
    keys = top_keys(bound + 1, bound)
    assert seven in keys and eight not in keys
