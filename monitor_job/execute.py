"""Profile a window of captures: in-process, or one Dask task per object.

Each capture object becomes a ``Partial`` (profiles of its rows, whole and
per segment, plus read counts) serialised to bytes; partials merge, so the
order and the place objects are read in change nothing. In-process the
objects are read one after another with constant memory (streamed lines,
rows profiled in batches of ``BATCH_ROWS``); with ``dask`` set, each object
is a task on the cluster (``"local"`` starts a ``LocalCluster`` of processes
on this machine, anything else is a scheduler address) and only profile
bytes travel back.

Segments: ``model.version`` always, plus the configured columns; each value
gets its own profile, up to ``MAX_SEGMENT_VALUES`` values per column (the
rest share ``<column>=__other__``) so a high-cardinality segment column
cannot multiply memory. A segment that so far holds every row of the object
(one model version, the usual case) is not profiled twice: it becomes a
copy of the whole profile when its first other row arrives, or at the end.

Reading: an object of the capture's own records is read by the Arrow path
(``monitor_job.columnar``: C++ JSON parsing, rows as columns) when it can
vouch for giving the row path's exact rows, and by the row path
(``read_records`` + ``FlatColumns``) otherwise; ``Partial`` counts the
objects each way and the fallbacks by reason (logged at INFO, not part of
the results). In-process, the next ``READ_AHEAD`` objects are read, each on
its own thread, while the current one is profiled; the profiles are still
merged in the objects' order. ``MODELTAP_MONITOR_ARROW=0`` turns it off.

Speed: rows are profiled in batches of ``BATCH_ROWS`` (large enough for the
frequent-items pre-filter to drop one-off values; see
``capture.profile.FREQ_RESOLUTION`` and ``FREQ_RESOLUTION_NUMERIC``), and the
cyclic garbage collector runs less often while an object is read: records
and rows hold no cycles, and collection passes over a batch of live rows
cost more than parsing them.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import re
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import orjson

from capture.profile import KLL_K, DatasetProfile, canonical
from capture.record import parse_time
from capture.rows import FlatColumns
from monitor_job.locations import open_location
from monitor_job.readers import InputError, ObjectRef, _epoch, flatten, read_records, sampled_rate

if TYPE_CHECKING:
    from monitor_job.columnar import Loaded

log = logging.getLogger(__name__)

BATCH_ROWS = 16384
GC_THRESHOLD = 100_000  # gen-0 allocations between collections while reading
MAX_SEGMENT_VALUES = 20
MAX_PROBLEMS = 20
#: Objects read ahead, each on its own thread, while one is profiled.
READ_AHEAD = 2
VERSION_COLUMN = "model.version"
#: "0" turns the Arrow read path off (every object goes the row path).
ARROW_ENV = "MODELTAP_MONITOR_ARROW"


class Batch(Protocol):
    """What profiling uses of a batch of rows (``FlatColumns``, ``ArrowBatch``)."""

    def __len__(self) -> int: ...

    def column(self, name: str) -> list[Any] | None: ...

    def profile(self, prof: DatasetProfile, rows: Sequence[int] | None = None) -> None: ...


@dataclass
class Partial:
    """Profiles of some objects' rows plus what reading them found."""

    profiles: dict[str, DatasetProfile] = field(default_factory=dict)
    objects: int = 0
    records: int = 0
    records_without_rows: int = 0
    parse_errors: int = 0
    bad_lines: int = 0
    traffic_profiles: int = 0  # full-traffic profile objects used
    profiled_hours: int = 0  # hours whose distributions come from them
    problems: list[str] = field(default_factory=list)
    # Rows of records the sampler kept at a rate below 1, by rate (readers.sampled_rate):
    # each stands for 1/rate rows of traffic (traffic_rows). Exact ints, so a
    # window's estimate does not depend on the order its objects merge in.
    sampled_rows: dict[str, int] = field(default_factory=dict)
    # How objects were read (not in counts(): the results do not depend on it).
    arrow_objects: int = 0
    fallbacks: dict[str, int] = field(default_factory=dict)  # reason -> objects

    @property
    def whole(self) -> DatasetProfile:
        return self.profiles.setdefault("", DatasetProfile())

    @property
    def traffic_rows(self) -> float:
        """The rows of traffic the whole profile stands for: its rows, with
        each row of a record the sampler kept at rate r counted 1/r times
        (Horvitz-Thompson; a record kept as an error or slow, and every row
        of a full-traffic profile, counts once). What ``volume_check``
        compares, so a sampling rate, or a change of it between windows,
        is not taken for a change of traffic.

        Exact for records whose reason was chosen before the hash
        (``capture.sampler``): an error or slow exchange kept regardless is
        "error" or "slow" even when its key was also sampled. Captures
        written before that (modeltap 0.1.0 until 2026-12-06) named such a
        record "sampled", so a window of mostly errors reads high there, up
        to 1.9x at r = 0.1; a record does not say which it is."""
        extra = sum(n * (1.0 / float(rate) - 1.0) for rate, n in sorted(self.sampled_rows.items()))
        return self.whole.rows + extra

    def add_sampled(self, rate: str, rows: int) -> None:
        self.sampled_rows[rate] = self.sampled_rows.get(rate, 0) + rows

    def merge(self, other: Partial) -> None:
        for key, prof in other.profiles.items():
            mine = self.profiles.get(key)
            if mine is None:
                self.profiles[key] = prof
            else:
                mine.merge(prof)
        self.objects += other.objects
        self.records += other.records
        self.records_without_rows += other.records_without_rows
        self.parse_errors += other.parse_errors
        self.bad_lines += other.bad_lines
        self.traffic_profiles += other.traffic_profiles
        self.profiled_hours += other.profiled_hours
        self.problems.extend(other.problems[: max(0, MAX_PROBLEMS - len(self.problems))])
        for rate, n in other.sampled_rows.items():
            self.add_sampled(rate, n)
        self.arrow_objects += other.arrow_objects
        for reason, n in other.fallbacks.items():
            self.fallbacks[reason] = self.fallbacks.get(reason, 0) + n

    def counts(self) -> dict[str, Any]:
        return {
            "objects": self.objects,
            "records": self.records,
            "rows": self.whole.rows,
            "records_without_rows": self.records_without_rows,
            "parse_errors": self.parse_errors,
            "bad_lines": self.bad_lines,
            "traffic_profiles": self.traffic_profiles,
            "profiled_hours": self.profiled_hours,
            "problems": self.problems,
            "sampled_rows": dict(sorted(self.sampled_rows.items())),
        }

    def to_bytes(self) -> bytes:
        counts = self.counts()
        counts.pop("rows")
        profiles = {k: p.to_bytes().decode() for k, p in self.profiles.items()}
        read = {"arrow_objects": self.arrow_objects, "fallbacks": self.fallbacks}
        return orjson.dumps({"counts": counts, "read": read, "profiles": profiles})

    def copy(self) -> Partial:
        """``from_bytes(to_bytes())`` without the encoding (``DatasetProfile.copy``):
        how an in-process partial reaches the merge, so that a window merges
        what Dask tasks' bytes would give (merging the live sketches could
        keep other frequent items)."""
        profiles = {k: p.copy() for k, p in self.profiles.items()}
        return replace(
            self,
            profiles=profiles,
            problems=list(self.problems),
            fallbacks=dict(self.fallbacks),
            sampled_rows=dict(self.sampled_rows),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Partial:
        doc = orjson.loads(data)
        part = cls(
            profiles={k: DatasetProfile.from_bytes(v.encode()) for k, v in doc["profiles"].items()},
            **doc["counts"],
            **doc.get("read", {}),
        )
        return part


class _Segmenter:
    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = [VERSION_COLUMN, *[c for c in columns if c != VERSION_COLUMN]]
        self.seen: dict[str, set[str]] = {c: set() for c in self.columns}
        self._cache: dict[str, dict[str, str | None]] = {c: {} for c in self.columns}

    def _key(self, col: str, value: Any) -> str | None:
        cache = self._cache[col] if type(value) is str else None
        if cache is not None and value in cache:
            return cache[value]
        key = canonical(value)
        if key is not None:
            seen = self.seen[col]
            if key not in seen and len(seen) >= MAX_SEGMENT_VALUES:
                key = "__other__"
            else:
                seen.add(key)
            key = f"{col}={key}"
        if cache is not None and len(cache) < 4 * MAX_SEGMENT_VALUES:
            cache[value] = key
        return key

    def groups(self, batch: Batch, *, custom_only: bool = False) -> dict[str, list[int]]:
        """The row indices of each segment key (a row is in one segment per column)."""
        out: dict[str, list[int]] = {}
        n = len(batch)
        for col in self.columns[1:] if custom_only else self.columns:
            values = batch.column(col)
            if values is None:  # no row has it: no segment (a null has no key)
                continue
            first = values[0] if values else None
            if type(first) is str and values.count(first) == n:  # one value
                key = self._key(col, first)
                if key is not None:
                    out.setdefault(key, []).extend(range(n))
                continue
            for i, value in enumerate(values):
                key = self._key(col, value)
                if key is not None:
                    out.setdefault(key, []).append(i)
        return out


@contextmanager
def _collector_held() -> Iterator[None]:
    """Raise the gen-0 GC threshold for the block (restored after)."""
    before = gc.get_threshold()
    gc.set_threshold(max(before[0], GC_THRESHOLD), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def profile_object(
    ref: ObjectRef,
    start: datetime | None,
    end: datetime | None,
    *,
    segments: Sequence[str] = (),
    csv_columns: Sequence[str] | None = None,
    kll_k: int = KLL_K,
    profiled_hours: Sequence[int] = (),
    arrow: bool | None = None,
    loaded: Loaded | str | None = None,
) -> bytes:
    """One object's ``Partial`` as bytes (the unit of work of a Dask task).

    Records of ``profiled_hours`` (epoch // 3600) are counted and feed the
    configured segments only: full-traffic profiles give those hours' whole
    and per-version profiles.

    The object is read by the Arrow path (``monitor_job.columnar``) when
    ``arrow`` (default: unless ``MODELTAP_MONITOR_ARROW=0``) and the object
    allows it, else by the row path; the profiles are the same either way.
    ``loaded`` is the object already read by ``arrow_load`` (or the reason
    it could not be).
    """
    return _object_partial(
        ref,
        start,
        end,
        segments=segments,
        csv_columns=csv_columns,
        kll_k=kll_k,
        profiled_hours=profiled_hours,
        arrow=arrow,
        loaded=loaded,
    ).to_bytes()


def _object_partial(
    ref: ObjectRef,
    start: datetime | None,
    end: datetime | None,
    *,
    segments: Sequence[str] = (),
    csv_columns: Sequence[str] | None = None,
    kll_k: int = KLL_K,
    profiled_hours: Sequence[int] = (),
    arrow: bool | None = None,
    loaded: Loaded | str | None = None,
) -> Partial:
    """``profile_object``'s ``Partial`` (not encoded)."""
    if arrow is None:
        arrow = arrow_enabled()
    reason = None
    if arrow and ref.kind == "records":
        if loaded is None:
            loaded = arrow_load(ref)
        if isinstance(loaded, str):
            reason = loaded
        else:
            from monitor_job.columnar import Fallback

            try:
                with _collector_held():
                    return _profile_loaded(loaded, start, end, segments, kll_k, profiled_hours)
            except Fallback as exc:
                reason = exc.reason
            except Exception:  # a failure of this path: the row path still reads the object
                log.warning("%s: Arrow path failed, read as rows", ref.name, exc_info=True)
                reason = "error"
    with _collector_held():
        return _profile_object(
            ref, start, end, segments, csv_columns, kll_k, profiled_hours, fallback=reason
        )


def arrow_enabled() -> bool:
    return os.environ.get(ARROW_ENV, "1") != "0"


def arrow_load(ref: ObjectRef) -> Loaded | str:
    """The object read by the Arrow path, or why it cannot be (a fallback reason)."""
    try:
        from monitor_job.columnar import Fallback, load
    except ImportError:  # pyarrow missing: the row path reads everything
        return "no-pyarrow"
    try:
        return load(ref)
    except Fallback as exc:
        return exc.reason
    except Exception:  # a failure of this path: the row path still reads the object
        log.warning("%s: Arrow path failed, read as rows", ref.name, exc_info=True)
        return "error"


def _profile_object(
    ref: ObjectRef,
    start: datetime | None,
    end: datetime | None,
    segments: Sequence[str],
    csv_columns: Sequence[str] | None,
    kll_k: int,
    profiled_hours: Sequence[int],
    fallback: str | None = None,
) -> Partial:
    part = Partial(objects=1, fallbacks={fallback: 1} if fallback else {})
    job = _ObjectProfile(part, segments, kll_k)
    hours = frozenset(profiled_hours)
    custom = len(job.segmenter.columns) > 1
    held = FlatColumns()  # rows of profiled hours, for the custom segments
    batch = FlatColumns()
    for record in read_records(ref, start, end, csv_columns=csv_columns, stats=part):
        part.records += 1
        parse = record.get("parse") if isinstance(record, dict) else None
        if isinstance(parse, dict) and parse.get("error"):
            part.parse_errors += 1
        if hours and _hour_of(record) in hours:  # counted, and for the custom segments only
            if not (held.add(record) if custom else flatten(record)):
                part.records_without_rows += 1
            elif len(held) >= BATCH_ROWS:
                job.segment_only(held)
                held.clear()
            continue
        added = batch.add(record)
        if not added:
            part.records_without_rows += 1
            continue
        rate = sampled_rate(record)
        if rate is not None:
            part.add_sampled(rate, added)
        if len(batch) >= BATCH_ROWS:
            job.profile(batch)
            batch.clear()
    if batch:
        job.profile(batch)
    job.finish()
    job.segment_only(held)
    return part


def _profile_loaded(
    loaded: Loaded,
    start: datetime | None,
    end: datetime | None,
    segments: Sequence[str],
    kll_k: int,
    profiled_hours: Sequence[int],
) -> Partial:
    """``_profile_object`` of an object read by the Arrow path (``Fallback``
    if it holds records of ``profiled_hours``)."""
    from monitor_job.columnar import Fallback, window_mask

    part = Partial(objects=1, arrow_objects=1)
    job = _ObjectProfile(part, segments, kll_k)
    if start is not None or end is not None or profiled_hours:
        epochs = loaded.epochs()
        keep = window_mask(epochs, _epoch(start, -math.inf), _epoch(end, math.inf))
        if profiled_hours:
            kept = {int(t // 3600) for t in epochs[keep].tolist()}
            if not kept.isdisjoint(profiled_hours):
                raise Fallback("hours")
    else:
        keep = np.ones(loaded.records, dtype=bool)
    part.records = int(keep.sum())
    part.parse_errors = int((loaded.parse_error & keep).sum())
    for rate, rows in loaded.sampled_rows(keep).items():
        part.add_sampled(rate, rows)
    for batch in loaded.batches(keep, BATCH_ROWS):
        job.profile(batch)
    job.finish()
    return part


class _ObjectProfile:
    """The profiles of one object's rows: whole, per segment, mirrors.

    Segment keys whose profile is, so far, the whole profile (every row
    profiled had that key) are not profiled twice; see the module docstring.
    """

    def __init__(self, part: Partial, segments: Sequence[str], kll_k: int) -> None:
        self.part = part
        self.kll_k = kll_k
        self.whole = part.profiles[""] = DatasetProfile(kll_k=kll_k)
        self.segmenter = _Segmenter(segments)
        self.mirrors: set[str] | None = None  # None before the first batch

    def _of(self, key: str) -> DatasetProfile:
        prof = self.part.profiles.get(key)
        if prof is None:
            prof = self.part.profiles[key] = DatasetProfile(kll_k=self.kll_k)
        return prof

    def _materialise(self, key: str) -> None:
        """A mirrored segment gets its own profile: the whole's so far (plus,
        for a custom segment, what rows of profiled hours already gave it)."""
        prof = self.part.profiles.get(key)
        if prof is None:
            self.part.profiles[key] = self.whole.copy()
        else:
            prof.merge(self.whole)

    def segment_only(self, rows: Batch) -> None:
        if rows:
            for key, group in self.segmenter.groups(rows, custom_only=True).items():
                rows.profile(self._of(key), group)

    def profile(self, batch: Batch) -> None:
        groups = self.segmenter.groups(batch)
        full = {key for key, group in groups.items() if len(group) == len(batch)}
        if self.mirrors is None:
            self.mirrors = full
        else:
            for key in self.mirrors - full:  # before the whole takes this batch
                self._materialise(key)
            self.mirrors &= full
        batch.profile(self.whole)
        for key, group in groups.items():
            if key not in self.mirrors:
                batch.profile(self._of(key), group)

    def finish(self) -> None:
        for key in self.mirrors or ():
            self._materialise(key)


def _hour_of(record: dict[str, Any]) -> int | None:
    t = parse_time(record.get("time"))
    return None if t is None else int(t // 3600)


def profile_window(
    refs: Sequence[ObjectRef],
    start: datetime | None,
    end: datetime | None,
    *,
    segments: Sequence[str] = (),
    csv_columns: Sequence[str] | None = None,
    dask: str | None = None,
    progress: bool | None = None,
    label: str = "objects",
) -> Partial:
    """Profiles of every row of ``refs`` within [start, end), merged.

    Hours with full-traffic profiles (``capture.traffic``) take the whole and
    per-version profiles from them; their sampled records still give the
    counts and the configured segments. See ``traffic_partial``.
    """
    total = Partial()
    total.profiles[""] = DatasetProfile()
    records = [r for r in refs if r.kind == "records"]
    traffic, hours = traffic_partial([r for r in refs if r.kind == "profile"], start, end)
    total.merge(traffic)
    if progress is None:
        progress = sys.stderr.isatty()
    kwargs: dict[str, Any] = {
        "segments": list(segments),
        "csv_columns": csv_columns,
        "profiled_hours": sorted(hours),
    }
    if dask:
        results: Iterable[Partial] = _on_dask(dask, records, start, end, kwargs)
    else:
        results = _in_process(records, start, end, kwargs)
    if progress and records:
        from tqdm import tqdm

        results = tqdm(results, total=len(records), desc=label, unit="obj", file=sys.stderr)
    for part in results:
        total.merge(part)
    if records:
        log.info(
            "%s: %d of %d capture objects read by the Arrow path; fallbacks: %s",
            label,
            total.arrow_objects,
            len(records),
            dict(sorted(total.fallbacks.items())) or "none",
        )
    return total


def _in_process(
    refs: Sequence[ObjectRef],
    start: datetime | None,
    end: datetime | None,
    kwargs: dict[str, Any],
) -> Iterator[Partial]:
    """Each ref's ``Partial`` (as ``Partial.from_bytes(profile_object(...))``
    gives it: see ``Partial.copy``), yielded in ``refs``' order. With the
    Arrow path on, the next ``READ_AHEAD`` objects are read (bytes, gunzip,
    Arrow's parse: mostly outside the GIL) on as many threads while this one
    profiles the current one: at most ``READ_AHEAD + 1`` objects are held at
    once. A read that fails makes that object go the row path (``arrow_load``
    never raises); when the caller stops early, reads not yet started are
    cancelled and those under way are waited for."""
    if not arrow_enabled() or not refs:
        for ref in refs:
            yield _object_partial(ref, start, end, arrow=False, **kwargs).copy()
        return
    pool = ThreadPoolExecutor(max_workers=READ_AHEAD, thread_name_prefix="arrow-read")
    try:
        ahead: deque[Future[Loaded | str]] = deque(
            pool.submit(arrow_load, ref) for ref in refs[:READ_AHEAD]
        )
        for i, ref in enumerate(refs):
            loaded = ahead.popleft().result()
            if i + READ_AHEAD < len(refs):
                ahead.append(pool.submit(arrow_load, refs[i + READ_AHEAD]))
            part = _object_partial(ref, start, end, arrow=True, loaded=loaded, **kwargs)
            del loaded
            yield part.copy()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_PARTITION_HOUR = re.compile(r"dt=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/")


def traffic_partial(
    refs: Sequence[ObjectRef], start: datetime | None, end: datetime | None
) -> tuple[Partial, set[int]]:
    """The full-traffic profiles of the window, merged, and the hours they cover.

    An hour (epoch // 3600) is covered when it has profiles and every one of
    them lies inside [start, end) and reads cleanly. An hour with a profile
    that straddles the window's edge, or that cannot be read (named in
    ``problems``), is left to the sampled records instead, so a window never
    mixes the two for the same hour. Every process of a model must run with
    ``MODELTAP_PROFILE_ALL`` on: records of a process without it are not
    added to a covered hour.
    """
    lo = start.timestamp() if start is not None else -math.inf
    hi = end.timestamp() if end is not None else math.inf
    part = Partial()
    by_hour: dict[int, list[DatasetProfile]] = {}
    refused: set[int] = set()
    for ref in refs:
        try:
            prof, first, last = _read_traffic_profile(ref)
        except InputError as exc:
            hour = _key_hour(ref.key)
            if hour is not None:
                refused.add(hour)
            part.problems.append(f"{exc}; that hour is profiled from the sampled records")
            continue
        if last < lo or first >= hi:
            continue  # wholly outside the window
        hour = int(first // 3600)
        if first < lo or last >= hi:
            refused.add(hour)
            continue
        by_hour.setdefault(hour, []).append(prof)
    covered = set(by_hour) - refused
    for hour in sorted(covered):
        part.profiled_hours += 1
        for prof in by_hour[hour]:
            part.traffic_profiles += 1
            version = canonical(prof.meta.get("version"))
            piece = Partial(profiles={"": prof})
            if version is not None:
                piece.profiles[f"{VERSION_COLUMN}={version}"] = DatasetProfile.from_bytes(
                    prof.to_bytes()
                )
            part.merge(piece)
    return part, covered


def _read_traffic_profile(ref: ObjectRef) -> tuple[DatasetProfile, float, float]:
    with open_location(ref.location).open(ref.key) as fh:
        data = fh.read()
    try:
        prof = DatasetProfile.from_bytes(data)
    except ValueError as exc:
        raise InputError(f"{ref.name}: not a readable profile: {exc}") from None
    first, last = parse_time(prof.meta.get("start")), parse_time(prof.meta.get("end"))
    if first is None or last is None:
        raise InputError(f"{ref.name}: profile without its start and end times")
    return prof, first, last


def _key_hour(key: str) -> int | None:
    m = _PARTITION_HOUR.search(key)
    if m is None:
        return None
    day = datetime.strptime(m.group(1), "%Y-%m-%d").replace(tzinfo=timezone.utc)
    return int(day.timestamp() // 3600) + int(m.group(2))


def _on_dask(
    address: str,
    refs: Sequence[ObjectRef],
    start: datetime | None,
    end: datetime | None,
    kwargs: dict[str, Any],
) -> Iterator[Partial]:
    from dask.distributed import Client, LocalCluster, as_completed

    # dask.distributed is untyped: these calls are checked by the Dask tests.
    cluster = (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True)  # type: ignore[no-untyped-call]
        if (address == "local")
        else None
    )
    client = Client(cluster if cluster is not None else address)  # type: ignore[no-untyped-call]
    try:
        futures = client.map(profile_object, refs, start=start, end=end, pure=False, **kwargs)
        for future in as_completed(futures):  # type: ignore[no-untyped-call]
            yield Partial.from_bytes(future.result())
    finally:
        client.close()  # type: ignore[no-untyped-call]
        if cluster is not None:
            cluster.close()
