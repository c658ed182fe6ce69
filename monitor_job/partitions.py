"""The partition walk behind ``readers.list_captures``: which objects of a
location may hold records of a time window, found by listing one directory
level at a time and descending only into partitions that overlap the window.

Layouts (told apart by the names one level down):

- ours, under a model directory: ``dt=YYYY-MM-DD/hour=HH/*.jsonl.gz`` (records)
  and ``*.profile.json`` (full-traffic profiles);
- SageMaker Data Capture, under a variant directory: ``yyyy/mm/dd/hh/*.jsonl``.

The hour before the window is walked too ("edge"): the capture names a batch
by the hour of its first record, so records of 10:00:10 may sit under
``hour=09``. Of an edge partition only record objects last written at or
after ``window start - CLOCK_SKEW_S`` are kept (an object uploaded before the
window began cannot hold records from inside it); its profiles are not kept,
since they describe whole batches mostly outside the window.

A top-level ``ground_truth/`` directory (labels, ``capture.labels``) is
skipped when listing captures; ``monitor_job.groundtruth`` lists it on its
own with the same walk.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from monitor_job.locations import Entry, Location, ObjectRef, join

log = logging.getLogger(__name__)

LOOKBACK_S = 3600.0  # the hour partition before the window
CLOCK_SKEW_S = 300.0  # tolerated skew between capture hosts and the store's clock
GROUND_TRUTH_DIR = "ground_truth"  # labels beside the models' captures, never read as captures

_DT = re.compile(r"^dt=(\d{4})-(\d{2})-(\d{2})$")
_HOUR = re.compile(r"^hour=(\d{2})$")
_YEAR = re.compile(r"^\d{4}$")
_TWO = re.compile(r"^\d{2}$")


@dataclass(frozen=True)
class _Window:
    lo: float
    hi: float

    def span(self, a: float, b: float) -> str | None:
        """ "in" when [a, b) overlaps the window, "edge" when only the hour before it."""
        if a < self.hi and b > self.lo:
            return "in"
        if a < self.lo and b > self.lo - LOOKBACK_S:
            return "edge"
        return None


def _utc(y: int, m: int, d: int = 1, h: int = 0) -> float | None:
    try:
        return datetime(y, m, d, h, tzinfo=timezone.utc).timestamp()
    except ValueError:
        return None


def _ours(depth: int, parent: tuple[float, float], name: str) -> tuple[float, float] | None:
    """Time range of ``dt=YYYY-MM-DD`` (depth 0) and ``hour=HH`` (depth 1)."""
    if depth == 0 and (m := _DT.match(name)):
        day = _utc(int(m[1]), int(m[2]), int(m[3]))
        return None if day is None else (day, day + 86400.0)
    if depth == 1 and (m := _HOUR.match(name)) and int(m[1]) < 24:
        lo = parent[0] + int(m[1]) * 3600.0
        return lo, lo + 3600.0
    return None


def _sagemaker(depth: int, parent: tuple[float, float], name: str) -> tuple[float, float] | None:
    """Time range of ``yyyy`` / ``mm`` / ``dd`` / ``hh`` (depths 0-3)."""
    if not (_YEAR if depth == 0 else _TWO).match(name):
        return None
    n = int(name)
    if depth == 0:
        lo, hi = _utc(n, 1), _utc(n + 1, 1) if n < 9999 else None
    else:
        p = datetime.fromtimestamp(parent[0], timezone.utc)
        if depth == 1:
            lo, hi = _utc(p.year, n), _utc(p.year + n // 12, n % 12 + 1)
        elif depth == 2:
            lo = _utc(p.year, p.month, n)
            hi = None if lo is None else lo + 86400.0
        else:
            lo = None if n > 23 else parent[0] + n * 3600.0
            hi = None if lo is None else lo + 3600.0
    return None if lo is None or hi is None else (lo, hi)


_LAYOUTS = {"ours": (_ours, 2), "sagemaker": (_sagemaker, 4)}


def _kind(name: str, layout: str) -> str | None:
    if name.endswith((".jsonl.gz", ".jsonl")):
        return "records"
    if layout == "ours" and name.endswith(".profile.json"):
        return "profile"
    return None


def _walk(
    loc: Location,
    rel: str,
    listing: tuple[list[str], list[Entry]],
    layout: str,
    depth: int,
    parent: tuple[float, float],
    span: str,
    window: _Window,
    out: list[ObjectRef],
) -> None:
    interval, levels = _LAYOUTS[layout]
    dirs, files = listing
    if depth > 0:
        for f in files:
            kind = _kind(f.name, layout)
            if kind is None:
                continue
            if span == "edge" and (kind != "records" or f.mtime < window.lo - CLOCK_SKEW_S):
                continue
            out.append(ObjectRef(loc.url, join(rel, f.name), f.size, kind, f.mtime))
    if depth == levels:
        return
    for d in sorted(dirs):
        child = interval(depth, parent, d)
        child_span = window.span(*child) if child is not None else None
        if child is None or child_span is None:
            continue
        sub = join(rel, d)
        _walk(loc, sub, loc.children(sub), layout, depth + 1, child, child_span, window, out)


def _discover(
    loc: Location, rel: str, depth: int, model: str | None, window: _Window, out: list[ObjectRef]
) -> None:
    listing = loc.children(rel)
    dirs = listing[0]
    everything = (-math.inf, math.inf)
    if any(_DT.match(d) for d in dirs):
        _walk(loc, rel, listing, "ours", 0, everything, "in", window, out)
    elif any(_YEAR.match(d) for d in dirs):
        _walk(loc, rel, listing, "sagemaker", 0, everything, "in", window, out)
    elif depth < 2:  # root -> model or endpoint -> variant
        for d in sorted(dirs):
            if depth == 0 and (d == GROUND_TRUTH_DIR or (model is not None and d != model)):
                continue  # labels are read apart (monitor_job.groundtruth)
            _discover(loc, join(rel, d), depth + 1, model, window, out)
        if depth == 0 and model is not None and model not in dirs:
            log.warning("%s: no captures for model %r (found: %s)", loc.url, model, dirs[:20])


def find(loc: Location, lo: float, hi: float, model: str | None = None) -> list[ObjectRef]:
    """Objects of ``loc`` that may hold records in ``[lo, hi)`` (epoch s), sorted by key.

    ``model`` keeps only that first-level directory (model or endpoint).
    """
    window = _Window(lo, hi)
    out: list[ObjectRef] = []
    if window.lo < window.hi:
        _discover(loc, "", 0, model, window, out)
    out.sort(key=lambda r: r.key)
    return out
