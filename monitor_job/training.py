"""Training data for baselines: CSV, Parquet and JSONL read as columnar batches.

    for batch in read_training("train.parquet"):      # {column: values}
        profile.update_columns(batch, n_rows)

Formats by extension: ``.csv`` (``.csv.gz``), ``.parquet``/``.pq``,
``.jsonl``/``.ndjson`` (``.gz``); a directory means every such file under it
(sorted; hidden and ``_``-prefixed files such as ``_SUCCESS`` skipped).
pyarrow is the ``monitor`` extra, imported when a CSV or Parquet is read.

A batch maps each column to its values for the same rows:

- a numeric column without nulls is a float64 numpy array (writable,
  contiguous; NaN and inf kept as such);
- from CSV and Parquet, a string column (dictionary-encoded ones too), a
  numeric column with nulls (null stays distinct from NaN) and a date or
  timestamp column (as ISO strings) stay pyarrow arrays: the profile counts
  them in Arrow, without a Python object per value, and gets the profile the
  same values as a list would give;
- any other column is a Python list: numbers with ``None`` for nulls, strings,
  bools; nested lists stay list values.
- struct columns (Parquet) and nested objects (JSON) are spread into dotted
  columns (``user.age``); capture rows are flattened the same way.

CSV decisions: types are inferred by pyarrow from the first block; when a
later block holds a value the inferred type cannot take (``"abc"`` in a
column of numbers), that column is read again as text from where it failed
and each cell becomes a number when it reads as one, else a string, so a
mixed column stays mixed instead of failing the baseline. Empty cells and
``NA``, ``N/A``, ``#N/A``, ``NULL``, ``null``, ``None`` are nulls; ``NaN``
and ``nan`` are the float NaN. Training JSONL is strict: a bad line is an
error (unlike captures, where one torn line is skipped and counted).

Every problem is an ``InputError`` naming the file and the problem.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson

from capture.compression import GZIP_READ_ERRORS, gzip_reader
from capture.payloads.csv_body import parse_cell
from capture.profile import ArrowArray, Column
from capture.rows import spread
from monitor_job.locations import InputError, iter_lines

log = logging.getLogger(__name__)

Batch = dict[str, Column]

FORMATS = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl",
    ".ndjson": "jsonl",
    ".ndjson.gz": "jsonl",
}
CSV_NULLS = ["", "NA", "N/A", "#N/A", "NULL", "null", "None"]
CSV_BLOCK_BYTES = 4 * 1024 * 1024
MAX_LINE_BYTES = 64 * 1024 * 1024

_CSV_COLUMN = re.compile(r"In CSV column #(\d+): CSV conversion error")


def _format(path: Path) -> str | None:
    name = path.name.lower()
    return next((f for suffix, f in FORMATS.items() if name.endswith(suffix)), None)


def read_training(path: str, batch_rows: int = 65536) -> Iterator[Batch]:
    """Columnar batches of at most ``batch_rows`` rows from a training file or directory."""
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    if path.startswith("s3://"):
        yield from _s3_training(path, batch_rows)
        return
    root = Path(path).expanduser()
    if root.is_dir():
        files = sorted(
            p
            for p in root.rglob("*")
            if p.is_file() and not p.name.startswith((".", "_")) and _format(p) is not None
        )
        if not files:
            raise InputError(f"{root}: no training files ({', '.join(FORMATS)}) in the directory")
    elif root.exists():
        files = [root]
    else:
        raise InputError(f"{root}: no such file or directory")
    for file in files:
        if file.stat().st_size == 0:
            raise InputError(f"{file}: empty file")
        fmt = _format(file)
        if fmt is None:
            raise InputError(
                f"{file}: unknown training data format (use one of {', '.join(FORMATS)})"
            )
        rows = 0
        reader = {"csv": _csv, "parquet": _parquet, "jsonl": _jsonl}[fmt]
        for batch in reader(file, batch_rows):
            rows += max((len(v) for v in batch.values()), default=0)
            yield batch
        if rows == 0:
            raise InputError(f"{file}: no data rows")


def _s3_training(url: str, batch_rows: int) -> Iterator[Batch]:
    """One training object on S3 (``s3://bucket/key.csv``), read through a
    temporary local copy: Parquet needs random access, and a training file is
    read once per baseline. A prefix is not listed: name the object."""
    import tempfile

    from botocore.exceptions import BotoCoreError, ClientError

    from monitor_job.locations import ENDPOINT_ENV, s3_client, s3_problem

    bucket, _, key = url.removeprefix("s3://").partition("/")
    name = key.rsplit("/", 1)[-1]
    if not bucket or not key or _format(Path(name)) is None:
        raise InputError(
            f"{url}: name one training object ({', '.join(FORMATS)}), e.g. s3://bucket/train.csv"
        )
    with tempfile.TemporaryDirectory(prefix="modeltap-training-") as tmp:
        local = Path(tmp) / name
        try:
            s3_client(os.environ.get(ENDPOINT_ENV) or None).download_file(bucket, key, str(local))
        except (ClientError, BotoCoreError) as exc:
            raise InputError(f"{url}: {s3_problem(exc)}") from exc
        try:
            yield from read_training(str(local), batch_rows)
        except InputError as exc:  # name the object, not the temporary copy
            raise InputError(str(exc).replace(str(local), url)) from None


# -- Arrow (CSV, Parquet) ---------------------------------------------------------


def _values(arr: Any, cells: bool = False) -> Column:
    """One Arrow array as a batch column (see the module docstring)."""
    import pyarrow as pa

    t = arr.type
    coded = pa.types.is_dictionary(t)
    text = pa.types.is_string(t.value_type if coded else t) or pa.types.is_large_string(
        t.value_type if coded else t
    )
    if coded and (cells or not text):
        arr = arr.dictionary_decode()
        t = arr.type
    if text and not cells:
        return cast(ArrowArray, arr)  # the profile counts Arrow strings itself
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        if pa.types.is_decimal(t):
            arr = arr.cast(pa.float64(), safe=False)
        if arr.null_count == 0:
            numbers = arr.cast(pa.float64(), safe=False).to_numpy(zero_copy_only=False)
            return np.array(numbers, dtype=np.float64)  # a writable copy
        return cast(ArrowArray, arr)  # nulls kept apart from NaN by the profile
    if pa.types.is_temporal(t):
        return cast(ArrowArray, arr.cast(pa.string()))
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return [None if b is None else b.decode("utf-8", "replace") for b in arr.to_pylist()]
    values = arr.to_pylist()
    if cells:
        return [None if v is None else parse_cell(v) for v in values]
    return list(values)


def _columns(batch: Any, text_columns: frozenset[str] = frozenset()) -> Batch:
    """A RecordBatch as a batch, struct columns spread into dotted names."""
    import pyarrow as pa

    out: Batch = {}
    stack = list(zip(batch.schema.names, batch.columns, strict=True))[::-1]
    while stack:
        name, arr = stack.pop()
        if pa.types.is_struct(arr.type):
            children = [
                (f"{name}.{f.name}", a) for f, a in zip(arr.type, arr.flatten(), strict=True)
            ]
            stack.extend(children[::-1])
            continue
        out[name] = _values(arr, cells=name in text_columns)
    return out


def _slices(batch: Any, size: int) -> Iterator[Any]:
    for offset in range(0, batch.num_rows, size):
        yield batch.slice(offset, size)


def _csv(path: Path, batch_rows: int) -> Iterator[Batch]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    text: dict[str, Any] = {}  # columns re-read as text after a conversion error
    done = 0  # rows already yielded; a re-read skips them
    while True:
        try:
            reader = pacsv.open_csv(
                path,
                read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                convert_options=pacsv.ConvertOptions(
                    null_values=CSV_NULLS, strings_can_be_null=True, column_types=text
                ),
            )
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{path}: not a readable CSV: {exc}") from exc
        names = reader.schema.names
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InputError(f"{path}: duplicate column names {dupes}")
        skip = done
        try:
            for block in reader:
                if skip >= block.num_rows:
                    skip -= block.num_rows
                    continue
                block = block.slice(skip)
                skip = 0
                for part in _slices(block, batch_rows):
                    yield _columns(part, frozenset(text))
                    done += part.num_rows
            return
        except pa.ArrowInvalid as exc:
            match = _CSV_COLUMN.search(str(exc))
            column = names[int(match[1])] if match and int(match[1]) < len(names) else None
            if column is None or column in text:
                raise InputError(f"{path}: not a readable CSV after row {done}: {exc}") from exc
            log.info("%s: column %r holds mixed types; reading it as text", path, column)
            text[column] = pa.string()


def _parquet(path: Path, batch_rows: int) -> Iterator[Batch]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        source = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file: {exc}") from exc
    try:
        for batch in source.iter_batches(batch_size=batch_rows):
            if batch.num_rows:
                yield _columns(batch)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{path}: Parquet data unreadable: {exc}") from exc
    finally:
        source.close()


# -- JSONL ------------------------------------------------------------------------


def _json_line(path: Path, lineno: int, line: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        try:  # NaN / Infinity literals, as Python's json writes them
            obj = json.loads(line)
        except (ValueError, RecursionError):
            raise InputError(f"{path}: line {lineno}: invalid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{path}: line {lineno}: a JSON {type(obj).__name__}, not an object")
    flat: dict[str, Any] = {}
    for k, v in obj.items():
        spread(flat, k, v)
    return flat


def _json_batch(rows: list[dict[str, Any]], names: dict[str, None]) -> Batch:
    for row in rows:
        for name in row:
            names.setdefault(name, None)
    out: Batch = {}
    for name in names:
        values = [row.get(name) for row in rows]
        numeric = all(type(v) in (int, float) for v in values)
        out[name] = np.array(values, dtype=np.float64) if numeric else values
    return out


def _jsonl(path: Path, batch_rows: int) -> Iterator[Batch]:
    names: dict[str, None] = {}  # every column seen so far, in order of first appearance
    rows: list[dict[str, Any]] = []
    try:
        with open(path, "rb") as raw:
            stream: Any = gzip_reader(raw) if raw.peek(2)[:2] == b"\x1f\x8b" else raw
            for lineno, (line, complete) in enumerate(iter_lines(stream, MAX_LINE_BYTES), 1):
                if not complete:
                    raise InputError(f"{path}: line {lineno}: longer than {MAX_LINE_BYTES} bytes")
                if line.isspace():
                    continue
                rows.append(_json_line(path, lineno, line))
                if len(rows) >= batch_rows:
                    yield _json_batch(rows, names)
                    rows = []
    except GZIP_READ_ERRORS as exc:
        raise InputError(f"{path}: unreadable: {exc}") from exc
    if rows:
        yield _json_batch(rows, names)
