"""Prometheus metrics of the proxy: requests, latencies, capture counters,
predictions; with one worker process or several.

One worker: ``CaptureCollector`` reads ``CaptureStats.snapshot()`` at scrape
time, so the request path never touches a Prometheus object for capture
counts, and gauges (buffer depth, spool size) are always current. Register it
on the registry the app owns (never the global default in tests):

    registry = CollectorRegistry()
    registry.register(CaptureCollector(capturer.stats, model="ranker"))

Several workers (prometheus_client multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``
set before ``prometheus_client`` is imported): every metric object writes its
values to per-pid mmap files in that directory, and ``multiprocess_registry``
serves the sum over all files, whichever worker answers the scrape. The
capture's counters live in ``CaptureStats``, not in Prometheus objects, so
``CapturePublisher`` copies them every second (and before each scrape of its
own worker) into Prometheus counters (by increments: the files of exited
workers keep their totals) and ``livesum`` gauges (summed over live workers
only; ``forget_dead_workers`` deletes a dead worker's gauge files as
``mark_process_dead`` does). Names, labels and types are the same in both
modes. The capture counters of other workers lag by at most
``PUBLISH_INTERVAL_S``; request counters and histograms never lag.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from math import isfinite
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from capture.errors import ConfigError
from capture.sinks import local_path
from capture.stats import CaptureStats

log = logging.getLogger(__name__)

NS = "modeltap_capture"

#: counter name in the snapshot -> (metric name without _total, help)
COUNTERS = {
    "offered": ("records_offered", "Exchanges offered to the capture"),
    "kept": ("records_kept", "Records kept by sampling (then written, spooled or dropped)"),
    "sampled_out": ("records_sampled_out", "Exchanges not kept by sampling"),
    "records_written": ("records_written", "Records written to the sink"),
    "batches_written": ("objects_written", "Objects written to the sink"),
    "bytes_written": ("bytes_written", "Compressed bytes written to the sink"),
    "upload_failures": ("upload_failures", "Failed upload attempts"),
    "upload_retries": ("upload_retries", "Upload retries (not drops)"),
    "spooled_records": ("spooled_records", "Records written to the disk spool"),
    "replayed_records": ("replayed_records", "Records replayed from the spool to the sink"),
    "parse_errors": ("parse_errors", "Records kept raw because no adapter understood them"),
    "redactions": ("redactions", "Values removed or hashed by redaction"),
    "profiled": ("profiled", "Exchanges added to full-traffic profiles"),
    "profile_dropped": ("profile_dropped", "Exchanges left out of full-traffic profiles"),
    "profiles_written": ("profiles_written", "Full-traffic profile objects written"),
    "profile_write_failures": ("profile_write_failures", "Failed profile write attempts"),
    "labels_accepted": ("labels_accepted", "Ground-truth labels accepted (then buffered)"),
    "labels_rejected": ("labels_rejected", "Ground-truth label entries refused as invalid"),
    "encoder_restarts": ("encoder_restarts", "Record-building helper processes replaced"),
    "encoder_fallbacks": ("encoder_fallbacks", "Batches built in process after a helper failed"),
    "encoder_assists": (
        "encoder_assists",
        "Batches built half here, half in the helper, because it fell behind",
    ),
}
GAUGES = {
    "buffer_records": ("buffer_records", "Records in memory (buffered or in flight)"),
    "buffer_bytes": ("buffer_bytes", "Bytes in memory (buffered or in flight)"),
    "spool_bytes": ("spool_bytes", "Bytes in the disk spool"),
    "spool_records": ("spool_records", "Records waiting in the disk spool"),
}


class CaptureCollector(Collector):
    """Turns a ``CaptureStats`` snapshot into metric families."""

    def __init__(self, stats: CaptureStats, *, model: str) -> None:
        self.stats = stats
        self.model = model

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: families are only known at collect time

    def collect(self) -> Iterator[Metric]:
        snap: dict[str, Any] = self.stats.snapshot()
        for key, (name, doc) in COUNTERS.items():
            c = CounterMetricFamily(f"{NS}_{name}", doc, labels=["model"])
            c.add_metric([self.model], snap.get(key, 0))
            yield c
        dropped = CounterMetricFamily(
            f"{NS}_records_dropped", "Records dropped, by reason", labels=["model", "reason"]
        )
        for reason, n in sorted(snap.get("dropped", {}).items()):
            dropped.add_metric([self.model, reason], n)
        yield dropped
        flushes = CounterMetricFamily(
            f"{NS}_flushes", "Batches closed, by trigger", labels=["model", "trigger"]
        )
        for trigger, n in sorted(snap.get("flushes", {}).items()):
            flushes.add_metric([self.model, trigger], n)
        yield flushes
        for key, (name, doc) in GAUGES.items():
            if key in snap:
                g = GaugeMetricFamily(f"{NS}_{name}", doc, labels=["model"])
                g.add_metric([self.model], snap[key])
                yield g


#: How often a worker copies its capture counters into the multiprocess files.
PUBLISH_INTERVAL_S = 1.0
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def multiprocess_dir() -> str:
    """The multiprocess directory; raises unless this process writes to it.

    prometheus_client picks its value class when first imported: a process
    that imported it before ``PROMETHEUS_MULTIPROC_DIR`` was set would count
    in memory only, and every scrape would miss its requests.
    """
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if not path or not os.path.isdir(path):
        raise ConfigError(
            "MODELTAP_WORKERS > 1 needs PROMETHEUS_MULTIPROC_DIR set to a directory "
            "(modeltap-proxy sets it for its workers)"
        )
    if not getattr(values.ValueClass, "_multiprocess", False):
        raise ConfigError(
            "prometheus_client was imported before PROMETHEUS_MULTIPROC_DIR was set; "
            "start workers through modeltap-proxy --workers N"
        )
    return path


def multiprocess_registry(path: str) -> CollectorRegistry:
    """A registry that serves the sum of every worker's files in ``path``."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


def forget_dead_workers(path: str) -> list[int]:
    """Delete the live-gauge files of processes that no longer exist.

    Counters and histograms of dead workers stay (totals are cumulative).
    """
    dead = []
    for name in os.listdir(path):
        m = _LIVE_GAUGE_FILE.match(name)
        if m and not _alive(int(m[1])):
            dead.append(int(m[1]))
    for pid in sorted(set(dead)):
        forget_worker(pid, path)
        log.info("removed the live gauges of exited worker %d", pid)
    return sorted(set(dead))


def forget_worker(pid: int, path: str) -> None:
    """``mark_process_dead``: a worker's live gauges stop counting."""
    with contextlib.suppress(FileNotFoundError):  # a sibling may clean up at the same time
        mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's: a recycled pid, not ours to judge
        return True
    return True


class CapturePublisher:
    """Copies one worker's ``CaptureStats`` into multiprocess metric files.

    Counters advance by the increase since the last publish, so the files
    hold this process's totals; gauges are ``livesum``. ``start`` publishes
    every ``interval_s`` on a daemon thread; ``stop`` publishes once more
    (after the capture closed, so final totals are kept) and ends it.
    """

    def __init__(
        self,
        stats: CaptureStats,
        *,
        model: str,
        registry: CollectorRegistry,
        interval_s: float = PUBLISH_INTERVAL_S,
    ) -> None:
        self.stats, self.model, self.interval_s = stats, model, interval_s
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: dict[tuple[str, str], float] = {}
        self._counters = {
            key: Counter(f"{NS}_{name}", doc, ["model"], registry=registry).labels(model)
            for key, (name, doc) in COUNTERS.items()
        }
        self._labeled = {
            "dropped": Counter(
                f"{NS}_records_dropped",
                "Records dropped, by reason",
                ["model", "reason"],
                registry=registry,
            ),
            "flushes": Counter(
                f"{NS}_flushes",
                "Batches closed, by trigger",
                ["model", "trigger"],
                registry=registry,
            ),
        }
        self._gauges = {
            key: Gauge(
                f"{NS}_{name}", doc, ["model"], registry=registry, multiprocess_mode="livesum"
            )
            for key, (name, doc) in GAUGES.items()
        }
        self.publish()

    def publish(self) -> None:
        """Bring the files up to date with the stats (any thread)."""
        with self._lock:
            snap: dict[str, Any] = self.stats.snapshot()
            for key, counter in self._counters.items():
                self._advance(counter, (key, ""), snap.get(key, 0))
            for kind, family in self._labeled.items():
                for label, n in snap.get(kind, {}).items():
                    self._advance(family.labels(self.model, label), (kind, label), n)
            for key, gauge in self._gauges.items():
                value = snap.get(key)
                if value is not None and value == value:  # absent or NaN: leave it
                    gauge.labels(self.model).set(value)

    def _advance(self, counter: Any, key: tuple[str, str], total: float) -> None:
        last = self._last.get(key)
        if last is None or total > last:  # inc(0) the first time: zero series show, as with one
            counter.inc(total - (last or 0))
            self._last[key] = total

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="modeltap-metrics", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.publish()
            except Exception:  # metrics must never take the worker down
                log.exception("publishing capture metrics failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.publish()


_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ProxyMetrics:
    """Request metrics of the proxy, on a registry the app owns."""

    def __init__(self, registry: CollectorRegistry, model: str) -> None:
        from prometheus_client import Histogram

        self.model = model
        self.requests = Counter(
            "modeltap_proxy_requests",
            "Requests proxied, by method and status",
            ["model", "method", "status"],
            registry=registry,
        )
        self.upstream = Histogram(
            "modeltap_proxy_upstream_seconds",
            "Time the model took (first byte to last)",
            ["model"],
            buckets=_BUCKETS,
            registry=registry,
        ).labels(model)
        self.total = Histogram(
            "modeltap_proxy_request_seconds",
            "Total time of the exchange through the proxy",
            ["model"],
            buckets=_BUCKETS,
            registry=registry,
        ).labels(model)
        self.overhead = Histogram(
            "modeltap_proxy_overhead_seconds",
            "Proxy time outside the upstream call",
            ["model"],
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
            registry=registry,
        ).labels(model)
        # (method, status) -> the counter's child: ``labels()`` costs ~2 µs a call
        # (label checks, a lock, a dict lookup); observe went from 6.2-6.6 µs
        # to 4.4 µs. As small as the set of children the counter holds anyway.
        self._request_children: dict[tuple[str, int], Any] = {}

    def observe(self, method: str, status: int, total: float, upstream: float | None) -> None:
        child = self._request_children.get((method, status))
        if child is None:
            child = self._request_child(method, status)
        child.inc()
        self.total.observe(total)
        if upstream is not None:
            self.upstream.observe(upstream)
            self.overhead.observe(max(0.0, total - upstream))

    def _request_child(self, method: str, status: int) -> Any:
        m = method if method in _METHODS else "OTHER"
        child = self.requests.labels(self.model, m, str(status))
        if m != "OTHER":  # unknown methods share one child but are not cached one by one
            self._request_children[(method, status)] = child
        return child


DEFAULT_PREDICTION_BUCKETS = (
    0.01,
    0.05,
    0.1,
    0.2,
    0.3,
    0.4,
    0.5,
    0.6,
    0.7,
    0.8,
    0.9,
    0.95,
    0.99,
    1.0,
    10.0,
    100.0,
    1000.0,
)


#: statistics.json feature -> the histogram whose buckets its quantiles give.
BASELINE_FEATURES = ("prediction", "score")
STATISTICS_FILE = "statistics.json"


def baseline_buckets(location: str) -> dict[str, tuple[float, ...]]:
    """Histogram buckets from a monitor baseline's ``statistics.json``.

    ``location``: a path or ``file://`` URL of the file, or of the directory
    ``modeltap-monitor baseline --out`` wrote it in. For each feature of
    ``BASELINE_FEATURES`` the file profiles as numeric, the buckets are its
    quantiles (``features[].modeltap.quantiles``, p01 to p99), sorted and
    without duplicates; a feature the file lacks (or holds no finite
    quantiles for) is absent from the result. Read as plain JSON: the proxy
    does not import the monitor. Raises ``ConfigError`` naming the file when
    it cannot be read or is not a statistics.json.
    """
    path = _local_path(location)
    if os.path.isdir(path):
        path = os.path.join(path, STATISTICS_FILE)
    where = f"MODELTAP_PREDICTION_BASELINE: {path}"
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:  # JSONDecodeError and bad UTF-8
        raise ConfigError(f"{where}: not valid JSON: {exc}") from None
    features = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(features, list):
        raise ConfigError(f"{where}: not a statistics.json (no 'features' list)")
    found: dict[str, tuple[float, ...]] = {}
    for feature in features:
        if not isinstance(feature, dict) or feature.get("name") not in BASELINE_FEATURES:
            continue
        extra = feature.get("modeltap")
        quantiles = extra.get("quantiles") if isinstance(extra, dict) else None
        if not isinstance(quantiles, dict):
            continue
        values = {v for v in map(_number, quantiles.values()) if v is not None}
        if values:
            found[str(feature["name"])] = tuple(sorted(values))
    return found


def _local_path(location: str) -> str:
    try:
        path = local_path(location)
    except ConfigError as exc:
        raise ConfigError(f"MODELTAP_PREDICTION_BASELINE: {exc}") from None
    if path is None:
        raise ConfigError(
            f"MODELTAP_PREDICTION_BASELINE={location!r} must be a local path or file:// URL"
        )
    return path


class PredictionMetrics:
    """Histograms of numeric predictions and ranking scores, per model and version.

    Fed once per batch with the counts of a ``PredictionTally`` that ran
    where the records were built (``Capturer(tally=..., on_tally=...)``):
    nothing is parsed on the request path, nor in this process when records
    are built in the capture's helper process.

    Buckets (``ProxySettings.buckets``): ``MODELTAP_PREDICTION_BUCKETS``
    (default ``DEFAULT_PREDICTION_BUCKETS``) for both histograms; with
    ``MODELTAP_PREDICTION_BASELINE``, the baseline's quantiles of its
    ``prediction`` feature for ``modeltap_prediction`` and of ``score`` for
    ``modeltap_ranking_score`` (``baseline_buckets``), so each bucket holds a
    known share of the training distribution (1%, 4%, 20%, 25%, 25%, 20%, 4%,
    1%) and a shift shows as a change in those shares.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        buckets: tuple[float, ...],
        score_buckets: tuple[float, ...] | None = None,
    ) -> None:
        from prometheus_client import Histogram

        self.prediction = Histogram(
            "modeltap_prediction",
            "Numeric predictions of captured rows",
            ["model", "version", "output"],
            buckets=buckets,
            registry=registry,
        )
        self.score = Histogram(
            "modeltap_ranking_score",
            "Scores of captured ranked items",
            ["model", "version"],
            buckets=buckets if score_buckets is None else score_buckets,
            registry=registry,
        )

        # Label values -> child, as in ProxyMetrics (a ranking record observes
        # one score per item: ``labels()`` per row was ~2 µs each).
        self._scores: dict[tuple[str, ...], Any] = {}
        self._predictions: dict[tuple[str, ...], Any] = {}

    def tally(self) -> PredictionTally:
        """The record observer to give the capturer (``Capturer(tally=...)``)."""
        return PredictionTally(self.prediction._upper_bounds, self.score._upper_bounds)

    def apply(self, summary: dict[tuple[str, tuple[str, ...]], tuple[float, list[int]]]) -> None:
        """Add a batch's ``PredictionTally`` summary to the histograms.

        prometheus_client has no bulk observe: this adds to each child's sum
        and (non-cumulative) bucket values, exactly what ``observe`` would
        have done value by value (a test compares the two expositions).
        """
        for (name, labels), (total, counts) in summary.items():
            histogram, children = (
                (self.score, self._scores)
                if name == "score"
                else (self.prediction, self._predictions)
            )
            child = children.get(labels)
            if child is None:
                child = children[labels] = histogram.labels(*labels)
            child._sum.inc(total)
            for bucket, n in zip(child._buckets, counts, strict=True):
                if n:
                    bucket.inc(n)


class PredictionTally:
    """Bucket counts of a batch's predictions and scores, per label set.

    Runs where records are built (the capture's helper process or its
    flusher thread, ``capture.offload.RecordTally``); ``take`` hands the
    counts to ``PredictionMetrics.apply`` in the proxy's process. Only kept
    (sampled) records are observed. Non-numeric predictions are skipped; a
    dict prediction contributes its numeric values under ``output=<key>``.
    """

    def __init__(self, prediction_bounds: list[float], score_bounds: list[float]) -> None:
        self.bounds = {"prediction": list(prediction_bounds), "score": list(score_bounds)}
        self._cells: dict[tuple[str, tuple[str, ...]], list[Any]] = {}

    def add(self, record: dict[str, Any]) -> None:
        rows = record.get("rows")
        if not rows:
            return
        model = record.get("model") or {}
        name, version = str(model.get("name")), str(model.get("version") or "")
        scores: list[Any] = []
        preds: list[Any] = []
        for row in rows:
            if "score" in row:
                scores.append(row["score"])
            pred = row.get("prediction")
            if isinstance(pred, dict):
                for key, v in pred.items():
                    self._count("prediction", (name, version, str(key)), (v,))
            elif pred is not None:
                preds.append(pred)
        # One cell lookup per record and histogram, not per row: a 100-item
        # ranking record has 200 values.
        if scores:
            self._count("score", (name, version), scores)
        if preds:
            self._count("prediction", (name, version, ""), preds)

    def _count(self, histogram: str, labels: tuple[str, ...], values: Sequence[Any]) -> None:
        cell = None
        for raw in values:
            if type(raw) is float:  # the usual case, without _number's checks
                if not isfinite(raw):
                    continue
                value = raw
            else:
                number = _number(raw)
                if number is None:
                    continue
                value = number
            if cell is None:
                key = (histogram, labels)
                cell = self._cells.get(key)
                if cell is None:
                    bounds = self.bounds[histogram]
                    cell = self._cells[key] = [0.0, [0] * len(bounds), bounds]
            cell[0] += value
            cell[1][bisect_left(cell[2], value)] += 1  # first bound >= value, as observe

    def take(self) -> dict[tuple[str, tuple[str, ...]], tuple[float, list[int]]]:
        cells, self._cells = self._cells, {}
        return {key: (total, counts) for key, (total, counts, _) in cells.items()}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if f == f and f not in (float("inf"), float("-inf")) else None
