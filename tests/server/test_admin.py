"""Admin routes under /_modeltap/ and the Prometheus output of a running proxy."""

import socket
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from server.app import READYZ_MAX_S, UPSTREAM_CHECK_TIMEOUT_S
from tests.server.conftest import run_proxy
from tests.servers import free_port
from tests.support import wait_for


def scrape(url):
    text = httpx.get(url + "/_modeltap/metrics").text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_healthz_and_readyz(proxy):
    assert httpx.get(proxy.url + "/_modeltap/healthz").json() == {"status": "ok"}
    r = httpx.get(proxy.url + "/_modeltap/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True
    assert r.json()["checks"]["sink"] == "writable" and r.json()["capture"] == "ok"


def test_readyz_reports_an_unreachable_upstream(tmp_path):
    with run_proxy(f"http://127.0.0.1:{free_port()}", tmp_path / "c") as p:
        r = httpx.get(p.url + "/_modeltap/readyz")
        assert httpx.get(p.url + "/_modeltap/healthz").status_code == 200
    assert r.status_code == 503 and r.json()["checks"]["upstream"].startswith("unreachable")


def test_readyz_answers_within_its_bound_when_the_model_hangs(tmp_path):
    # A listener that never accepts: the connection opens, no answer comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        with run_proxy(f"http://127.0.0.1:{silent.getsockname()[1]}", tmp_path / "c") as p:
            began = time.monotonic()
            r = httpx.get(p.url + "/_modeltap/readyz", timeout=30)
            took = time.monotonic() - began
    assert r.status_code == 503 and r.json()["checks"]["upstream"] == "unreachable: UpstreamTimeout"
    assert UPSTREAM_CHECK_TIMEOUT_S * 0.9 < took < READYZ_MAX_S


def test_readyz_stays_ready_when_only_the_capture_fails_unless_strict(model_url, tmp_path):
    sink = tmp_path / "c"
    with run_proxy(model_url, sink) as p:
        sink.rmdir()
        sink.write_text("the sink directory is gone")
        r = httpx.get(p.url + "/_modeltap/readyz")
        strict = httpx.get(p.url + "/_modeltap/readyz?strict=true")
    assert r.status_code == 200 and r.json()["ready"] is True
    assert r.json()["capture"] == "degraded"
    assert r.json()["checks"]["sink"].startswith("not writable")
    assert strict.status_code == 503 and strict.json()["ready"] is False


def test_flush_needs_the_token_and_is_refused_without_one(proxy, model_url, tmp_path):
    httpx.post(proxy.url + "/v1/models/toy:predict", json={"instances": [[1]]})
    url = proxy.url + "/_modeltap/flush"
    assert httpx.post(url).status_code == 401
    assert httpx.post(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = httpx.post(url, headers={"Authorization": "Bearer s3cret-token"})
    assert r.status_code == 200 and r.json() == {"flushed": True}
    assert list(proxy.sink.rglob("*.jsonl.gz"))
    with run_proxy(model_url, tmp_path / "other") as p:  # no token configured
        r = httpx.post(p.url + "/_modeltap/flush", headers={"Authorization": "Bearer x"})
    assert r.status_code == 403 and "MODELTAP_ADMIN_TOKEN" in r.json()["error"]


def test_admin_paths_never_reach_the_model(proxy):
    assert httpx.get(proxy.url + "/_modeltap/nothing").status_code == 404
    assert proxy.app.capturer.stats.get("offered") == 0


def test_metrics_count_requests_latency_and_capture(proxy):
    for _ in range(3):
        httpx.post(proxy.url + "/v1/models/toy:predict", json={"instances": [[1]]})
    httpx.get(proxy.url + "/status/503")
    proxy.app.capturer.flush(timeout=10)
    m = scrape(proxy.url)
    ok = (("method", "POST"), ("model", "toy"), ("status", "200"))
    assert m[("modeltap_proxy_requests_total", ok)] == 3
    bad = (("method", "GET"), ("model", "toy"), ("status", "503"))
    assert m[("modeltap_proxy_requests_total", bad)] == 1
    assert m[("modeltap_proxy_upstream_seconds_count", (("model", "toy"),))] == 4
    assert m[("modeltap_proxy_overhead_seconds_count", (("model", "toy"),))] == 4
    assert m[("modeltap_capture_records_written_total", (("model", "toy"),))] == 4
    assert m[("modeltap_capture_buffer_records", (("model", "toy"),))] == 0


def test_prediction_and_score_histograms(model_url, tmp_path):
    with run_proxy(model_url, tmp_path / "c", prediction_buckets=("0.25", "0.5", "0.75", "1")) as p:
        httpx.post(p.url + "/v1/models/toy:predict", json={"instances": [[-5.0], [0.0], [5.0]]})
        httpx.post(p.url + "/rank", json={"user_id": "u1", "items": [{"id": i} for i in "abcd"]})
        assert wait_for(lambda: p.app.capturer.stats.get("offered") == 2)
        p.app.capturer.flush(timeout=10)
        m = scrape(p.url)
    pred = (("model", "toy"), ("output", ""), ("version", "1"))
    assert m[("modeltap_prediction_count", pred)] == 3
    # sigmoid(-5)=0.0067, sigmoid(0)=0.5, sigmoid(5)=0.9933
    assert m[("modeltap_prediction_bucket", (("le", "0.25"), *pred))] == 1
    assert m[("modeltap_prediction_bucket", (("le", "0.5"), *pred))] == 2
    score = (("model", "toy"), ("version", ""))
    assert m[("modeltap_ranking_score_count", score)] == 4


def test_bad_prediction_buckets_are_refused():
    import pytest

    from capture.errors import ConfigError
    from server.settings import ProxySettings

    for bad in (("a",), ("1", "0.5"), ("1", "1")):
        with pytest.raises(ConfigError, match="MODELTAP_PREDICTION_BUCKETS"):
            ProxySettings(upstream_url="http://127.0.0.1:1", prediction_buckets=bad)
