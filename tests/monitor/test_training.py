"""monitor_job.readers.read_training: CSV, Parquet and JSONL as columnar
batches (nulls distinct from NaN, mixed types, nested fields), and every bad
file named with its problem."""

from __future__ import annotations

import datetime as dt
import decimal
import gzip
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from monitor_job import training
from monitor_job.readers import InputError, read_training


def concat(path: Path, batch_rows: int = 65536) -> tuple[dict[str, list[Any]], list[int]]:
    """All batches joined per column (as Python values), plus the batch sizes."""
    out: dict[str, list[Any]] = {}
    sizes = []
    for batch in read_training(str(path), batch_rows):
        lengths = {len(v) for v in batch.values()}
        assert len(lengths) == 1  # every column covers the same rows
        sizes.append(lengths.pop())
        for name, values in batch.items():
            if isinstance(values, np.ndarray):
                assert values.dtype == np.float64 and values.flags.writeable
                assert values.flags.c_contiguous
            if isinstance(values, pa.Array):
                values = values.to_pylist()
            out.setdefault(name, []).extend(list(values))
    return out, sizes


def same(a: list[Any], b: list[Any]) -> bool:
    """Equal, with NaN equal to NaN (and never to None)."""
    return len(a) == len(b) and all(
        (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
        or (x == y and (x is None) == (y is None))
        for x, y in zip(a, b, strict=True)
    )


def test_csv_nulls_nan_types_and_batches(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_text(
        "x,n,cat,flag,day,label\n"
        "1.5,1,web,true,2024-01-01,0\n"
        ",2,NA,false,2024-01-02,1\n"
        "NaN,,,true,,0\n"
        "inf,4,ios,,2024-01-04,1\n"
        "-2,5,NA,false,2024-01-05,0\n"
    )
    cols, sizes = concat(path, batch_rows=2)
    assert sizes == [2, 2, 1]
    assert same(cols["x"], [1.5, None, float("nan"), float("inf"), -2.0])
    assert cols["n"] == [1, 2, None, 4, 5]
    assert cols["cat"] == ["web", None, None, "ios", None]
    assert cols["flag"] == [True, False, True, None, False]
    assert cols["day"] == ["2024-01-01", "2024-01-02", None, "2024-01-04", "2024-01-05"]
    assert cols["label"] == [0.0, 1.0, 0.0, 1.0, 0.0]
    whole = next(read_training(str(path)))
    assert isinstance(whole["label"], np.ndarray)  # numeric, no nulls: float64
    # strings, and numbers with nulls, stay Arrow arrays for the profile
    assert isinstance(whole["x"], pa.Array) and isinstance(whole["cat"], pa.Array)
    assert isinstance(whole["day"], pa.Array) and isinstance(whole["flag"], list)


def test_csv_mixed_types_after_the_first_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training, "CSV_BLOCK_BYTES", 256)  # type inferred from a small block
    rows = [f"{i},{i * 0.5},c{i % 3}" for i in range(300)]
    rows[250] = "abc,oops,c1"
    rows[260] = "7,,c2"
    path = tmp_path / "mixed.csv.gz"
    path.write_bytes(gzip.compress(("a,b,c\n" + "\n".join(rows) + "\n").encode()))
    cols, sizes = concat(path, batch_rows=1000)
    assert len(cols["a"]) == len(cols["b"]) == len(cols["c"]) == 300
    expect_a: list[Any] = list(range(300))
    expect_a[250], expect_a[260] = "abc", 7
    expect_b: list[Any] = [i * 0.5 for i in range(300)]
    expect_b[250], expect_b[260] = "oops", None
    assert cols["a"] == expect_a
    assert cols["b"] == expect_b
    assert cols["c"] == [
        f"c{i % 3}" if i not in (250, 260) else f"c{1 if i == 250 else 2}" for i in range(300)
    ]
    assert sum(sizes) == 300


def test_parquet_nested_lists_nulls_and_types(tmp_path: Path) -> None:
    table = pa.table(
        {
            "x": pa.array([1.0, None, float("nan"), 4.0]),
            "i": pa.array([1, 2, 3, 4], pa.int32()),
            "big": pa.array([2**60, 1, 2, 3], pa.int64()),
            "d": pa.array([decimal.Decimal("1.25"), None, decimal.Decimal("2"), None]),
            "cat": pa.array(["a", "b", None, "a"]).dictionary_encode(),
            "ok": pa.array([True, False, None, True]),
            "ts": pa.array([dt.datetime(2024, 1, 1, 12), None, None, None], pa.timestamp("s")),
            "user": pa.array(
                [
                    {"age": 30, "geo": {"cc": "NL"}},
                    None,
                    {"age": None, "geo": None},
                    {"age": 41, "geo": {"cc": "DE"}},
                ]
            ),
            "tags": pa.array([["x", "y"], [], None, ["z"]]),
            "raw": pa.array([b"ab", None, b"\xff", b""]),
        }
    )
    path = tmp_path / "train.parquet"
    pq.write_table(table, path, row_group_size=3)
    cols, sizes = concat(path, batch_rows=2)
    assert sizes == [2, 1, 1]  # batches never span row groups; at most batch_rows
    assert list(cols) == [
        "x",
        "i",
        "big",
        "d",
        "cat",
        "ok",
        "ts",
        "user.age",
        "user.geo.cc",
        "tags",
        "raw",
    ]
    assert same(cols["x"], [1.0, None, float("nan"), 4.0])
    assert cols["i"] == [1.0, 2.0, 3.0, 4.0]
    assert cols["big"][0] == float(2**60)
    assert cols["d"] == [1.25, None, 2.0, None]
    assert cols["cat"] == ["a", "b", None, "a"]
    assert cols["ok"] == [True, False, None, True]
    assert cols["ts"][0].startswith("2024-01-01 12:00:00") and cols["ts"][1:] == [None] * 3
    assert cols["user.age"] == [30, None, None, 41]
    assert cols["user.geo.cc"] == ["NL", None, None, "DE"]
    assert cols["tags"] == [["x", "y"], [], None, ["z"]]
    assert cols["raw"] == ["ab", None, "\ufffd", ""]


def test_parquet_directory_of_parts(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "part=1").mkdir(parents=True)
    pq.write_table(pa.table({"a": [1, 2]}), root / "part=1" / "p0.parquet")
    pq.write_table(pa.table({"a": [3]}), root / "p1.parquet")
    (root / "_SUCCESS").write_text("")
    cols, sizes = concat(root)
    assert sorted(cols["a"]) == [1.0, 2.0, 3.0] and sum(sizes) == 3


def test_jsonl_nested_nan_mixed_and_late_columns(tmp_path: Path) -> None:
    lines = [
        '{"x": 1, "u": {"age": 30, "tags": ["a"]}, "m": 1}',
        "",
        '{"x": 2.5, "u": {"age": null}, "m": "two"}',
        '{"x": NaN, "m": true, "late": "z"}',
        '{"x": Infinity, "u": {"age": 9}}',
    ]
    path = tmp_path / "train.jsonl.gz"
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    batches = list(read_training(str(path), batch_rows=2))
    assert [len(b["x"]) for b in batches] == [2, 2]
    assert isinstance(batches[0]["x"], np.ndarray)  # all numbers, no nulls
    assert list(batches[1]) == ["x", "u.age", "u.tags", "m", "late"]  # earlier columns kept
    cols, _ = concat(path, batch_rows=2)
    assert same(cols["x"], [1.0, 2.5, float("nan"), float("inf")])
    assert cols["u.age"] == [30, None, None, 9]
    assert cols["u.tags"] == [["a"], None, None, None]
    assert cols["m"] == [1, "two", True, None]
    assert cols["late"] == ["z", None]  # first seen in the second batch


_GZ = gzip.compress(b"".join(b'{"a": %d, "b": "x%d"}\n' % (i, i) for i in range(20_000)))
GARBLED = _GZ[:40] + b"\xff" * 200 + _GZ[240:]
BAD_CRC = _GZ[:-8] + bytes([_GZ[-8] ^ 0xFF]) + _GZ[-7:]


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("ragged.csv", b"a,b\n1,2\n1,2,3\n", r"not a readable CSV.*Expected 2 columns, got 3"),
        ("bin.csv", bytes(range(256)) * 8, r"not a readable CSV"),
        ("empty.csv", b"", r"empty file"),
        ("header.csv", b"a,b\n", r"no data rows"),
        ("dupe.csv", b"a,a\n1,2\n", r"duplicate column names \['a'\]"),
        ("text.parquet", b"this is not parquet", r"not a readable Parquet file"),
        ("bad.jsonl", b'{"a": 1}\n{"a": 2}\n{"a": \n', r"line 3: invalid JSON"),
        ("list.jsonl", b'{"a": 1}\n[1, 2]\n', r"line 2: a JSON list, not an object"),
        ("cut.jsonl.gz", gzip.compress(b'{"a": 1}\n' * 1000)[:60], r"unreadable"),
        ("garbled.jsonl.gz", GARBLED, r"unreadable"),  # a damaged deflate stream
        ("crc.jsonl.gz", BAD_CRC, r"unreadable: CRC check failed"),
        ("data.xlsx", b"PK\x03\x04", r"unknown training data format"),
    ],
)
def test_bad_training_files_name_the_file_and_problem(
    tmp_path: Path, name: str, data: bytes, problem: str
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError, match=rf"^{path}: {problem}"):
        list(read_training(str(path)))


def test_missing_paths_and_empty_directories(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=rf"^{tmp_path / 'nope.csv'}: no such file"):
        list(read_training(str(tmp_path / "nope.csv")))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match=rf"^{tmp_path}: no training files"):
        list(read_training(str(tmp_path)))


def test_baseline_from_arrow_batches_equals_the_one_from_their_values(tmp_path: Path) -> None:
    """The reader hands strings (plain and dictionary-encoded), numbers with
    nulls and timestamps over as Arrow arrays; the profile is the one their
    Python values give (string columns byte for byte; numeric ones but for
    KLL, which compacts at random)."""
    from capture.profile import DatasetProfile

    rng = np.random.default_rng(9)
    n = 30_000
    ids = [f"u{j}" if j % 17 else None for j in rng.integers(0, 10**6, n).tolist()]
    city = rng.choice(["Lyon", "Zürich", "Sa\u0303o Paulo", "1.0", "1"], n).tolist()
    score: list[Any] = rng.normal(size=n).tolist()
    score[::13] = [None] * len(score[::13])
    count: list[Any] = rng.integers(0, 9, n).tolist()
    count[::7] = [None] * len(count[::7])
    table = pa.table(
        {
            "id": pa.array(ids),
            "city": pa.array(city).dictionary_encode(),
            "score": pa.array(score),
            "count": pa.array(count, pa.int64()),
            "day": pa.array([dt.date(2024, 1, 1 + i % 28) for i in range(n)]),
        }
    )
    path = tmp_path / "train.parquet"
    pq.write_table(table, path)
    from_arrow, from_values = DatasetProfile(), DatasetProfile()
    reader = pq.ParquetFile(path, read_dictionary=["city"])  # keep "city" dictionary-encoded
    batches = [training._columns(b) for b in reader.iter_batches(batch_size=8192)]
    assert isinstance(batches[0]["city"], pa.DictionaryArray)
    for batch in [*batches, *read_training(str(path), 10_000)]:
        rows = len(batch["id"])
        assert all(isinstance(batch[c], pa.Array) for c in ("id", "city", "score", "count"))
        from_arrow.update_columns(batch, rows)
        plain = {k: v.to_pylist() if isinstance(v, pa.Array) else v for k, v in batch.items()}
        from_values.update_columns(plain, rows)
    for name in table.column_names:
        mine, theirs = from_arrow.columns[name].to_dict(), from_values.columns[name].to_dict()
        if name in ("score", "count"):
            del mine["kll"], theirs["kll"]
        assert mine == theirs, name
    assert from_arrow.rows == 2 * n and from_arrow.columns["id"].nulls == 2 * ids.count(None)
