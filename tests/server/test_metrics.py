import json

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from capture.capturer import Capturer
from capture.errors import ConfigError
from server.metrics import DEFAULT_PREDICTION_BUCKETS, CaptureCollector
from server.settings import ProxySettings, parse_args
from tests.capture.test_capturer import ex
from tests.server.conftest import run_proxy
from tests.support import GatedSink, wait_for


def scrape(registry):
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_capture_counters_scraped_from_a_fresh_registry(tmp_path):
    sink = GatedSink(tmp_path)
    cap = Capturer(
        sink=sink, model="ranker", sample_rate=0.5, buffer_max_bytes=2048, flush_max_bytes=1024
    )
    registry = CollectorRegistry()
    registry.register(CaptureCollector(cap.stats, model="ranker"))
    sink.gate.clear()  # hold uploads so the buffer fills and depth is visible
    for i in range(400):
        cap.submit(ex(i))
    m = scrape(registry)
    lbl = (("model", "ranker"),)
    assert m[("modeltap_capture_records_offered_total", lbl)] == 400
    kept = m[("modeltap_capture_records_kept_total", lbl)]
    assert kept + m[("modeltap_capture_records_sampled_out_total", lbl)] == 400
    full = m[
        ("modeltap_capture_records_dropped_total", (("model", "ranker"), ("reason", "buffer_full")))
    ]
    assert full > 0
    assert m[("modeltap_capture_buffer_bytes", lbl)] > 0
    sink.gate.set()
    cap.close()
    m = scrape(registry)
    assert m[("modeltap_capture_buffer_bytes", lbl)] == 0
    assert m[("modeltap_capture_records_written_total", lbl)] == kept - full
    flushes = {k[1]: v for k, v in m.items() if k[0] == "modeltap_capture_flushes_total"}
    assert sum(flushes.values()) >= 1


def _baseline(tmp_path, columns="x,prediction", rows=200):
    """A real baseline (``modeltap-monitor baseline``) of a small training CSV."""
    import math

    from monitor_job.cli import main as monitor

    csv = tmp_path / "train.csv"
    lines = [columns]
    for i in range(rows):
        x = (i - rows / 2) / 20
        lines.append(f"{x:.3f},{1 / (1 + math.exp(-x)):.6f}")
    csv.write_text("\n".join(lines) + "\n")
    out = tmp_path / "baseline"
    assert monitor(["baseline", "--data", str(csv), "--out", str(out)]) == 0
    return out


def _quantiles(statistics, feature):
    doc = json.loads(statistics.read_text())
    (entry,) = [f for f in doc["features"] if f["name"] == feature]
    return sorted(set(entry["modeltap"]["quantiles"].values()))


def _le(text, family_name):
    """The finite ``le`` bounds of a histogram family, in order."""
    for family in text_string_to_metric_families(text):
        if family.name == family_name:
            les = {s.labels["le"] for s in family.samples if s.name.endswith("_bucket")}
            return sorted(float(le) for le in les if le != "+Inf")
    raise AssertionError(f"{family_name} not scraped")


def test_prediction_histogram_buckets_are_the_baselines_quantiles(model_url, tmp_path, caplog):
    statistics = _baseline(tmp_path) / "statistics.json"
    quantiles = _quantiles(statistics, "prediction")
    assert len(quantiles) == 7
    with run_proxy(
        model_url,
        tmp_path / "captures",
        prediction_baseline=statistics.as_uri(),
        prediction_buckets=("0.5", "1"),
    ) as p:
        r = httpx.post(p.url + "/v1/models/toy:predict", json={"instances": [[-1.0], [2.0]]})
        assert r.status_code == 200
        httpx.post(p.url + "/rank", json={"user_id": "u1", "items": [{"id": i} for i in "ab"]})
        assert wait_for(lambda: p.app.capturer.stats.get("offered") == 2)
        assert p.app.capturer.flush(timeout=10)
        text = httpx.get(p.url + "/_modeltap/metrics").text
    assert _le(text, "modeltap_prediction") == quantiles
    # The baseline has no score feature: the configured buckets, and a warning saying so.
    assert _le(text, "modeltap_ranking_score") == [0.5, 1.0]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("'score'" in m and "MODELTAP_PREDICTION_BUCKETS" in m for m in warned)


def test_prediction_baseline_as_a_path_or_directory_and_score_quantiles(tmp_path):
    out = _baseline(tmp_path, columns="x,score")
    quantiles = _quantiles(out / "statistics.json", "score")
    for location in (str(out), str(out / "statistics.json")):
        s = ProxySettings(upstream_url="http://127.0.0.1:1", prediction_baseline=location)
        assert list(s.buckets("score")) == quantiles
        assert s.buckets("prediction") == DEFAULT_PREDICTION_BUCKETS
    flags = ["--upstream-url", "http://127.0.0.1:1", "--prediction-baseline", str(out)]
    assert list(parse_args(flags, environ={}).buckets("score")) == quantiles


def test_bad_prediction_baseline_names_the_file(tmp_path):
    cases = {
        "missing.json": (None, "cannot read"),
        "broken.json": ("{not json", "not valid JSON"),
        "other.json": ('{"violations": []}', "not a statistics.json"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_text(content)
        with pytest.raises(ConfigError) as info:
            ProxySettings(upstream_url="http://127.0.0.1:1", prediction_baseline=str(path))
        assert str(path) in str(info.value) and message in str(info.value)
        assert "MODELTAP_PREDICTION_BASELINE" in str(info.value)
    with pytest.raises(ConfigError, match="local path or file:// URL"):
        ProxySettings(upstream_url="http://127.0.0.1:1", prediction_baseline="s3://b/stats.json")


def test_request_counter_children_are_cached_without_changing_the_output():
    from server.metrics import ProxyMetrics

    registry = CollectorRegistry()
    metrics = ProxyMetrics(registry, "toy")
    for method, status in [("POST", 200)] * 3 + [("GET", 503), ("PURGE", 200), ("BREW", 200)]:
        metrics.observe(method, status, 0.002, 0.001)
    metrics.observe("POST", 502, 0.002, None)  # no upstream time: upstream and overhead skip it
    m = scrape(registry)

    def count(method, status):
        labels = (("method", method), ("model", "toy"), ("status", status))
        return m[("modeltap_proxy_requests_total", labels)]

    assert (count("POST", "200"), count("GET", "503"), count("OTHER", "200")) == (3, 1, 2)
    assert count("POST", "502") == 1
    toy = (("model", "toy"),)
    assert m[("modeltap_proxy_request_seconds_count", toy)] == 7
    assert m[("modeltap_proxy_upstream_seconds_count", toy)] == 6
    assert m[("modeltap_proxy_overhead_seconds_count", toy)] == 6
    assert set(metrics._request_children) == {("POST", 200), ("GET", 503), ("POST", 502)}
