"""The capture buffer: O(1) appends on the request path, batching, encoding and
uploads in the background, bounded memory, and no silent loss.

Request path (``offer``, any thread or event loop): one short lock, a list
append and a few integer updates; it never waits for the sink, never does I/O
and never raises. Everything else runs on background threads:

- a *flusher* thread seals batches and encodes them (``process`` turns an item
  into a record dict, then JSON lines, gzip); records are grouped by model
  name, one object per model per batch;
- *uploader* threads (``upload_workers``) put objects in the sink, retrying
  with capped exponential backoff and jitter;
- with a spool, a *replayer* thread re-uploads spooled batches once the sink
  is back, and at start (what a previous process left behind).

Batches close on ``max_records``, ``max_bytes`` (of the items' size hints) or
``max_age_s`` counted from the batch's first record, whichever comes first,
and on ``flush()``/``close()``. A single item bigger than ``max_bytes`` ships
alone. This is a buffer, not a batch: several sealed batches may wait or be
in flight at once.

Memory: every item's size hint counts against ``max_buffer_bytes`` from
``offer`` until its batch is written, spooled or dropped. Beyond the cap the
newest item is dropped (``buffer_full``). With a spool configured, a batch goes
to the spool instead of the sink when the sink has failed
``attempts_before_spool`` times, when it is known to be down, or when the
buffer is over half full (``spill``), so memory drains to disk rather than
dropping; such batches are spooled by the flusher itself, so a sink that
hangs (holding every upload thread) cannot fill memory either. Without a
spool, a failing batch is retried until ``close``; what is still unwritten at
the close deadline is counted as ``shutdown`` drops.

Every record is accounted for in ``CaptureStats``: written, spooled or
dropped with a reason.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from capture.clock import SystemClock
from capture.compression import gzip_compressor
from capture.encoding import dumps
from capture.errors import ConfigError, SinkError, SpoolError
from capture.keys import KeyNamer
from capture.labels import LABEL_KIND
from capture.stats import CaptureStats
from capture.types import Clock, Sink

if TYPE_CHECKING:
    from capture.spool import DiskSpool

log = logging.getLogger(__name__)

Processor = Callable[[Any], "dict[str, Any] | None"]
#: Builds and encodes a whole batch elsewhere: ``{(kind, model): (gzip bytes,
#: records)}``, or None to have the flusher do it (``capture.offload``).
Offload = Callable[[list[Any]], "dict[tuple[str | None, str], tuple[bytes, int]] | None"]

#: Longest real-time sleep of the flusher; bounds how late an age flush is
#: noticed with an injected clock that moves on its own.
_POLL_S = 0.2
#: Records ``encode_items`` builds between two explicit releases of the GIL.
#: Compiled with mypyc (``setup.py``), the loop and everything it calls are
#: native code, which never hands the GIL to another thread on its own: on
#: the flusher thread a 10,000-record batch would stall the request path for
#: its whole ~0.1 s. ``time.sleep(0)`` releases it (~1 µs), and a thread that
#: has waited its switch interval (5 ms) then takes over, as it would from
#: interpreted code. 32 ``predict`` records take ~0.3 ms; 32 100-item
#: rankings ~4 ms.
GIL_YIELD_EVERY = 32


@dataclass(frozen=True)
class BufferConfig:
    """Flush triggers, memory cap and retry policy. Validated at construction."""

    max_records: int = 10_000
    max_bytes: int = 8 * 1024 * 1024
    max_age_s: float = 60.0
    max_buffer_bytes: int = 64 * 1024 * 1024
    upload_workers: int = 2
    gzip_level: int = 3
    retry_initial_s: float = 0.5
    retry_max_s: float = 30.0
    attempts_before_spool: int = 3
    close_timeout_s: float = 30.0
    replay_interval_s: float = 5.0

    def __post_init__(self) -> None:
        positive = ("max_records", "max_bytes", "max_buffer_bytes", "upload_workers")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_age_s", "retry_initial_s", "retry_max_s", "replay_interval_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.gzip_level <= 9:
            raise ConfigError(f"gzip_level must be in 0..9, got {self.gzip_level}")
        if self.attempts_before_spool < 1 or self.close_timeout_s < 0:
            raise ConfigError("attempts_before_spool must be >= 1 and close_timeout_s >= 0")
        if self.max_bytes > self.max_buffer_bytes:
            raise ConfigError(
                f"max_bytes ({self.max_bytes}) must not exceed max_buffer_bytes "
                f"({self.max_buffer_bytes})"
            )


@dataclass
class _Batch:
    seq: int
    items: list[Any]
    nbytes: int
    first_time: float
    trigger: str


@dataclass(frozen=True)
class _Encoded:
    key: str
    data: bytes
    records: int


class _GzipLines:
    """JSON lines streamed into one gzip member, compressed in small chunks.

    Compressing 64 lines at a time keeps the working set in cache; joining a
    whole batch first costs 2-4x more here (fresh memory for every line).
    """

    CHUNK = 64

    def __init__(self, level: int) -> None:
        self._z = gzip_compressor(level)
        self._pending: list[bytes] = []
        self._parts: list[bytes] = []
        self.count = 0

    def add(self, line: bytes) -> None:
        self._pending.append(line)
        self.count += 1
        if len(self._pending) >= self.CHUNK:
            self._drain()

    def _drain(self) -> None:
        self._pending.append(b"")
        self._parts.append(self._z.compress(b"\n".join(self._pending)))
        self._pending = []

    def finish(self) -> bytes:
        if self._pending:
            self._drain()
        self._parts.append(self._z.flush())
        return b"".join(self._parts)


def encode_items(
    items: Iterable[Any], process: Processor, gzip_level: int, default_model: str
) -> tuple[dict[tuple[str | None, str], tuple[bytes, int]], int]:
    """Build (``process``) and encode ``items`` into one gzip JSONL object per
    ``(kind, model)``: ``{(kind, model): (bytes, records)}`` and the number of
    items that failed (logged, to be counted as ``encode_error`` drops).
    Shared by the flusher thread and the helper process (``capture.offload``)."""
    groups: dict[tuple[str | None, str], _GzipLines] = {}
    failed = 0
    for n, item in enumerate(items, 1):
        if not n % GIL_YIELD_EVERY:
            time.sleep(0)  # compiled, this loop would hold the GIL for the whole batch
        try:
            record = process(item)
            if record is None:
                continue
            model = record.get("model")
            name = model.get("name") if isinstance(model, dict) else None
            kind = record.get("kind")
            line = dumps(record)
        except Exception:
            log.exception("a record could not be built or encoded; dropped")
            failed += 1
            continue
        group_key = (LABEL_KIND if kind == LABEL_KIND else None, str(name or default_model))
        group = groups.get(group_key)
        if group is None:
            group = groups[group_key] = _GzipLines(gzip_level)
        group.add(line)
    return {key: (group.finish(), group.count) for key, group in groups.items()}, failed


class CaptureBuffer:
    """Batches items and ships them to a sink in the background.

    >>> import tempfile
    >>> from capture.sinks import LocalSink
    >>> buf = CaptureBuffer(LocalSink(tempfile.mkdtemp()), KeyNamer("", "m"))
    >>> buf.offer({"model": {"name": "m"}, "x": 1}, 100)
    True
    >>> buf.close(); buf.stats.get("records_written")
    1
    """

    def __init__(
        self,
        sink: Sink,
        namer: KeyNamer,
        *,
        config: BufferConfig | None = None,
        process: Processor | None = None,
        offload: Offload | None = None,
        spool: DiskSpool | None = None,
        stats: CaptureStats | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.sink = sink
        self.namer = namer
        self.config = config or BufferConfig()
        self.process: Processor = process or (lambda item: item)
        self.offload = offload
        self.spool = spool
        self.stats = stats or CaptureStats()
        self.clock: Clock = clock or SystemClock()

        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._current: list[Any] = []
        self._current_bytes = 0
        self._current_started = 0.0
        self._current_time = 0.0
        self._pending_bytes = 0  # buffered + sealed + encoding + uploading
        self._pending_records = 0
        self._sealed: deque[_Batch] = deque()
        self._outstanding: set[int] = set()
        self._seq = 0
        self._closing = False
        self._dropping = False  # dropping for buffer_full since the last accepted item
        self._deadline = float("inf")
        self._sink_down = False
        self._failing = False  # an outage is being logged
        self._stop = threading.Event()

        self.stats.gauge("buffer_records", lambda: self._pending_records)
        self.stats.gauge("buffer_bytes", lambda: self._pending_bytes)
        self._uploads = ThreadPoolExecutor(
            self.config.upload_workers, thread_name_prefix="modeltap-upload"
        )
        self._flusher = threading.Thread(
            target=self._flush_loop, name="modeltap-flush", daemon=True
        )
        self._flusher.start()
        self._replayer: threading.Thread | None = None
        if spool is not None:
            self._replayer = threading.Thread(
                target=self._replay_loop, name="modeltap-replay", daemon=True
            )
            self._replayer.start()

    # -- request path -------------------------------------------------------

    def offer(self, item: Any, nbytes: int) -> bool:
        """Append ``item`` (about ``nbytes`` in memory). Never blocks on I/O.

        Returns False when the item was dropped (buffer full or closed).
        """
        cfg = self.config
        with self._lock:
            if self._closing or (
                self._pending_bytes + nbytes > cfg.max_buffer_bytes and self._pending_bytes
            ):
                full = not self._closing
            else:
                if not self._current:
                    self._current_started = self.clock.monotonic()
                    self._current_time = self.clock.time()
                self._current.append(item)
                self._current_bytes += nbytes
                self._pending_bytes += nbytes
                self._pending_records += 1
                if len(self._current) >= cfg.max_records:
                    self._seal_locked("count")
                elif self._current_bytes >= cfg.max_bytes:
                    self._seal_locked("size")
                if self._dropping:
                    self._dropping = False
                    log.warning("capture buffer has room again: records are kept")
                return True
            first_drop = full and not self._dropping
            self._dropping = self._dropping or full
        self.stats.drop("buffer_full" if full else "shutdown")
        if first_drop:  # once per episode: the counter has the numbers
            log.warning(
                "capture buffer full (%d bytes held): new records are dropped, counted as "
                "buffer_full, until uploads catch up",
                cfg.max_buffer_bytes,
            )
        return False

    # -- control ------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Seal the current batch and wait until every batch sealed so far is
        written, spooled or dropped. Returns False on timeout."""
        with self._cond:
            if self._current:
                self._seal_locked("manual")
            target = self._seq
            return self._cond.wait_for(
                lambda: not any(s <= target for s in self._outstanding), timeout
            )

    def close(self, timeout: float | None = None) -> None:
        """Flush everything within ``timeout`` (default ``close_timeout_s``),
        spooling or counting as ``shutdown`` what the sink cannot take by then,
        and stop the background threads. Idempotent."""
        budget = self.config.close_timeout_s if timeout is None else timeout
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._deadline = self.clock.monotonic() + budget
            if self._current:
                self._seal_locked("close")
            self._cond.notify_all()
        self._stop.set()
        self._flusher.join()
        self._uploads.shutdown(wait=True)
        if self._replayer is not None:
            self._replayer.join()

    @property
    def closed(self) -> bool:
        return self._closing

    def depth(self) -> tuple[int, int]:
        """(records, bytes) held in memory right now."""
        return self._pending_records, self._pending_bytes

    # -- background: sealing and encoding -----------------------------------

    def _seal_locked(self, trigger: str) -> None:
        self._seq += 1
        batch = _Batch(self._seq, self._current, self._current_bytes, self._current_time, trigger)
        self._current = []
        self._current_bytes = 0
        self._sealed.append(batch)
        self._outstanding.add(batch.seq)
        self._cond.notify_all()

    def _flush_loop(self) -> None:
        while True:
            with self._cond:
                while not self._sealed:
                    if self._closing:
                        return
                    if self._current:
                        age = self.clock.monotonic() - self._current_started
                        if age >= self.config.max_age_s:
                            self._seal_locked("age")
                            break
                        wait = min(self.config.max_age_s - age, _POLL_S)
                    else:
                        wait = _POLL_S
                    self._cond.wait(wait)
                batch = self._sealed.popleft()
            self.stats.flushed(batch.trigger)
            try:
                encoded = self._encode(batch)
            except Exception:  # never let a bug kill the flusher
                log.exception(
                    "encoding batch %d failed; %d records dropped", batch.seq, len(batch.items)
                )
                self.stats.drop("encode_error", len(batch.items))
                self._finish(batch)
                continue
            if self.spool is not None and self._should_spill():
                self._spill(batch, encoded)
            else:
                self._uploads.submit(self._deliver, batch, encoded)

    def _spill(self, batch: _Batch, encoded: list[_Encoded]) -> None:
        """Straight to the spool, from the flusher: a sink that stops answering
        (a blackholed S3 waits out every timeout) can hold all the upload
        threads, and batches queued behind them would fill memory."""
        try:
            for obj in encoded:
                self.stats.flushed("spill")
                self._to_spool(obj)
        finally:
            self._finish(batch)

    def _encode(self, batch: _Batch) -> list[_Encoded]:
        """One gzip JSONL object per (kind, model) of the batch's records.

        Capture records go under ``{model}/``; ground-truth labels
        (``kind: "ground_truth"``, see ``capture.labels``) under
        ``ground_truth/{model}/``. Any other ``kind`` is an ordinary record.
        With an ``offload`` (``capture.offload``) the records are built in a
        helper process; when it declines or fails, here.
        """
        groups = self.offload(batch.items) if self.offload is not None else None
        if groups is None:
            groups, failed = encode_items(
                batch.items, self.process, self.config.gzip_level, self.namer.model
            )
            if failed:
                self.stats.drop("encode_error", failed)
        out: list[_Encoded] = []
        for (kind, model), (data, count) in groups.items():
            try:
                key = self.namer.key(batch.first_time, model=model, kind=kind)
            except ConfigError:
                log.warning(
                    "unsafe model name or kind in records; written under %r", self.namer.model
                )
                key = self.namer.key(batch.first_time)
            out.append(_Encoded(key, data, count))
        return out

    # -- background: delivery -----------------------------------------------

    def _finish(self, batch: _Batch) -> None:
        with self._cond:
            self._pending_bytes -= batch.nbytes
            self._pending_records -= len(batch.items)
            self._outstanding.discard(batch.seq)
            self._cond.notify_all()

    def _deliver(self, batch: _Batch, encoded: list[_Encoded]) -> None:
        try:
            for obj in encoded:
                self._deliver_one(obj)
        except Exception:
            log.exception("unexpected error delivering batch %d", batch.seq)
            self.stats.drop("sink_rejected", sum(o.records for o in encoded))
        finally:
            self._finish(batch)

    @property
    def sink_down(self) -> bool:
        """True while the sink is taken to be down: batches go straight to the
        spool until a replay from it succeeds (set after that replay returns)."""
        return self._sink_down

    def over_half(self) -> bool:
        """More than half the memory cap held: spill to the spool, or (the
        capturer's helper process) build records here too."""
        return self._pending_bytes > self.config.max_buffer_bytes // 2

    def _should_spill(self) -> bool:
        return self._sink_down or self.over_half()

    def _deliver_one(self, obj: _Encoded) -> None:
        cfg = self.config
        if self.spool is not None and self._should_spill():
            self.stats.flushed("spill")
            self._to_spool(obj)
            return
        attempt = 0
        while True:
            try:
                self.sink.put(obj.key, obj.data)
            except SinkError as exc:
                err: SinkError = exc
            except Exception as exc:  # a sink that does not translate its errors
                err = SinkError(f"{type(exc).__name__}: {exc}")
            else:
                if self._failing:
                    self._failing = False
                    log.warning("sink %s is taking uploads again", self.sink.describe())
                self._sink_down = False
                self.stats.add("records_written", obj.records)
                self.stats.add("batches_written")
                self.stats.add("bytes_written", len(obj.data))
                return
            attempt += 1
            self.stats.add("upload_failures")
            if self._failing:  # one warning per outage, not one per attempt
                log.debug("upload of %s failed (attempt %d): %s", obj.key, attempt, err)
            else:
                self._failing = True
                log.warning("upload of %s failed, retrying with backoff: %s", obj.key, err)
            give_up = not err.retryable or self.clock.monotonic() >= self._deadline
            if self.spool is not None and (give_up or attempt >= cfg.attempts_before_spool):
                self._sink_down = self._sink_down or err.retryable
                self._to_spool(obj)
                return
            if give_up:
                self.stats.drop("sink_rejected" if not err.retryable else "shutdown", obj.records)
                return
            self.stats.add("upload_retries")
            delay = min(cfg.retry_max_s, cfg.retry_initial_s * 2 ** (attempt - 1))
            delay *= random.uniform(0.8, 1.2)
            if self._closing:  # close() set _stop, so wait() would not sleep
                time.sleep(max(0.0, min(delay, self._deadline - self.clock.monotonic())))
            else:
                self._stop.wait(delay)

    def _to_spool(self, obj: _Encoded) -> None:
        from capture.spool import SpoolFullError

        assert self.spool is not None
        try:
            self.spool.write(obj.key, obj.data, obj.records)
        except SpoolFullError:
            log.error("spool full; %d records dropped", obj.records)
            self.stats.drop("spool_full", obj.records)
        except SpoolError as exc:
            log.error("spool write failed (%s); %d records dropped", exc, obj.records)
            self.stats.drop("spool_error", obj.records)

    def _replay_loop(self) -> None:
        assert self.spool is not None
        interval = self.config.replay_interval_s
        while True:
            if not self.spool.is_empty():
                result = self.spool.replay(self.sink)
                self._sink_down = result.error is not None
                if result.error:
                    log.info("spool replay paused: %s", result.error)
            if self._stop.wait(interval):
                return
