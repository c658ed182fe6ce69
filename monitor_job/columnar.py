"""The Arrow read path: the capture's own record objects (schema 1) as columns.

    loaded = load(ref)                      # raises Fallback; C++ parsing, GIL released
    for batch in loaded.batches(keep):      # ArrowBatch: FlatColumns' interface
        batch.profile(prof)

``monitor_job.execute`` profiles an object from here when it can and from
``read_records`` + ``FlatColumns`` (the row path) otherwise. Invariant: for
an object it accepts, this path gives the row path's rows, column names,
values (as the profile sees them), batches and counts, so every profile is
the same; whatever it cannot vouch for raises ``Fallback`` (with a reason,
counted by the caller) and the row path reads that object instead. It never
guesses.

How an object is read: whole (gzip by its magic bytes, as ``read_records``),
at most ``MAX_OBJECT_BYTES``. Its bytes are checked for what ``orjson`` and
Arrow's JSON parser read differently (invalid UTF-8, ``NaN``/``Inf``
spellings, an int ``-0``; see ``_lines``) and for one ``{...}`` per line.
Each line is cut at the record's own ``,"context":`` (the capture writes
``context``, ``lookups``, ``rows``, ``parse`` and ``sampling`` last): the
first one, or, when a line holds more (a ranking request's own
``context``, a value with such a key), the one at the record's level,
found by counting the brackets outside strings (``_depth_at``). Then
``pyarrow.json`` parses both parts:

- the heads (up to the cut, closed with ``}``), keeping ``schema``,
  ``time``, ``model.version`` and ``parse.error``: other fields are skipped
  but parsed, so invalid JSON anywhere in them fails the object (and a
  ``sampling`` there falls back: the tail's is the one read, for the
  volume check's weights, ``Loaded.sampled_rows``);
- the tails (from the cut, opened with ``{``), with a schema taken from the
  object's first record and no other field allowed: a record with a key the
  first lacks, at any depth, fails the parse instead of being dropped, and
  one lacking a key shows a null, which falls back too.

Head and tail are each one JSON object exactly when the line is one object
and the tail holds its members from ``context`` on: a cut inside a nested
value leaves one part unbalanced, which fails the parse.

Arrow is strict about types (a number where the first record had a string
fails), so every column holds one JSON type. Numbers are read as float64:
the profile counts ``3`` and ``3.0`` alike (``value_kind``) and keys them
alike (``canonical``), so only magnitudes a float64 cannot hold exactly
(>= 2**53) fall back. Nested dicts in ``context`` and ``lookups`` are
spread into dotted columns (``context.user.tier``) as ``capture.rows``
spreads them, and so are a ranked item's own lookups (``lookups.stock``;
an item lookup named like one of the record's falls back). Records that
name no model version give no ``model.version`` column, as on the row path,
when none in the object does. What this path does not take at all: nested
features, lists, nulls, records without rows, other row keys, other schema
versions, times not in the capture's format, SageMaker lines, names that are
not plain ASCII, an object where some records name a model version and some
do not.
"""

from __future__ import annotations

import gzip
import io
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from capture.compression import INFLATE_ERRORS, gzip_inflater
from capture.profile import DatasetProfile
from capture.record import parse_time
from capture.rows import MAX_NESTING, feature_column
from monitor_job.locations import ObjectRef, open_location

MAX_OBJECT_BYTES = 24 * 1024 * 1024  # decompressed; larger objects are streamed as rows
BLOCK_BYTES = 4 << 20  # Arrow's parse block: ~8% less CPU than its 1 MiB default here

# The JSON parse's tables and their combined columns come from malloc, not
# pyarrow's default pool (mimalloc): with objects read on several threads,
# mimalloc's per-thread caches kept ~40 MB more at peak (ranker, 1M rows).
_POOL = pa.system_memory_pool()
_TAIL = b',"context":'
_ROW_KEYS = frozenset({"features", "prediction", "score", "rank", "position", "item_id", "lookups"})
_EXACT = 2.0**53  # float64 holds every integer below this
_NAME = re.compile(r"[A-Za-z0-9_.:/@+\- ]*")
# The capture's time, "2026-11-02T10:00:00.000Z": fixed characters, and digits.
_TIME_FIXED = [4, 7, 10, 13, 16, 19, 23]
_TIME_CHARS = np.frombuffer(b"--T::.Z", np.uint8)
_TIME_DIGITS = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22]


class Fallback(Exception):
    """This object goes the row path; ``reason`` is a short word for counting."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# -- bytes ---------------------------------------------------------------------


def _read(ref: ObjectRef) -> bytes:
    if ref.size > MAX_OBJECT_BYTES:
        raise Fallback("size")
    try:
        with open_location(ref.location).open(ref.key) as fh:
            raw = fh.read(MAX_OBJECT_BYTES + 1)
        if raw[:2] == b"\x1f\x8b":  # what read_records' _open_lines decides by
            raw = _gunzip(raw)
    except Exception:  # the row path reports it (InputError) or copes
        raise Fallback("read") from None
    if len(raw) > MAX_OBJECT_BYTES:
        raise Fallback("size")
    return raw


def _gunzip(raw: bytes) -> bytes:
    """``GzipFile(raw).read()``: one inflate call for the usual single clean
    member (it checks the header, CRC and length as GzipFile does), GzipFile
    itself for anything else (several members, padding, damage)."""
    inflate = gzip_inflater()  # ISA-L's when installed: ~2.6x zlib's
    try:
        out = inflate.decompress(raw, MAX_OBJECT_BYTES + 1)
    except INFLATE_ERRORS:
        out = b""
    else:
        if inflate.eof and not inflate.unused_data and len(out) <= MAX_OBJECT_BYTES:
            return out
    with gzip.GzipFile(fileobj=io.BytesIO(raw), mode="rb") as gz:
        return gz.read(MAX_OBJECT_BYTES + 1)


_LF, _OPEN, _CLOSE = 10, ord("{"), ord("}")
_ODD = ((b"NaN", 0), (b"Inf", 0), (b"captureData", 7))  # (word, its rarest byte)
_NUMBER_GOES_ON = np.frombuffer(b".eE0123456789", np.uint8)
_VALUE_STARTS = np.frombuffer(b":,[ \t\r\n", np.uint8)


def _find_all(arr: np.ndarray, word: bytes, anchor: int) -> np.ndarray:
    """Start positions of ``word`` in ``arr``, searched from its byte at ``anchor``
    (a rare one: fewer candidates)."""
    at = np.flatnonzero(arr[anchor : arr.size - len(word) + anchor + 1] == word[anchor])
    for i, c in enumerate(word):
        if i != anchor and at.size:
            at = at[arr[at + i] == c]
    return at


def _holds(data: bytes, arr: np.ndarray, word: bytes, anchor: int) -> bool:
    """Whether ``word`` occurs in ``data`` (``arr`` its bytes). Its rare byte is
    looked for first with ``in`` (memchr: ~0.2 ms over a 6 MB object, against
    ~0.6 ms for a numpy pass and ~3 ms for ``word in data``), so the usual
    object, which lacks it, costs no numpy pass."""
    return word[anchor : anchor + 1] in data and bool(_find_all(arr, word, anchor).size)


def _int_minus_zero(data: bytes) -> bool:
    """Whether ``data`` may spell an int -0: orjson's int 0 but Arrow's -0.0
    (-0.0 is -0.0 to both). A "-0" where a value starts (after ":", ",", "["
    or a space) and that the number does not go on from; looked for only
    when a column holds a -0.0."""
    arr = np.frombuffer(data, np.uint8)
    minus = _find_all(arr, b"-0", 0)
    if not minus.size:
        return False
    before = arr[np.maximum(minus - 1, 0)]
    after = arr[np.minimum(minus + 2, arr.size - 1)]
    starts = np.isin(before, _VALUE_STARTS) & (minus > 0)
    ends = ~np.isin(after, _NUMBER_GOES_ON) | (minus + 2 >= arr.size)
    return bool((starts & ends).any())


def _lines(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(start, end, tail) per line: the line is ``data[start:end]``, its tail
    starts at ``tail`` (the comma before its first ``"context":``). Fallback
    unless every line is one ``{...}`` that orjson and Arrow read alike."""
    if not data.isascii():
        try:
            data.decode("utf-8")  # orjson refuses invalid UTF-8; Arrow does not check
        except UnicodeDecodeError:
            raise Fallback("bytes") from None
    arr = np.frombuffer(data, np.uint8)
    # NaN/Infinity: read_records reads such lines with json.loads, and Arrow
    # takes "Inf" too. captureData: SageMaker lines (read_records converts them).
    if any(_holds(data, arr, word, at) for word, at in _ODD):
        raise Fallback("bytes")
    # One object per line, no blank or whitespace lines: every line starts
    # with "{" and ends with "}". A JSON value cannot then span lines, so
    # Arrow's row count equals the line count exactly when each line is one
    # object (two on a line would make more rows).
    nl = np.flatnonzero(arr == _LF)
    end = nl if data.endswith(b"\n") else np.append(nl, arr.size)
    start = np.empty_like(end)
    start[0] = 0
    start[1:] = end[:-1] + 1
    if (
        not end.size
        or bool((end <= start).any())
        or bool((arr[start] != _OPEN).any())
        or bool((arr[end - 1] != _CLOSE).any())
    ):
        raise Fallback("lines")
    marks = _find_all(arr, _TAIL, 7)  # ',"context":'[7] == "x"
    if marks.size > end.size:  # a body or a value has a "context" key too: keep the record's
        marks = marks[_depth_at(arr, marks) == 1]
    first = np.searchsorted(marks, start)
    if first.size and int(first[-1]) >= marks.size:
        raise Fallback("shape")
    tail = marks[np.minimum(first, marks.size - 1)] if marks.size else end
    if bool((tail >= end).any()):
        raise Fallback("shape")
    return start, end, tail


_QUOTE, _BACKSLASH = ord('"'), ord("\\")
_OPENERS, _CLOSERS = (ord("{"), ord("[")), (ord("}"), ord("]"))


def _depth_at(arr: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The JSON nesting depth at each position in ``at`` (sorted), counting the
    brackets before it that are outside strings: 1 for a key of a line's own
    object when every line before it is balanced. Garbage in gives a wrong
    depth, never an error: the cut it chooses then fails the parse, and the
    object falls back."""
    quotes = np.flatnonzero(arr == _QUOTE)
    # A quote is escaped when an odd run of backslashes precedes it; found
    # from the backslashes, which are rare.
    slashes = np.flatnonzero(arr[:-1] == _BACKSLASH)
    after = slashes[arr[slashes + 1] == _QUOTE] + 1  # quotes right after a backslash
    odd = np.ones(after.size, dtype=bool)
    alive = np.arange(after.size)
    back = 2
    while alive.size:
        alive = alive[after[alive] >= back]
        alive = alive[arr[after[alive] - back] == _BACKSLASH]
        odd[alive] ^= True
        back += 1
    real = quotes
    if odd.any():
        keep = np.ones(quotes.size, dtype=bool)
        keep[np.searchsorted(quotes, after[odd])] = False
        real = quotes[keep]
    brackets = arr == _OPENERS[0]
    for byte in (*_OPENERS[1:], *_CLOSERS):
        brackets |= arr == byte
    where = np.flatnonzero(brackets)
    del brackets
    outside = (np.searchsorted(real, where) & 1) == 0  # an even number of quotes before it
    where = where[outside]
    found = arr[where]
    depth = np.cumsum(np.where((found == _OPENERS[0]) | (found == _OPENERS[1]), 1, -1))
    before = np.searchsorted(where, at)  # brackets before each position
    return np.where(before > 0, depth[np.maximum(before - 1, 0)], 0)


def _parse(data: bytes, schema: pa.Schema, unexpected: str, threads: bool) -> pa.Table:
    try:
        return pj.read_json(
            pa.BufferReader(data),
            memory_pool=_POOL,
            read_options=pj.ReadOptions(use_threads=threads, block_size=BLOCK_BYTES),
            parse_options=pj.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior=unexpected
            ),
        )
    except (pa.ArrowException, ValueError):
        raise Fallback("parse") from None


# -- the first record's shape --------------------------------------------------


def _scalar_type(value: Any) -> pa.DataType:
    """The Arrow type of a profiled value; nulls and nested values fall back."""
    t = type(value)
    if t is bool:
        return pa.bool_()
    if t is int or t is float:
        return pa.float64()
    if t is str:
        return pa.string()
    raise Fallback("shape")


def _loose_type(value: Any) -> pa.DataType:
    """The Arrow type of a value that is parsed but not profiled (null: string)."""
    if value is None:
        return pa.string()
    if isinstance(value, dict):
        return pa.struct([(k, _loose_type(v)) for k, v in value.items()])
    if isinstance(value, list):
        if not value:
            raise Fallback("shape")
        return pa.list_(_loose_type(value[0]))
    return _scalar_type(value)


def _flat_struct(level: Any) -> list[tuple[str, pa.DataType]]:
    if not isinstance(level, dict):
        raise Fallback("shape")
    return [(k, _scalar_type(v)) for k, v in level.items()]


def _spread_struct(
    level: Any, depth: int = 1
) -> tuple[list[tuple[str, pa.DataType]], list[tuple[str, ...]]]:
    """A ``context``/``lookups`` dict's struct fields and the path of each of
    its columns: a non-empty dict value is spread into ``key.sub`` columns
    down to ``MAX_NESTING`` levels, as ``capture.rows.spread`` names them."""
    if not isinstance(level, dict):
        raise Fallback("shape")
    fields: list[tuple[str, pa.DataType]] = []
    paths: list[tuple[str, ...]] = []
    for key, value in level.items():
        if type(value) is dict and value and depth < MAX_NESTING:
            sub, sub_paths = _spread_struct(value, depth + 1)
            fields.append((key, pa.struct(sub)))
            paths += [(key, *path) for path in sub_paths]
        else:
            fields.append((key, _scalar_type(value)))
            paths.append((key,))
    return fields, paths


@dataclass(frozen=True)
class _Shape:
    tail: pa.Schema  # the tail parse's schema
    record: tuple[tuple[str, str, tuple[str, ...]], ...]  # (column, level, path): context.*...
    row: tuple[tuple[str, tuple[str, ...]], ...]  # (column, path in a row)
    versioned: bool  # records name their model version (else none does: no model.version column)


_HEAD = pa.schema(
    [
        ("schema", pa.float64()),
        ("time", pa.string()),
        ("model", pa.struct([("version", pa.string())])),
        ("parse", pa.struct([("error", pa.string())])),
        ("captureData", pa.struct([])),
        ("sampling", pa.struct([])),  # read from the tail: one in a head falls back
    ]
)


def _shape(line: bytes, at: int) -> _Shape:
    """The object's columns from its first line, cut at ``at`` (``_lines``)."""
    try:
        record = orjson.loads(line)
        tail = orjson.loads(b"{" + line[at + 1 :])
    except orjson.JSONDecodeError:
        raise Fallback("shape") from None
    if (
        not isinstance(record, dict)
        or not all(k in record and record[k] == v for k, v in tail.items())
        or "captureData" in record
        or {"schema", "time", "model", "captureData"} & tail.keys()
    ):
        raise Fallback("shape")
    model = record.get("model")
    if record.get("schema") != 1 or not isinstance(model, dict):
        raise Fallback("shape")
    version = model.get("version")
    if (version is not None and type(version) is not str) or type(record.get("time")) is not str:
        raise Fallback("shape")
    rows = tail.get("rows")
    if not isinstance(rows, list) or not rows or not isinstance(rows[0], dict):
        raise Fallback("shape")
    first = rows[0]
    if not first.keys() <= _ROW_KEYS:
        raise Fallback("shape")
    row_type: list[tuple[str, pa.DataType]] = []
    row_cols: list[tuple[str, tuple[str, ...]]] = []
    for key, value in first.items():
        if key == "features":
            feats = _flat_struct(value)
            row_type.append((key, pa.struct(feats)))
            row_cols += [(feature_column(k), (key, k)) for k, _ in feats]
        elif key == "lookups":  # the item's own: lookups.<k>, spread as the record's
            if not value:
                raise Fallback("shape")
            item, paths = _spread_struct(value)
            row_type.append((key, pa.struct(item)))
            row_cols += [(".".join((key, *path)), (key, *path)) for path in paths]
        else:
            row_type.append((key, _scalar_type(value)))
            row_cols.append((key, (key,)))
    fields: list[tuple[str, pa.DataType]] = []
    record_cols: list[tuple[str, str, tuple[str, ...]]] = []
    for key, value in tail.items():
        if key in ("context", "lookups"):
            level, paths = _spread_struct(value)
            fields.append((key, pa.struct(level)))
            record_cols += [(".".join((key, *path)), key, path) for path in paths]
        elif key == "rows":
            fields.append((key, pa.list_(pa.struct(row_type))))
        else:
            fields.append((key, _loose_type(value)))
    if "lookups" not in tail:
        raise Fallback("shape")
    names = [c for c, _, _ in record_cols] + ["model.version"] + [c for c, _ in row_cols]
    if len(set(names)) != len(names) or not all(_NAME.fullmatch(n) for n in names):
        raise Fallback("shape")
    return _Shape(pa.schema(fields), tuple(record_cols), tuple(row_cols), version is not None)


# -- an object as columns ------------------------------------------------------


def _whole(table: pa.Table, name: str) -> Any:
    """A column as one Array, with no null at any level (else Fallback)."""
    arr = table.column(name).combine_chunks(memory_pool=_POOL)
    if arr.null_count:
        raise Fallback("values")
    return arr


def _child(arr: Any, name: str) -> Any:
    out = arr.field(name)
    if out.null_count:
        raise Fallback("values")
    return out


def _values(arr: Any) -> Any:
    """What the profile gets for a column: float64 numpy, Arrow strings, bools as a list."""
    if pa.types.is_floating(arr.type):
        x = arr.to_numpy(zero_copy_only=False)
        if x.size and not bool((np.abs(x) < _EXACT).all()):  # huge ints lose digits as floats
            raise Fallback("values")
        return x
    if pa.types.is_boolean(arr.type):
        return arr.to_pylist()
    return arr


def _take(values: Any, idx: np.ndarray) -> Any:
    if isinstance(values, np.ndarray):
        return values[idx]
    if isinstance(values, list):
        return [values[i] for i in idx.tolist()]
    return values.take(pa.array(idx))


def _cut(values: Any, lo: int, hi: int) -> Any:
    if isinstance(values, pa.Array):
        return values.slice(lo, hi - lo)
    return values[lo:hi]


@dataclass(frozen=True)
class Loaded:
    """An object's records: per-record times and parse errors, rows as columns."""

    records: int
    times: Any  # Arrow strings, one per record
    parse_error: np.ndarray  # bool per record: a truthy parse.error
    rates: np.ndarray  # per record: the rate readers.sampled_rate gives, NaN for None
    lengths: np.ndarray  # rows per record (each >= 1)
    parent: np.ndarray  # record of each row
    record_columns: dict[str, Any]  # per record (Arrow arrays)
    row_columns: dict[str, Any]  # per row (Arrow arrays)

    def epochs(self) -> np.ndarray:
        """Each record's time as ``record_time`` gives it (Fallback if a time is
        not in the capture's own format, "2026-11-02T10:00:00.000Z", or not a
        date). The times are read as one fixed-width block of bytes."""
        times = self.times
        n = len(times)
        if not n:
            return np.zeros(0)
        if times.offset or not pa.types.is_string(times.type):
            raise Fallback("time")
        offsets = np.frombuffer(times.buffers()[1], np.int32)[: n + 1]
        if offsets[0] != 0 or bool((np.diff(offsets) != 24).any()):
            raise Fallback("time")
        text = np.frombuffer(times.buffers()[2], np.uint8)[: 24 * n].reshape(n, 24)
        if bool((text[:, _TIME_FIXED] != _TIME_CHARS).any()):
            raise Fallback("time")
        digits = text[:, _TIME_DIGITS].astype(np.int64) - 48
        if bool(((digits < 0) | (digits > 9)).any()) or bool((digits[:, [10, 12]] > 5).any()):
            raise Fallback("time")  # [0-9] each; minutes and seconds [0-5][0-9]
        # The hour ("2026-11-02T10") through parse_time, once per distinct hour.
        hour_key = digits[:, :10] @ (10 ** np.arange(9, -1, -1, dtype=np.int64))
        _, first, index = np.unique(hour_key, return_index=True, return_inverse=True)
        starts = []
        for i in first.tolist():
            start = parse_time(bytes(text[i, :13]).decode() + ":00:00Z")
            if start is None:
                raise Fallback("time")
            starts.append(int(start))
        base = np.array(starts, np.int64)[index]
        minutes = digits[:, 10] * 10 + digits[:, 11]
        seconds = digits[:, 12] * 10 + digits[:, 13]
        millis = digits[:, 14] * 100 + digits[:, 15] * 10 + digits[:, 16]
        micros = (base + minutes * 60 + seconds) * 1_000_000 + millis * 1000
        epochs: np.ndarray = micros / 1_000_000  # exact int64 -> float64, one rounding
        return epochs

    def sampled_rows(self, keep: np.ndarray) -> dict[str, int]:
        """Rows of the kept records by the rate the sampler kept them at
        (``Partial.sampled_rows``; keys as ``readers.sampled_rate`` spells them)."""
        sel = keep & ~np.isnan(self.rates)
        if not sel.any():
            return {}
        rates, index = np.unique(self.rates[sel], return_inverse=True)
        rows = np.bincount(index, weights=self.lengths[sel]).astype(np.int64)
        return {repr(r): int(n) for r, n in zip(rates.tolist(), rows.tolist(), strict=True)}

    def batches(self, keep: np.ndarray, batch_rows: int) -> Iterator[ArrowBatch]:
        """The rows of the kept records, cut where the row path's batches end:
        after the record that brings a batch to ``batch_rows`` rows or more."""
        lengths = self.lengths[keep]
        if not lengths.size:
            return
        row_keep = keep[self.parent]
        every = bool(row_keep.all())
        parent = self.parent if every else self.parent[row_keep]
        one_each = every and parent.size == self.records  # one row per record, all kept
        columns: dict[str, Any] = {}
        for name, values in self.record_columns.items():
            columns[name] = _values(values if one_each else values.take(pa.array(parent)))
        for name, values in self.row_columns.items():
            columns[name] = _values(values if every else values.filter(pa.array(row_keep)))
        columns = dict(sorted(columns.items()))
        ends = []
        acc = 0
        for pos, n in zip(np.cumsum(lengths).tolist(), lengths.tolist(), strict=True):
            acc += n
            if acc >= batch_rows:
                ends.append(pos)
                acc = 0
        total = int(lengths.sum())
        if not ends or ends[-1] != total:
            ends.append(total)
        lo = 0
        for hi in ends:
            yield ArrowBatch({k: _cut(v, lo, hi) for k, v in columns.items()}, hi - lo)
            lo = hi


class ArrowBatch:
    """A batch of rows as columns, with what ``execute`` uses of ``FlatColumns``:
    ``len``, ``column(name)`` (a list) and ``profile(prof, rows)``."""

    __slots__ = ("_columns", "_lists", "rows")

    def __init__(self, columns: dict[str, Any], rows: int) -> None:
        self._columns = columns  # in name order, as FlatColumns hands them over
        self._lists: dict[str, list[Any]] = {}
        self.rows = rows

    def __len__(self) -> int:
        return self.rows

    def __bool__(self) -> bool:
        return self.rows > 0

    def column(self, name: str) -> list[Any] | None:
        values = self._columns.get(name)
        if values is None:
            return None
        out = self._lists.get(name)
        if out is None:
            if isinstance(values, pa.Array) and self.rows and _single(values):
                out = [values[0].as_py()] * self.rows  # the usual model.version
            else:
                out = values if isinstance(values, list) else values.tolist()
            self._lists[name] = out
        return out

    def profile(self, prof: DatasetProfile, rows: Sequence[int] | None = None) -> None:
        n = self.rows if rows is None else len(rows)
        if not n:
            return
        if rows is None:
            prof.update_columns(self._columns, n)
            return
        idx = np.asarray(rows, dtype=np.int64)
        prof.update_columns({k: _take(v, idx) for k, v in self._columns.items()}, n)


def _single(values: Any) -> bool:
    """Whether an Arrow string column holds one value throughout."""
    return bool(pc.count_distinct(values, mode="all").as_py() == 1) and not values.null_count


def load(ref: ObjectRef, *, threads: bool = False) -> Loaded:
    """One object's records as columns (see the module docstring); ``Fallback``
    when the row path must read it."""
    data = _read(ref)
    start, end, cut = _lines(data)
    lines = int(end.size)
    shape = _shape(data[: int(end[0])], int(cut[0]))
    # Each line is split at its tail: the head (closed with "}") and the tail
    # (opened with "{") are each one JSON object exactly when the line is one
    # object whose members after the cut are the tail's (see the docstring).
    # (The tails' text opens with a blank line, which Arrow skips: no copy to
    # put a "{" first.)
    # One part at a time: an object's heads and tails together are about the
    # size of its text.
    piece = memoryview(data).__getitem__
    heads = b"}\n".join([*map(piece, map(slice, start.tolist(), cut.tolist())), b""])
    head = _parse(heads, _HEAD, "ignore", threads)
    del heads
    tails = b"\n{".join([b"", *map(piece, map(slice, (cut + 1).tolist(), end.tolist()))])
    del piece
    tail = _parse(tails, shape.tail, "error", threads)
    del tails
    if head.num_rows != lines or tail.num_rows != lines:
        raise Fallback("lines")
    schema = _whole(head, "schema").to_numpy(zero_copy_only=False)
    if not bool((schema == 1).all()):
        raise Fallback("shape")
    if any(head.column(key).null_count != lines for key in ("captureData", "sampling")):
        raise Fallback("shape")
    times = _whole(head, "time")
    model = _whole(head, "model")
    if shape.versioned:
        version = _child(model, "version")
    elif model.field("version").null_count != lines:  # some do, some do not
        raise Fallback("values")
    if "parse" in shape.tail.names:  # the last "parse" is the record's (as orjson reads it)
        parse = tail.column("parse").combine_chunks(memory_pool=_POOL)
        if head.column("parse").null_count != lines:
            raise Fallback("shape")
    else:
        parse = head.column("parse").combine_chunks(memory_pool=_POOL)
    parse_error = _truthy(parse)
    rates = _sampled_rates(tail, lines)
    record_columns: dict[str, Any] = {}
    levels = {"context": _whole(tail, "context"), "lookups": _whole(tail, "lookups")}
    for name, level, path in shape.record:
        arr = levels[level]
        for key in path:
            arr = _child(arr, key)
        record_columns[name] = arr
    if shape.versioned:
        record_columns["model.version"] = version
    rows = _whole(tail, "rows")
    lengths = pc.list_value_length(rows).to_numpy(zero_copy_only=False)
    if lengths.size and int(lengths.min()) < 1:
        raise Fallback("values")
    flat = rows.flatten()
    if flat.null_count:
        raise Fallback("values")
    row_columns: dict[str, Any] = {}
    for name, path in shape.row:
        arr = flat
        for key in path:
            arr = _child(arr, key)
        row_columns[name] = arr
    for values in (*record_columns.values(), *row_columns.values()):
        if pa.types.is_floating(values.type) and _has_minus_zero(values):
            if _int_minus_zero(data):
                raise Fallback("bytes")
            break
    del data
    parent = pc.list_parent_indices(rows).to_numpy(zero_copy_only=False).astype(np.int64)
    return Loaded(
        records=lines,
        times=times,
        parse_error=parse_error,
        rates=rates,
        lengths=lengths.astype(np.int64),
        parent=parent,
        record_columns=record_columns,
        row_columns=row_columns,
    )


def _has_minus_zero(values: Any) -> bool:
    x = values.to_numpy(zero_copy_only=False)
    return bool((np.signbit(x) & (x == 0)).any())


def _truthy(parse: Any) -> np.ndarray:
    """Per record: ``parse.error`` is truthy (``parse`` a struct, maybe null)."""
    if not pa.types.is_struct(parse.type):
        raise Fallback("shape")
    if parse.type.get_field_index("error") < 0:
        return np.zeros(len(parse), dtype=bool)
    error = parse.field("error")
    if not pa.types.is_string(error.type):  # typed from a null: string; else not ours
        raise Fallback("shape")
    truthy = pc.and_(
        pc.and_(parse.is_valid(), error.is_valid()), pc.greater(pc.utf8_length(error), 0)
    )
    out: np.ndarray = truthy.fill_null(False).to_numpy(zero_copy_only=False)
    return out


def _sampled_rates(tail: pa.Table, lines: int) -> np.ndarray:
    """Per record, ``readers.sampled_rate`` as a float (NaN for None): the
    ``sampling.rate`` of a record whose ``sampling.reason`` is "sampled",
    when strictly between 0 and 1. A ``sampling`` typed otherwise than the
    capture writes it (not an object, a rate that is not a number, a reason
    that is not a string) gives None throughout, as the row path reads such
    values."""
    out = np.full(lines, np.nan)
    if "sampling" not in tail.schema.names:
        return out
    sampling = tail.column("sampling").combine_chunks(memory_pool=_POOL)
    if not pa.types.is_struct(sampling.type):
        return out
    names = [sampling.type.field(i).name for i in range(sampling.type.num_fields)]
    if "rate" not in names or "reason" not in names:
        return out
    rate, reason = sampling.field("rate"), sampling.field("reason")
    if not pa.types.is_floating(rate.type) or not pa.types.is_string(reason.type):
        return out
    sampled = pc.and_(
        pc.and_(sampling.is_valid(), rate.is_valid()), pc.equal(reason, "sampled")
    ).fill_null(False)
    x = rate.fill_null(np.nan).to_numpy(zero_copy_only=False)
    sel = sampled.to_numpy(zero_copy_only=False) & (x > 0) & (x < 1)
    out[sel] = x[sel]
    return out


def window_mask(epochs: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``lo <= t < hi`` per record (``-inf``/``inf`` for an open side)."""
    if math.isinf(lo) and math.isinf(hi):
        return np.ones(epochs.size, dtype=bool)
    mask: np.ndarray = (epochs >= lo) & (epochs < hi)
    return mask
