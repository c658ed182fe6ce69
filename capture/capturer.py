"""``Capturer``: the one object model code and the proxy hold.

It owns the sink, the optional disk spool, the sampler and the buffer, and
turns queued items into records in the background (``_process``): an
``Exchange`` from the proxy becomes a v1 record (payload adapters fill its
tabular part), a dict is taken as an already-built record; both are then
redacted. Nothing it does on ``submit`` can raise into the caller.

    cap = Capturer.from_env()          # or Capturer(sink="./captures", model="ranker")
    cap.submit(exchange)               # request path: sample + append, O(1)
    cap.close()                        # flush (or spool) and stop; also `with Capturer(...)`
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

from capture.buffer import CaptureBuffer, encode_items
from capture.clock import SystemClock
from capture.decorator import Call, call_record, decorate
from capture.errors import ConfigError
from capture.keys import KeyNamer
from capture.labels import LABEL_KIND, LabelBatch, parse_labels
from capture.offload import merge_groups, pack_one, unpack_one
from capture.record import build_record, parse_time
from capture.settings import CaptureSettings
from capture.sinks import sink_from_url
from capture.stats import CaptureStats
from capture.types import Clock, Exchange, Kept, Sink

if TYPE_CHECKING:
    from capture.offload import EncoderProcess, Groups, RecordTally
    from capture.traffic import TrafficProfiles

log = logging.getLogger(__name__)

_LABEL_BYTES = 400  # in-memory size of a label record, for the buffer's byte cap


#: Fills ``context``/``lookups``/``rows``/``parse`` of a freshly built record
#: from the parsed bodies: ``extract(record, request_json, response_json, exchange)``.
Extractor = Callable[[dict[str, Any], Any, Any, Exchange], None]


class RecordBuilder:
    """A queued exchange (or an already-built record) to its redacted record:
    the part of the capture that also runs in the helper process
    (``capture.offload``), so both build exactly the same records."""

    #: The counters building adds to (the helper sends them back per batch).
    COUNTERS: ClassVar[tuple[str, ...]] = ("parse_errors", "redactions")

    def __init__(
        self,
        settings: CaptureSettings,
        *,
        stats: CaptureStats,
        extract: Extractor | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.stats = stats
        self.clock: Clock = clock or SystemClock()
        self.sample_rate = settings.sample_rate
        self.record_config = settings.record_config()
        self.redactor = settings.redactor()
        self.extract: Extractor | None = extract if extract is not None else settings.extractor()

    def build(self, item: Any, *, count: bool) -> tuple[dict[str, Any], float]:
        """The record and its time (epoch s); ``count``: add parse errors and
        redactions to the stats (kept records only; an exchange seen only by
        the traffic profile is not a record)."""
        if isinstance(item, (Exchange, Kept)):
            exchange, reason = (item, "sampled") if isinstance(item, Exchange) else item
            record, req_json, resp_json = build_record(
                exchange, self.record_config, sample_rate=self.sample_rate, reason=reason
            )
            if self.extract is not None:
                try:
                    self.extract(record, req_json, resp_json, exchange)
                except Exception as exc:  # keep the record, say why it has no rows
                    record["parse"] = {"adapter": None, "error": f"extractor failed: {exc!r}"[:500]}
            t = exchange.start
        else:
            record = item
            t = _record_time(record, self.clock)
        return self.finish(record, count=count), t

    def finish(self, record: dict[str, Any], *, count: bool) -> dict[str, Any]:
        """Count a parse error and apply redaction."""
        if count and isinstance(record.get("parse"), dict) and record["parse"].get("error"):
            self.stats.add("parse_errors")
        if self.redactor.active:
            n = self.redactor.apply(record)
            if count:
                self.stats.add("redactions", n)
        return record

    def process(self, item: Any) -> dict[str, Any] | None:
        """A kept item's record (labels pass through untouched)."""
        if type(item) is dict and item.get("kind") == LABEL_KIND:
            return item
        return self.build(item, count=True)[0]


class Capturer:
    """Capture facade built from ``CaptureSettings`` (or keyword overrides).

    ``tally``/``on_tally``: an observer of built records (``RecordTally``)
    that may run in the helper process, and the callback that receives its
    summary after each batch, in this process. ``on_record`` sees every
    record too but only where records are built here (``MODELTAP_ENCODER``
    ``thread``).
    """

    def __init__(
        self,
        settings: CaptureSettings | None = None,
        *,
        sink: Sink | str | None = None,
        extract: Extractor | None = None,
        on_record: Callable[[dict[str, Any]], None] | None = None,
        tally: RecordTally | None = None,
        on_tally: Callable[[Any], None] | None = None,
        clock: Clock | None = None,
        stats: CaptureStats | None = None,
        **overrides: Any,
    ) -> None:
        if isinstance(sink, str):
            overrides["sink"] = sink
        if settings is None:
            settings = CaptureSettings(**overrides)
        elif overrides:
            settings = dataclasses.replace(settings, **overrides)
        if settings.encoder == "process" and (
            extract is not None or on_record is not None or settings.profile_all
        ):
            raise ConfigError(
                "MODELTAP_ENCODER=process builds records in a helper process, which cannot "
                "run an extract= or on_record= hook of this process nor keep full-traffic "
                "profiles (MODELTAP_PROFILE_ALL); use tally= or MODELTAP_ENCODER=thread"
            )
        self.settings = settings
        self.stats = stats or CaptureStats()
        self.clock: Clock = clock or SystemClock()
        self.sampler = settings.sampler()
        self.builder = RecordBuilder(settings, stats=self.stats, extract=extract, clock=self.clock)
        self.record_config = self.builder.record_config
        self.redactor = self.builder.redactor
        self.extract = self.builder.extract
        self.on_record = on_record
        self.tally = tally
        self.on_tally = on_tally
        self.sink: Sink = (
            sink
            if sink is not None and not isinstance(sink, str)
            else sink_from_url(settings.sink, **_s3_options(settings))
        )
        self.spool = (
            _open_spool(
                Path(settings.spool_dir), max_bytes=settings.spool_max_bytes, stats=self.stats
            )
            if settings.spool_dir
            else None
        )
        self.traffic: TrafficProfiles | None = (
            _traffic_profiles(self.sink, settings, self._build_for_profile, self.clock, self.stats)
            if settings.profile_all
            else None
        )
        self.encoder = self._open_encoder()
        self.buffer = CaptureBuffer(
            self.sink,
            KeyNamer("", settings.model),
            config=settings.buffer_config(),
            offload=self._encode_batch,  # never declines: builds here when the helper cannot
            spool=self.spool,
            stats=self.stats,
            clock=self.clock,
        )

    def _open_encoder(self) -> EncoderProcess | None:
        """The helper process that builds records (``MODELTAP_ENCODER=process``)."""
        if self.settings.encoder != "process":
            return None
        from capture.offload import EncoderProcess

        encoder = EncoderProcess(
            self.settings, tally=self.tally, on_tally=self.on_tally, stats=self.stats
        )
        encoder.start()
        return encoder

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Capturer:
        return cls(CaptureSettings.from_env(environ, **overrides))

    # -- request path -------------------------------------------------------

    def sample_key(self, exchange: Exchange) -> str:
        header = self.sampler.header
        if header is not None:
            for name, value in exchange.request_headers:
                if name.lower() == header:
                    return value
        return exchange.event_id

    def submit(self, exchange: Exchange) -> bool:
        """Sample and queue one exchange; True when it was queued."""
        try:
            sampler = self.sampler
            reason = sampler.kept_anyway(  # before the hash: see capture.sampler
                status=exchange.status,
                latency_s=exchange.latency_s,
                error=exchange.error is not None,
            )
            if reason is None and (sampler.rate >= 1.0 or sampler.hit(self.sample_key(exchange))):
                reason = "sampled"
            self.stats.offered(kept=reason is not None)
            if reason is None:
                if self.traffic is not None:
                    self.traffic.offer(exchange, exchange.size_hint())
                return False
            item: Any = exchange if reason == "sampled" else Kept(exchange, reason)
            if self.encoder is not None:  # flat bytes until the helper builds it
                item = pack_one(item) or item
            if self.buffer.offer(item, exchange.size_hint()):
                return True
            if self.traffic is not None:  # dropped as a record, still part of the traffic
                self.traffic.offer(exchange, exchange.size_hint())
            return False
        except Exception:  # the request path must never see a capture error
            log.exception("capture submit failed")
            return False

    def offer_call(self, call: Call) -> bool:
        """Queue a finished decorated call (``capture.decorator``)."""
        try:
            self.stats.offered(kept=True)
            return self.buffer.offer(call, _call_size(call))
        except Exception:
            log.exception("capture offer failed")
            return False

    def capture(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        model: str | None = None,
        key: Callable[..., Any] | None = None,
    ) -> Any:
        """Decorator: ``@cap.capture`` or ``@cap.capture(model="ranker", key=...)``.

        See ``capture.decorator`` for what is recorded and what it costs.
        """
        if fn is None:
            return lambda f: decorate(self, f, model=model, key=key)
        return decorate(self, fn, model=model, key=key)

    def offer_record(self, record: dict[str, Any], nbytes: int) -> bool:
        """Queue an already-built (already-sampled) record."""
        try:
            self.stats.offered(kept=True)
            return self.buffer.offer(record, nbytes)
        except Exception:
            log.exception("capture offer failed")
            return False

    def ingest_labels(
        self, body: bytes, *, model: str | None = None, source: str = "api"
    ) -> LabelBatch:
        """Parse a posted batch of ground-truth labels and queue the valid ones.

        Labels are written through the same buffer, spool and sink as the
        records, under ``ground_truth/{model}/dt=…/hour=…/`` (see
        ``capture.labels``). Never raises on the body's content; the batch
        says what was accepted, rejected (and why) and dropped (buffer full).
        """
        batch = parse_labels(
            body, model=model or self.settings.model, now=self.clock.time(), source=source
        )
        self.stats.add("labels_rejected", batch.rejected)
        for record in batch.records:
            self.stats.offered(kept=True)
            if not self.buffer.offer(record, _LABEL_BYTES + len(str(record["label"]))):
                batch.dropped += 1
        self.stats.add("labels_accepted", len(batch.records))
        return batch

    # -- background ---------------------------------------------------------

    def profile_call(self, call: Call) -> None:
        """Add a sampled-out decorated call to the full-traffic profile (if on)."""
        if self.traffic is not None:
            try:
                self.traffic.offer(call, _call_size(call))
            except Exception:
                log.exception("capture offer to the traffic profile failed")

    # -- background ---------------------------------------------------------

    def _build(self, item: Any, *, count: bool) -> tuple[dict[str, Any], float]:
        """The redacted record of a queued item and its time (epoch s).

        ``count``: add parse errors and redactions to the stats (kept records
        only; an exchange seen only by the traffic profile is not a record).
        """
        if isinstance(item, Call):
            return self.builder.finish(call_record(item, self), count=count), item.start
        return self.builder.build(item, count=count)

    def _build_for_profile(self, item: Any) -> tuple[dict[str, Any], float]:
        return self._build(item, count=False)

    def _process(self, item: Any) -> dict[str, Any] | None:
        if type(item) is dict and item.get("kind") == LABEL_KIND:
            return item  # a label: no features to profile or redact
        record, t = self._build(item, count=True)
        if self.traffic is not None:
            self.traffic.add(record, t)
        if self.tally is not None:
            self.tally.add(record)
        if self.on_record is not None:
            try:
                self.on_record(record)
            except Exception:  # an observer must not cost the record
                log.exception("on_record hook failed")
        return record

    def _encode_batch(self, items: list[Any]) -> Groups:
        """The buffer's encoder: the helper process builds the batch when
        there is one; this flusher thread builds it when there is none or the
        helper fails. When the helper falls behind (the buffer over half
        full, where records would soon be dropped), both build, half the
        batch each: the request path then shares the interpreter with record
        building, as with ``MODELTAP_ENCODER=thread``, instead of losing
        records."""
        encoder = self.encoder
        if encoder is None:
            return self._encode_here(items)
        if len(items) > 1 and self.buffer.over_half():
            self.stats.add("encoder_assists")
            half = len(items) // 2
            box: list[Groups | None] = []
            helper = threading.Thread(
                target=lambda: box.append(encoder.encode(items[:half])),
                name="modeltap-encode-helper",
                daemon=True,
            )
            helper.start()
            here = self._encode_here([unpack_one(item) for item in items[half:]])
            helper.join()
            there = box[0] if box else None
            if there is None:
                there = self._encode_here([unpack_one(item) for item in items[:half]])
            return merge_groups(there, here)
        groups = encoder.encode(items)
        if groups is None:  # packed for a helper that failed: build them here
            groups = self._encode_here([unpack_one(item) for item in items])
        return groups

    def _encode_here(self, items: list[Any]) -> Groups:
        groups, failed = encode_items(
            items, self._process, self.settings.gzip_level, self.settings.model
        )
        if failed:
            self.stats.drop("encode_error", failed)
        if self.tally is not None and self.on_tally is not None:
            try:
                self.on_tally(self.tally.take())
            except Exception:  # an observer must not cost the batch
                log.exception("on_tally hook failed")
        return groups

    # -- control ------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        done = self.buffer.flush(timeout)
        if self.traffic is not None:
            done = self.traffic.flush(timeout) and done
        return done

    def check(self) -> None:
        """Raise ``SinkError`` unless the sink is writable (readiness)."""
        self.sink.check()

    def close(self, timeout: float | None = None) -> None:
        self.buffer.close(timeout)  # kept records reach the traffic profile first
        if self.encoder is not None:
            self.encoder.close()
        if self.traffic is not None:
            self.traffic.close(timeout)
        if self.spool is not None:
            self.spool.close()
        self.sink.close()

    def __enter__(self) -> Capturer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _s3_options(settings: CaptureSettings) -> dict[str, Any]:
    if not settings.sink.startswith("s3://"):
        return {}
    return {k: v for k, v in settings.s3_options().items() if v is not None}


def _traffic_profiles(
    sink: Sink, settings: CaptureSettings, build: Any, clock: Clock, stats: CaptureStats
) -> TrafficProfiles:
    from capture.traffic import TrafficProfiles  # loads datasketches: only when asked for

    return TrafficProfiles(
        sink,
        settings.model,
        build,
        max_age_s=settings.profile_max_age_s,
        max_queue_bytes=settings.profile_max_queue_bytes,
        clock=clock,
        stats=stats,
    )


def _record_time(record: dict[str, Any], clock: Clock) -> float:
    """A record's ``time`` as epoch seconds (the clock's now if unreadable)."""
    t = parse_time(record.get("time"))
    return clock.time() if t is None else t


def _open_spool(directory: Path, **options: Any) -> Any:
    from capture.spool import DiskSpool  # only processes that configure a spool load it

    return DiskSpool(directory, **options)


def _call_size(call: Call) -> int:
    """Rough in-memory size of a queued call, O(1): containers count 64 B an entry."""
    size = 1024
    for value in (*call.args, *call.kwargs.values(), call.result):
        if isinstance(value, (bytes, str)):
            size += len(value)
        elif hasattr(value, "nbytes"):
            size += int(value.nbytes)
        elif hasattr(value, "__len__"):
            with contextlib.suppress(Exception):
                size += 64 * len(value)
    return size
