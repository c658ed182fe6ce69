"""Reading captures for the monitor: objects by time window, records, flat rows.

    refs = list_captures("s3://bucket/captures", start, end, model="ranker")
    stats = ReadStats()
    for ref in refs:
        if ref.kind == "records":
            for record in read_records(ref, start, end, stats=stats):
                rows = flatten(record)

Layouts understood under a location (a directory, ``file:///dir`` or
``s3://bucket/prefix``):

- ours: ``{model}/dt=YYYY-MM-DD/hour=HH/{host}-{pid}-{seq}.jsonl.gz`` (records)
  and ``….profile.json`` (full-traffic profiles, listed with kind "profile");
- SageMaker Data Capture: ``{endpoint}/{variant}/yyyy/mm/dd/hh/*.jsonl``.

The location may also be one model's (or one variant's) directory itself.
``model`` names the first directory level (model or endpoint).

Window pruning (``monitor_job.partitions``): partitions are listed one level
at a time and only those overlapping ``[start, end)`` are descended into, so
one hour of a year of captures costs a handful of listings. The hour before
the window is walked too, keeping only record objects written after the
window began: the capture names a batch by the hour of its first record, so
a batch opened at 09:59:40 holds records of 10:00:10 under ``hour=09``.
Back-to-back windows then see every record exactly once; the one loss is a
request in flight across ``end`` whose batch opened after it (bounded by
request latency).

Bad input policy (``read_records``): a file that cannot be opened, a corrupt
gzip stream, or a file without a single valid record raises ``InputError``
(message: the object and the problem, e.g. ``line 17: invalid JSON``).
Single bad lines inside an otherwise good file are skipped and counted in the
``stats`` object the caller passes (``bad_lines``, plus the first few
problems as ``"name:line: problem"``), so one torn line does not stop a run
and is still reported. Lines are never logged (they hold payloads).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any, Protocol

import orjson

from capture.compression import GZIP_READ_ERRORS, gzip_reader
from capture.record import parse_time
from capture.rows import flatten
from monitor_job.locations import InputError, ObjectRef, iter_lines, open_location
from monitor_job.partitions import find
from monitor_job.sagemaker import DataCaptureReader, LineProblem, is_capture_line
from monitor_job.training import read_training

__all__ = [
    "InputError",
    "ObjectRef",
    "ReadStats",
    "flatten",
    "list_captures",
    "read_records",
    "read_training",
]

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 1024 * 1024  # longer lines are bad lines, skipped without holding them
MAX_PROBLEMS = 10
RECORD_KEYS = ("schema", "rows", "time", "event_id")


class BadLineCounter(Protocol):
    """What ``read_records`` updates for skipped lines (``ReadStats`` or the caller's own)."""

    bad_lines: int
    problems: list[str]


@dataclass
class ReadStats:
    """Counts of one or more ``read_records`` calls.

    ``lines``: non-blank lines read; ``records``: valid records among them
    (before the time filter); ``bad_lines``: lines skipped; ``problems``:
    the first ``MAX_PROBLEMS`` as ``"name:line: problem"``.
    """

    lines: int = 0
    records: int = 0
    bad_lines: int = 0
    problems: list[str] = field(default_factory=list)


# -- listing -----------------------------------------------------------------


def _epoch(t: datetime | None, default: float) -> float:
    if t is None:
        return default
    return (t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)).timestamp()


def list_captures(
    location: str, start: datetime | None, end: datetime | None, model: str | None = None
) -> list[ObjectRef]:
    """Capture objects under ``location`` that may hold records in ``[start, end)``.

    ``None`` leaves that side of the window open; naive datetimes are UTC.
    Sorted by key. ``InputError`` when the location does not exist or cannot
    be listed (missing directory or bucket, unreachable S3, access denied).
    """
    loc = open_location(location)
    out = find(loc, _epoch(start, -math.inf), _epoch(end, math.inf), model)
    log.info("%s: %d capture objects for the window", loc.url, len(out))
    return out


# -- reading -------------------------------------------------------------------


def _open_lines(stream: IO[bytes]) -> IO[bytes] | gzip.GzipFile:
    """A gzip stream (by its magic bytes, whatever the name says) or the plain one."""
    peek = getattr(stream, "peek", None)
    head = peek(2)[:2] if peek is not None else b""
    return gzip_reader(stream) if head == b"\x1f\x8b" else stream


def _parse(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        if b"NaN" in line or b"Infinity" in line:  # other writers' JSON; orjson refuses it
            try:
                return json.loads(line)
            except (ValueError, RecursionError):
                pass
        raise LineProblem(f"invalid JSON ({str(exc)[:120]})") from None


# The capture's own time format, "2026-11-22T23:08:42.123Z", read from its
# fields with the epoch of each hour cached, rather than through datetime
# (after the JSON, the largest cost of reading a record); any other spelling
# goes through parse_time.
_OUR_TIME = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}):([0-5][0-9]):([0-5][0-9])\.([0-9]{3})Z"
)
_HOURS: dict[str, float] = {}


def sampled_rate(record: Any) -> str | None:
    """The rate a record was kept at by the sampler, when it stands for more
    traffic than itself: ``sampling.reason`` "sampled" with a ``sampling.rate``
    number strictly between 0 and 1, as ``repr`` of the float (a key that
    the Arrow path spells alike). None for any other record: one kept as an
    error or as slow (kept whatever the rate: it stands for itself), one kept
    at rate 1, one without a ``sampling`` field (SageMaker captures, labels).
    The volume check counts a record's rows ``1 / rate`` times
    (``Partial.traffic_rows``)."""
    sampling = record.get("sampling") if isinstance(record, dict) else None
    if not isinstance(sampling, dict) or sampling.get("reason") != "sampled":
        return None
    rate = sampling.get("rate")
    if type(rate) is not float and type(rate) is not int:  # bool is not a rate
        return None
    if not 0 < rate < 1:  # NaN too
        return None
    return repr(float(rate))


def record_time(value: Any) -> float | None:
    """Epoch seconds of a record's time: ``parse_time``, to the same float."""
    m = _OUR_TIME.fullmatch(value) if type(value) is str and len(value) == 24 else None
    if m is None:
        return parse_time(value)
    hour = _HOURS.get(m[1])
    if hour is None:
        start = parse_time(m[1] + ":00:00Z")
        if start is None:  # not a date (2026-02-30T10)
            return None
        if len(_HOURS) >= 10_000:
            _HOURS.clear()
        hour = _HOURS[m[1]] = start
    # Whole microseconds divided once: the float datetime.timestamp() gives.
    micros = (int(hour) + int(m[2]) * 60 + int(m[3])) * 1_000_000 + int(m[4]) * 1000
    return micros / 1_000_000


def read_records(
    ref: ObjectRef,
    start: datetime | None = None,
    end: datetime | None = None,
    csv_columns: Sequence[str] | None = None,
    *,
    stats: BadLineCounter | None = None,
    convert: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    time_field: str = "time",
) -> Iterator[dict[str, Any]]:
    """The records of one object with ``start <= time < end``, streamed.

    SageMaker Data Capture lines come out as v1 records (see
    ``monitor_job.sagemaker``; ``csv_columns`` names headerless CSV columns).
    A record without a readable ``time`` counts as a bad line when a window
    is set. See the module docstring for what raises and what is counted.

    ``convert`` replaces the capture-record reading of each JSON object (it
    returns the record or raises ``LineProblem``); ``time_field`` names the
    record's time for the window (ground-truth labels use ``received``).
    """
    lo, hi = _epoch(start, -math.inf), _epoch(end, math.inf)
    windowed = start is not None or end is not None
    loads = orjson.loads
    name = ref.name
    full = isinstance(stats, ReadStats)
    lines = good = bad = 0
    first: str | None = None
    sagemaker: DataCaptureReader | None = None
    with open_location(ref.location).open(ref.key) as raw:
        stream = _open_lines(raw)
        what = "corrupt gzip stream" if stream is not raw else "read failed"
        lineno = 0
        try:
            for lineno, (line, complete) in enumerate(iter_lines(stream, MAX_LINE_BYTES), 1):
                if line.isspace():
                    continue
                lines += 1
                try:
                    if not complete:
                        raise LineProblem(f"line longer than {MAX_LINE_BYTES} bytes")
                    try:
                        obj = loads(line)
                    except orjson.JSONDecodeError:
                        obj = _parse(line)  # NaN spellings, or the problem
                    if not isinstance(obj, dict):
                        raise LineProblem(f"a JSON {type(obj).__name__}, not an object")
                    if convert is not None:
                        obj = convert(obj)
                    elif "captureData" in obj and is_capture_line(obj):
                        if sagemaker is None:
                            sagemaker = DataCaptureReader(name, csv_columns)
                        try:
                            obj = sagemaker.record(obj)
                        except LineProblem:
                            raise
                        except Exception as exc:  # a shape nobody foresaw: one bad line
                            problem = f"Data Capture line not readable ({type(exc).__name__})"
                            raise LineProblem(problem) from exc
                    elif obj.keys().isdisjoint(RECORD_KEYS):
                        raise LineProblem("not a capture record (no schema, time or rows)")
                    t = record_time(obj.get(time_field)) if windowed else 0.0
                    if t is None:
                        raise LineProblem("record time missing or not ISO-8601")
                    good += 1
                    if full:
                        stats.records += 1  # type: ignore[union-attr]
                    if not windowed or lo <= t < hi:
                        yield obj
                except LineProblem as exc:
                    bad += 1
                    problem = f"{name}:{lineno}: {exc}"
                    first = first or f"line {lineno}: {exc}"
                    if stats is not None:
                        stats.bad_lines += 1
                        if len(stats.problems) < MAX_PROBLEMS:
                            stats.problems.append(problem)
        except GZIP_READ_ERRORS as exc:
            raise InputError(f"{name}: {what} after line {lineno}: {exc}") from exc
    if full:
        stats.lines += lines  # type: ignore[union-attr]
    if lines == 0:
        raise InputError(f"{name}: empty (no lines)")
    if good == 0:
        raise InputError(f"{name}: no valid record in {lines} line(s); {first}")
    if bad:
        log.warning("%s: %d of %d lines skipped; first: %s", name, bad, lines, first)
