"""Arrow input to profiles: a pyarrow column (plain, large, dictionary-encoded,
chunked, sliced) gives the profile its Python values (``to_pylist()``) give,
byte for byte, and ``capture.profile`` never imports pyarrow on its own."""

from __future__ import annotations

import subprocess
import sys
import unicodedata
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capture import profile as mod
from capture.profile import MAX_STRING, VECTOR_HLL_MIN, ColumnProfile, DatasetProfile

NFD = unicodedata.normalize("NFD", "café")
# Spellings that canonical() rewrites or keeps, and pairs that fold into one key
# ("1e999" -> "inf", the Kelvin sign -> "K", NFD -> NFC, "1.0" -> "1").
ODD = [
    "café",
    NFD,
    "1",
    "1.0",
    "-0",
    "2.50",
    "1e999",
    "inf",
    "01",
    " 1",
    "nan",
    "\u212a",
    "K",
    "",
    "x" * 300,
    "é" * 300,
    "a" * MAX_STRING,
    "中文",
    "12345678901234567890123",
]


def _profile(values: Any) -> dict[str, Any]:
    col = ColumnProfile()
    col.update(values)
    return col.to_dict()


def _strings(n: int, distinct: int, seed: int = 3) -> list[str | None]:
    """Skewed strings with nulls and every ODD spelling, ``distinct`` ids."""
    rng = np.random.default_rng(seed)
    vocab = [*ODD, *(f"id-{j:06x}" for j in range(distinct))]
    picks = (rng.zipf(1.1, n) - 1) % len(vocab)
    out: list[str | None] = [vocab[i] for i in picks.tolist()]
    for i in rng.choice(n, n // 10, replace=False).tolist():
        out[i] = None
    out[: len(ODD)] = ODD  # each at least once
    return out


def _forms(values: list[Any]) -> dict[str, Any]:
    """The same strings as each kind of Arrow column."""
    third = len(values) // 3
    parts = [values[:third], [], values[third : 2 * third], values[2 * third :]]
    padded = pa.array(["pad", *values, "pad"])
    return {
        "string": pa.array(values, pa.string()),
        "large_string": pa.array(values, pa.large_string()),
        "dictionary": pa.array(values, pa.string()).dictionary_encode(),
        "chunked": pa.chunked_array([pa.array(p, pa.string()) for p in parts], pa.string()),
        # each chunk its own dictionary: value_counts unifies them
        "chunked_dictionary": pa.chunked_array(
            [pa.array(p, pa.string()).dictionary_encode() for p in parts]
        ),
        "sliced": padded.slice(1, len(values)),
    }


@pytest.mark.parametrize("distinct", [40, 3 * VECTOR_HLL_MIN])
@pytest.mark.parametrize(
    "form", ["string", "large_string", "dictionary", "chunked", "chunked_dictionary", "sliced"]
)
def test_arrow_strings_profile_as_their_values(distinct: int, form: str) -> None:
    values = _strings(20_000, distinct)
    arrow = _forms(values)[form]
    expect = _profile(values)
    assert _profile(arrow) == expect  # counters and serialised sketches
    col = ColumnProfile()
    col.update(arrow)
    assert col.nulls == values.count(None) == arrow.null_count
    assert col.types == {"null": col.nulls, "string": len(values) - col.nulls}
    if distinct < VECTOR_HLL_MIN:  # few keys: frequent-items counts are exact
        keys = dict(col.top(1000))
        assert keys["inf"] == values.count("inf") + values.count("1e999")
        assert keys["K"] == values.count("K") + values.count("\u212a")
        assert keys["café"] == values.count("café") + values.count(NFD)
        assert keys["1"] == values.count("1") + values.count("1.0")
        assert "x" * 300 not in keys and any(k.startswith("x" * 200 + "…#") for k in keys)
    else:  # the numpy HLL path: the registers one call per key gives
        slow = ColumnProfile()
        slow._feed_keys(mod._keyed({v: 1 for v in values if v is not None}))
        assert col.hll.serialize_compact()[40:] == slow.hll.serialize_compact()[40:]


def _ids(n: int, seed: int = 4) -> list[str | None]:
    """Id-like strings (nearly all distinct, of a few lengths) with repeats, a
    heavy value, nulls, empty strings and every ODD spelling."""
    rng = np.random.default_rng(seed)
    out: list[str | None] = [f"{i:016x}" for i in rng.integers(0, 2**62, n)]
    for i in range(0, n, 7):
        out[i] = f"u-{i % 500}"  # shorter, and repeated a few times
    for i in range(3, n, 1000):
        out[i] = "heavy"
    for i in range(5, n, 997):
        out[i] = None
    out[1000 : 1000 + len(ODD)] = ODD
    out[2100:2103] = ["", "", "1" * 16]  # empty ones, and an id that is a number
    return out


@pytest.mark.parametrize("form", ["string", "large_string", "sliced"])
def test_id_like_arrow_strings_counted_by_hash_profile_as_their_values(
    form: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of nearly distinct strings is counted by hashing them
    (``_arrow_counts_by_hash``): same values, counts and order of first
    appearance as Arrow's ``value_counts``, same profile as the list."""
    import pyarrow.compute as pc

    values = _ids(20_000)
    arrow = _forms(values)[form]
    counted = mod._arrow_counts_by_hash(arrow)
    assert counted is not None
    ref = pc.value_counts(arrow).filter(pc.is_valid(pc.value_counts(arrow).field(0)))
    assert counted[0].to_pylist() == ref.field(0).to_pylist()
    assert counted[1].to_pylist() == ref.field(1).to_pylist()
    calls: list[Any] = []
    by_hash = mod._arrow_counts_by_hash
    monkeypatch.setattr(mod, "_arrow_counts_by_hash", lambda a: calls.append(a) or by_hash(a))
    assert _profile(arrow) == _profile(values)
    assert calls  # the id-like test chose the hash path


def test_strings_sharing_a_hash_are_counted_by_arrow(monkeypatch: pytest.MonkeyPatch) -> None:
    values = _ids(20_000, seed=5)
    expect = _profile(values)
    hashes = mod._string_hashes
    monkeypatch.setattr(
        mod, "_string_hashes", lambda *a: tuple(h % np.uint64(10_007) for h in hashes(*a))
    )
    assert mod._arrow_counts_by_hash(pa.array(values)) is None  # different strings, one hash
    assert _profile(pa.array(values)) == expect


def test_all_distinct_and_all_null_id_batches() -> None:
    distinct = [f"id-{i:08d}" for i in range(5000)]
    assert _profile(pa.array(distinct)) == _profile(distinct)
    counted = mod._arrow_counts_by_hash(pa.array([None, *distinct, None]))
    assert counted is not None and counted[0].to_pylist() == distinct
    assert set(counted[1].to_pylist()) == {1}
    empty = mod._arrow_counts_by_hash(pa.array([None] * 3, pa.string()))
    assert empty is not None and len(empty[0]) == len(empty[1]) == 0


def test_strings_of_one_length_unevenly_spaced_hash_as_their_bytes() -> None:
    """Strings of length 4 at gaps of 4 and 6 bytes alternately (a string of 2
    between every other pair) span as much as an even spacing of 5 would: they
    must still be read one by one, not as a strided block."""
    chars = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    values: list[str] = []
    for i in range(1500):
        values += [f"a{i:03x}", f"b{i:03x}", chars[i // 62] + chars[i % 62]]
    values.append("zzzz")  # an odd number of 4-byte strings: span == 5 * (n - 1)
    assert _profile(pa.array(values)) == _profile(values)


def test_update_columns_with_arrow_strings_gives_the_same_bytes() -> None:
    rng = np.random.default_rng(8)
    batches = []
    for size in (3000, 5000, 25):
        cols = {"s": _strings(size, 2000, seed=size), "x": rng.normal(size=size)}
        batches.append((cols, size))
    from_lists, from_arrow = DatasetProfile(), DatasetProfile()
    for cols, size in batches:
        from_lists.update_columns({"s": cols["s"]}, size)
        from_arrow.update_columns({"s": pa.array(cols["s"])}, size)
    assert from_arrow.to_bytes() == from_lists.to_bytes()
    with pytest.raises(ValueError, match="has 2 values, expected 3"):
        from_arrow.update_columns({"s": pa.array(["a", "b"])}, 3)


@pytest.mark.parametrize("start", [0, 3])
def test_keys_read_from_arrow_buffers_as_from_str(start: int) -> None:
    """``_arrow_plain`` on an array that starts inside its buffers (a slice)."""
    keys = ["zz", "9", "", *ODD[:12], "abc", "1e5", "x" * 257, "é"]
    arrow = pa.array(["pad-a", "1", "pad-c", *keys]).slice(start)
    keys = arrow.to_pylist()
    from_str, from_arrow = mod._plain_strings(keys), mod._arrow_plain(arrow)
    assert from_str is not None and from_arrow is not None
    assert from_arrow[3].tolist() == from_str[3].tolist()  # own keys
    for buf, starts, lengths, _ in (from_str, from_arrow):
        got = [bytes(buf[a : a + n]).decode() for a, n in zip(starts, lengths, strict=True)]
        assert got == keys


def test_char_flags_match_the_translation_table() -> None:
    every_byte = np.arange(256, dtype=np.uint8)
    assert mod._char_flags(every_byte).tobytes() == mod._CHAR_FLAGS
    text = "1e5 -2.5 +x é\x00".encode()
    assert mod._char_flags(np.frombuffer(text, np.uint8)).tobytes() == text.translate(
        mod._CHAR_FLAGS
    )


def test_a_dictionary_repeating_a_value_counts_it_once() -> None:
    """Arrow does not require a dictionary's values to be distinct: a value held
    twice must reach frequent-items with its whole count (6 of 20,000 passes
    ``FREQ_RESOLUTION``, 3 does not)."""
    vocab = [f"id-{j}" for j in range(20_000)]
    words = pa.array([*vocab, "dup", "dup"])
    idx = [*range(19_994), *[20_000] * 3, *[20_001] * 3]
    arrow = pa.DictionaryArray.from_arrays(pa.array(idx, pa.int32()), words)
    values = arrow.to_pylist()
    assert _profile(arrow) == _profile(values)
    col = ColumnProfile()
    col.update(arrow)
    assert col.top(1) == [("dup", 6)]


@pytest.mark.parametrize(
    "empty",
    [
        pa.array([], pa.string()),
        pa.array([], pa.large_string()),
        pa.array([], pa.string()).dictionary_encode(),
        pa.chunked_array([], pa.string()),
        pa.array([], pa.float64()),
        pa.array([None, None], pa.string()),
        pa.array([None, None], pa.string()).dictionary_encode(),
        pa.array([None, None], pa.int64()),
        pa.array([None, None], pa.null()),
    ],
)
def test_empty_and_all_null_arrow_columns(empty: Any) -> None:
    assert _profile(empty) == _profile(empty.to_pylist())
    col = ColumnProfile()
    col.update(empty)
    assert col.count == col.nulls == len(empty)
    assert col.distinct() == 0 and col.top(3) == [] and col.quantiles([0.5]) == []


@pytest.mark.parametrize("distinct", [10, 2 * VECTOR_HLL_MIN])
def test_a_nul_inside_a_string_takes_the_lists_path_too(distinct: int) -> None:
    values = [*_strings(5000, distinct), *["a\x00b", "\x00"] * 50]
    assert _profile(pa.array(values)) == _profile(values)
    col = ColumnProfile()
    col.update(pa.array(values))
    assert {"a\x00b", "\x00"} <= {key for key, _ in col.top(10_000)}


@pytest.mark.parametrize("distinct", [10, 2 * VECTOR_HLL_MIN])
def test_invalid_utf8_is_replaced_as_the_reader_decodes_binary(distinct: int) -> None:
    good = [s for s in _strings(5000, distinct) if s is not None]
    raw = [s.encode() for s in good] + [b"\xff\xfe", b"ok\xff", b"\xfe\xff"]
    data = b"".join(raw)
    offsets = np.cumsum([0, *map(len, raw)]).astype(np.int32)
    arrow = pa.Array.from_buffers(
        pa.string(), len(raw), [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data)]
    )
    decoded = [b.decode("utf-8", "replace") for b in raw]
    assert decoded[-3] == decoded[-1] == "\ufffd\ufffd"  # two spellings, one key
    assert _profile(arrow) == _profile(decoded)


def test_arrow_numbers_profile_as_their_values() -> None:
    """Below KLL's k (200) the quantile sketch is exact, so whole profiles compare."""
    rng = np.random.default_rng(4)
    floats: list[Any] = rng.normal(size=150).round(2).tolist()
    floats[::7] = [None] * len(floats[::7])
    floats[3::11] = [float("nan")] * len(floats[3::11])
    floats[5], floats[6] = float("inf"), float("-inf")
    ints: list[Any] = rng.integers(-50, 50, 150).tolist()
    ints[::9] = [None] * len(ints[::9])
    big: list[Any] = [2**60 + 1, 2**60, None, 3, -(2**62)]
    cases = [
        pa.array(floats, pa.float64()),
        pa.array(floats, pa.float32()),
        pa.array(ints, pa.int64()),
        pa.array(ints, pa.int8()),
        pa.array([i for i in ints if i is not None], pa.int32()),
        pa.array([5, 2**63, 2**64 - 1], pa.uint64()),
        pa.array(big, pa.int64()),  # beyond 2**53: exact keys, as a list keeps them
        pa.chunked_array([floats[:50], floats[50:]], pa.float64()),
        pa.array(rng.normal(size=100)),
    ]
    for arrow in cases:
        assert _profile(arrow) == _profile(arrow.to_pylist()), arrow.type
    col = ColumnProfile()
    col.update(cases[0])
    assert col.nulls == floats.count(None) and col.nan == len(floats[3::11])
    assert col.inf == 2
    exact = ColumnProfile()
    exact.update(pa.array(big, pa.int64()))
    assert {key for key, _ in exact.top(5)} == {str(2**60 + 1), str(2**60), "3", str(-(2**62))}


def test_large_arrow_numbers_agree_with_numpy() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=50_000)
    holes = rng.random(x.size) < 0.1
    arrow = pa.array(x, mask=holes)
    col = ColumnProfile()
    col.update(arrow)
    ref = ColumnProfile()
    ref.update(np.where(holes, np.nan, x))
    ref.nulls, ref.nan = int(holes.sum()), 0
    ref.types = {"null": ref.nulls, "fractional": x.size - ref.nulls}
    mine, theirs = col.to_dict(), ref.to_dict()
    del mine["kll"], theirs["kll"]  # KLL compacts at random
    assert mine == theirs and col.kll.n == ref.kll.n == x.size - holes.sum()


_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.none() | _text | st.sampled_from(ODD), max_size=80),
    st.integers(0, 80),
    st.booleans(),
)
def test_any_strings_any_chunking_same_profile(values: list[Any], cut: int, fast: bool) -> None:
    with pytest.MonkeyPatch.context() as mp:
        if fast:  # the numpy HLL path even for a handful of keys
            mp.setattr(mod, "VECTOR_HLL_MIN", 2)
        chunked = pa.chunked_array([values[:cut], values[cut:]], pa.string())
        expect = _profile(values)
        assert _profile(chunked) == expect
        assert _profile(chunked.cast(pa.large_string())) == expect
        assert _profile(pa.array(values, pa.string()).dictionary_encode()) == expect


def test_capture_profile_does_not_import_pyarrow() -> None:
    code = (
        "import sys\n"
        "import capture.profile as p\n"
        "c = p.ColumnProfile(); c.update(['a', None, 'b']); c.update([1.5, 2])\n"
        "assert 'pyarrow' not in sys.modules, 'imported pyarrow'\n"
        "sys.modules['pyarrow'] = None  # and works where pyarrow cannot be imported\n"
        "p.DatasetProfile().update_columns({'s': ['x'] * 3000, 'n': [1, 2, 3] * 1000}, 3000)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
