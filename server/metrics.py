"""Prometheus exposition of the capture counters.

``CaptureCollector`` reads ``CaptureStats.snapshot()`` at scrape time, so the
request path never touches a Prometheus object for capture counts, and gauges
(buffer depth, spool size) are always current. Register it on the registry
the app owns (never the global default in tests):

    registry = CollectorRegistry()
    registry.register(CaptureCollector(capturer.stats, model="ranker"))
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from capture.stats import CaptureStats

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


_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class ProxyMetrics:
    """Request metrics of the proxy, on a registry the app owns."""

    def __init__(self, registry: CollectorRegistry, model: str) -> None:
        from prometheus_client import Counter, Histogram

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

    def observe(self, method: str, status: int, total: float, upstream: float | None) -> None:
        m = method if method in _METHODS else "OTHER"
        self.requests.labels(self.model, m, str(status)).inc()
        self.total.observe(total)
        if upstream is not None:
            self.upstream.observe(upstream)
            self.overhead.observe(max(0.0, total - upstream))


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


class PredictionMetrics:
    """Histograms of numeric predictions and ranking scores, per model and version.

    Fed from the capture's background thread (``Capturer(on_record=...)``)
    once a record's rows are extracted: nothing is parsed on the request path.
    Only kept (sampled) records are observed. Non-numeric predictions are
    skipped; a dict prediction contributes its numeric values under
    ``output=<key>``.
    """

    def __init__(self, registry: CollectorRegistry, buckets: tuple[float, ...]) -> None:
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
            buckets=buckets,
            registry=registry,
        )

    def observe_record(self, record: dict[str, Any]) -> None:
        model = record.get("model") or {}
        name, version = str(model.get("name")), str(model.get("version") or "")
        for row in record.get("rows") or ():
            if "score" in row:
                value = _number(row["score"])
                if value is not None:
                    self.score.labels(name, version).observe(value)
            pred = row.get("prediction")
            if isinstance(pred, dict):
                for key, v in pred.items():
                    value = _number(v)
                    if value is not None:
                        self.prediction.labels(name, version, str(key)).observe(value)
            else:
                value = _number(pred)
                if value is not None:
                    self.prediction.labels(name, version, "").observe(value)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    f = float(value)
    return f if f == f and f not in (float("inf"), float("-inf")) else None
