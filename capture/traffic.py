"""Full-traffic profiles: column profiles of every exchange, sampled or not.

Raw records stay sampled (``MODELTAP_SAMPLE_RATE``); with
``MODELTAP_PROFILE_ALL=true`` the capture also keeps a ``DatasetProfile``
(``capture.profile``) of *all* traffic and writes it beside the records, so
the monitor sees full-traffic distributions and volumes at a fraction of the
storage.

Cost and where it is paid: on the request path a sampled-out exchange is
one append to a bounded queue (as a kept one is to the buffer). A background
thread builds its record exactly as a kept one is built (payload adapters,
then redaction, so a redacted field never reaches a sketch), flattens it
into rows (``capture.rows``) and updates the profile in batches. That is the
same CPU per exchange as capturing it, minus encoding and upload: at a 1%
sample rate, full-traffic profiles cost about as much background CPU as
capturing 100%. The queue is capped at ``MODELTAP_PROFILE_MAX_QUEUE_BYTES``
(32 MiB of bodies); beyond it an exchange is left out of the profile and
counted (``profile_dropped``), never delays the request.

Objects: one profile per hour, model and model version, written as
``{model}/dt=YYYY-MM-DD/hour=HH/{host}-{pid}-{seq}.profile.json`` (the bytes
of ``DatasetProfile.to_bytes()``; ``meta`` holds ``model``, ``version``,
``start`` and ``end`` (ISO times of the first and last exchange in it),
``exchanges`` and ``kind: "traffic"``). A profile is written when it is
``MODELTAP_PROFILE_MAX_AGE_S`` old (default 300 s), when its hour is over,
and on ``flush()``/``close()``: the records' triggers except size and count,
which a constant-size sketch does not need. Why 300 s and not the records'
60 s: a profile is ~10 KB a column whatever the traffic, so at 60 s a
100-column model would write ~1.4 GB a day per process for no gain in
resolution the hourly monitor can use.

A failed write keeps the profile in memory and retries it at the next
trigger; at most ``MAX_UNSENT`` profiles wait. Older ones, and those still
unwritten when ``close`` ends, are dropped with their exchanges counted in
``profile_dropped`` (there is no spool for profiles: they are summaries, and
the raw records have one).

Counters (``CaptureStats``, exported as ``modeltap_capture_*``): ``profiled``
(exchanges in a profile), ``profile_dropped`` (exchanges left out),
``profiles_written``, ``profile_write_failures`` (failed attempts).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from capture.clock import SystemClock
from capture.errors import CaptureError
from capture.keys import KeyNamer
from capture.profile import DatasetProfile
from capture.rows import FlatColumns
from capture.stats import CaptureStats
from capture.types import Clock, Sink

log = logging.getLogger(__name__)

PROFILE_SUFFIX = ".profile.json"
BATCH_ROWS = 2048  # rows per profile update (the profile's batch fast path)
MAX_UNSENT = 64  # profiles kept for retry while the sink fails
_POLL_S = 0.2

#: item -> (record, time in epoch seconds), or None to skip the item.
Builder = Callable[[Any], "tuple[dict[str, Any], float] | None"]


@dataclass
class _Open:
    """The profile of one (hour, model, version) still being filled."""

    model: str
    version: str | None
    first: float  # earliest exchange time (epoch s); the age trigger counts from it
    last: float
    profile: DatasetProfile = field(default_factory=DatasetProfile)
    pending: FlatColumns = field(default_factory=FlatColumns)  # flat rows not yet profiled
    exchanges: int = 0

    def fold(self) -> None:
        if self.pending:
            self.pending.profile(self.profile)
            self.pending.clear()


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds")


class TrafficProfiles:
    """Keeps and writes full-traffic profiles; owned by a ``Capturer``.

    ``offer(item, nbytes)`` queues an item to build (request path, O(1));
    ``add(record, t)`` queues an already-built record (the capture's own
    background thread, for kept exchanges). Both go to one worker thread.
    """

    def __init__(
        self,
        sink: Sink,
        model: str,
        build: Builder,
        *,
        max_age_s: float = 300.0,
        max_queue_bytes: int = 32 * 1024 * 1024,
        clock: Clock | None = None,
        stats: CaptureStats | None = None,
    ) -> None:
        self.sink = sink
        self.namer = KeyNamer("", model, suffix=PROFILE_SUFFIX)
        self.build = build
        self.max_age_s = max_age_s
        self.max_queue_bytes = max_queue_bytes
        self.clock: Clock = clock or SystemClock()
        self.stats = stats or CaptureStats()
        self._lock = threading.Lock()
        self._queue: deque[tuple[Any, float | None, int]] = deque()
        self._queued_bytes = 0
        self._wake = threading.Event()
        self._open: dict[tuple[int, str, str | None], _Open] = {}
        self._unsent: deque[tuple[str, bytes, int]] = deque()  # key, data, exchanges
        self._flush_requests: list[threading.Event] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="modeltap-profiles", daemon=True)
        self._thread.start()

    # -- producers ------------------------------------------------------------

    def offer(self, item: Any, nbytes: int) -> None:
        """Queue a sampled-out item for the profile; never blocks or raises."""
        with self._lock:
            if self._stopping or self._queued_bytes + nbytes > self.max_queue_bytes:
                self.stats.add("profile_dropped")
                return
            self._queue.append((item, None, nbytes))
            self._queued_bytes += nbytes

    def add(self, record: dict[str, Any], t: float) -> None:
        """Queue a built record (a kept exchange) taken at epoch ``t``."""
        with self._lock:
            if self._stopping:
                self.stats.add("profile_dropped")
                return
            self._queue.append((record, t, 0))

    # -- control --------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Write every open profile now; True when done within ``timeout``."""
        done = threading.Event()
        with self._lock:
            self._flush_requests.append(done)
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Profile what is queued, write everything, stop the thread."""
        with self._lock:
            self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("full-traffic profiles not all written within %ss", timeout)

    # -- worker ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(_POLL_S)
            self._wake.clear()
            with self._lock:
                stopping = self._stopping
                requests, self._flush_requests = self._flush_requests, []
            try:
                self._drain()
                self._seal(everything=stopping or bool(requests))
            except Exception:  # the worker must survive anything an item does
                log.exception("full-traffic profile update failed")
            for done in requests:
                done.set()
            if stopping:
                self._give_up(len(self._unsent), "the sink is still failing at close")
                with self._lock:
                    for done in self._flush_requests:
                        done.set()
                return

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._queue:
                    break
                item, t, nbytes = self._queue.popleft()
                self._queued_bytes -= nbytes
            if t is None:
                try:
                    built = self.build(item)
                except Exception:
                    log.exception("building a record for the traffic profile failed")
                    built = None
                if built is None:
                    self.stats.add("profile_dropped")
                    continue
                record, t = built
            else:
                record = item
            self._take(record, t)

    def _take(self, record: dict[str, Any], t: float) -> None:
        model_info = record.get("model")
        model_info = model_info if isinstance(model_info, dict) else {}
        model = str(model_info.get("name") or self.namer.model)
        version = model_info.get("version")
        version = None if version is None else str(version)
        key = (int(t // 3600), model, version)
        open_ = self._open.get(key)
        if open_ is None:
            open_ = self._open[key] = _Open(model, version, t, t)
        open_.first = min(open_.first, t)
        open_.last = max(open_.last, t)
        open_.exchanges += 1
        open_.pending.add(record)
        if len(open_.pending) >= BATCH_ROWS:
            open_.fold()
        self.stats.add("profiled")

    def _seal(self, *, everything: bool) -> None:
        now = self.clock.time()
        this_hour = int(now // 3600)
        for key in list(self._open):
            open_ = self._open[key]
            if everything or key[0] < this_hour or now - open_.first >= self.max_age_s:
                del self._open[key]
                self._queue_write(open_)
        self._write_unsent()

    def _queue_write(self, open_: _Open) -> None:
        open_.fold()
        prof = open_.profile
        prof.meta.update(
            kind="traffic",
            model=open_.model,
            version=open_.version,
            start=iso(open_.first),
            end=iso(open_.last),
            exchanges=open_.exchanges,
        )
        try:
            key = self.namer.key(open_.first, model=open_.model)
            data = prof.to_bytes()
        except (CaptureError, ValueError) as exc:  # unsafe model name, unserialisable meta
            log.error("full-traffic profile of %s not written: %s", open_.model, exc)
            self.stats.add("profile_dropped", open_.exchanges)
            return
        self._unsent.append((key, data, open_.exchanges))
        self._give_up(len(self._unsent) - MAX_UNSENT, f"more than {MAX_UNSENT} wait")

    def _give_up(self, n: int, why: str) -> None:
        """Drop the ``n`` oldest unwritten profiles, counting their exchanges."""
        for _ in range(max(0, n)):
            key, _data, exchanges = self._unsent.popleft()
            self.stats.add("profile_dropped", exchanges)
            log.error("full-traffic profile %s dropped: %s", key, why)

    def _write_unsent(self) -> None:
        while self._unsent:
            key, data, _ = self._unsent[0]
            try:
                self.sink.put(key, data)
            except Exception as exc:  # the sink is down: keep it for the next trigger
                self.stats.add("profile_write_failures")
                log.warning("full-traffic profile %s not written yet: %s", key, exc)
                return
            self._unsent.popleft()
            self.stats.add("profiles_written")
