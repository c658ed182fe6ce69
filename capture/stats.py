"""Capture counters: what was offered, kept, sampled out, dropped and written.

One ``CaptureStats`` per capturer, shared by the sampler, buffer, spool and
sinks. Counters only go up; gauges (buffer depth, spool size) are not stored
but read through callbacks at snapshot time, so nothing on the request path
updates them. The server turns ``snapshot()`` into Prometheus metrics with a
custom collector at scrape time (see ``server/metrics.py``).

Invariant the tests check: ``offered == kept + sampled_out`` and, once the
buffer is closed, ``kept == records_written + replayed_records +
spool_records + sum(dropped)`` (records written directly or from the spool,
still in the spool, or dropped with a reason), counting only this process's
records (a spool left by a previous process adds its own).

Ground-truth labels (``Capturer.ingest_labels``) travel through the same
buffer, so each accepted label counts as offered and kept too (and then as
written, spooled or dropped like any record); ``labels_accepted`` and
``labels_rejected`` count them apart.

Drop reasons:

- ``buffer_full``: the in-memory cap was reached (drop newest).
- ``spool_full``: the sink failed and the spool was at its size cap.
- ``spool_error``: the sink failed and the spool could not write (disk error).
- ``sink_rejected``: the sink refused the batch for good (access denied...)
  and no spool was configured.
- ``shutdown``: still unwritten when the close deadline passed, with no spool.
- ``encode_error``: a record could not be encoded even after sanitising.
- ``spool_corrupt``: a spool entry failed its checksum on replay.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

COUNTERS = (
    "offered",
    "kept",
    "sampled_out",
    "records_written",
    "batches_written",
    "bytes_written",
    "upload_failures",
    "upload_retries",
    "spooled_records",
    "spooled_batches",
    "replayed_records",
    "replayed_batches",
    "redactions",
    "parse_errors",
    "profiled",
    "profile_dropped",
    "profiles_written",
    "profile_write_failures",
    "labels_accepted",
    "labels_rejected",
    "encoder_restarts",
    "encoder_fallbacks",
    "encoder_assists",
)
LABELED = ("dropped", "flushes")
DROP_REASONS = (
    "buffer_full",
    "spool_full",
    "spool_error",
    "sink_rejected",
    "shutdown",
    "encode_error",
    "spool_corrupt",
)
FLUSH_TRIGGERS = ("size", "count", "age", "close", "manual", "spill")


class CaptureStats:
    """Thread-safe counters plus gauge callbacks.

    >>> stats = CaptureStats()
    >>> stats.add("offered", 3); stats.drop("buffer_full")
    >>> stats.snapshot()["offered"], stats.snapshot()["dropped"]["buffer_full"]
    (3, 1)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._labeled: dict[str, defaultdict[str, int]] = {
            name: defaultdict(int) for name in LABELED
        }
        for reason in DROP_REASONS:
            self._labeled["dropped"][reason] = 0
        for trigger in FLUSH_TRIGGERS:
            self._labeled["flushes"][trigger] = 0
        self._gauges: dict[str, Callable[[], float]] = {}
        # Per-thread cells for the hottest counter (unsampled decorated calls):
        # each thread adds to its own cell without a lock; snapshots sum them.
        self._local = threading.local()
        self._cells: list[list[int]] = []

    def add(self, name: str, n: int = 1) -> None:
        if name not in self._counts:
            raise KeyError(f"unknown counter {name!r}")
        with self._lock:
            self._counts[name] += n

    def offered(self, kept: bool) -> None:
        """Count one exchange offered, and kept or sampled out (request path)."""
        with self._lock:
            counts = self._counts
            counts["offered"] += 1
            counts["kept" if kept else "sampled_out"] += 1

    def count_unsampled(self) -> None:
        """Count one offered, sampled-out call; lock-free (per-thread cell)."""
        try:
            self._local.cell[0] += 1
        except AttributeError:
            cell = [1]
            with self._lock:
                self._cells.append(cell)
            self._local.cell = cell

    def _unsampled(self) -> int:
        return sum(cell[0] for cell in list(self._cells))

    def drop(self, reason: str, n: int = 1) -> None:
        """Count ``n`` records dropped for ``reason`` (one of ``DROP_REASONS``)."""
        with self._lock:
            self._labeled["dropped"][reason] += n

    def flushed(self, trigger: str) -> None:
        with self._lock:
            self._labeled["flushes"][trigger] += 1

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        """Register a value computed when a snapshot is taken."""
        self._gauges[name] = read

    def get(self, name: str) -> int:
        with self._lock:
            value = self._counts[name]
        if name in ("offered", "sampled_out"):
            value += self._unsampled()
        return value

    def dropped(self, reason: str | None = None) -> int:
        with self._lock:
            d = self._labeled["dropped"]
            return sum(d.values()) if reason is None else d[reason]

    def snapshot(self) -> dict[str, Any]:
        """All counters, labeled counters and gauges as plain values."""
        with self._lock:
            snap: dict[str, Any] = dict(self._counts)
        unsampled = self._unsampled()
        snap["offered"] += unsampled
        snap["sampled_out"] += unsampled
        with self._lock:
            for name, values in self._labeled.items():
                snap[name] = dict(values)
        for name, read in list(self._gauges.items()):
            try:
                snap[name] = float(read())
            except Exception:  # a gauge must never break a scrape
                snap[name] = float("nan")
        return snap
