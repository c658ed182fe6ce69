"""Publishing against real HTTP servers on loopback: a recording Pushgateway
stand-in and a recording webhook receiver (no mocks)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from monitor_job.publish import (
    KNOWN_CHECKS,
    MAX_WEBHOOK_VIOLATIONS,
    PublishError,
    post_webhook,
    push_metrics,
)
from tests.servers import free_port, threaded_http_server


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    url: str
    requests: list[Received] = field(default_factory=list)


def _recording_handler(requests: list[Received], status: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _record(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n)
            requests.append(Received(self.command, self.path, dict(self.headers.items()), body))
            answer = b"ok" if status < 300 else b"boom: server says no"
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        do_PUT = do_POST = _record

        def log_message(self, format: str, *args: Any) -> None:  # quiet test output
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[Callable[[int], Recorder]]:
    """A factory: ``server(status)`` starts a recording server answering ``status``."""
    import contextlib

    with contextlib.ExitStack() as stack:

        def start(status: int = 200) -> Recorder:
            requests: list[Received] = []
            url = stack.enter_context(threaded_http_server(_recording_handler(requests, status)))
            return Recorder(url, requests)

        yield start


SUMMARY: dict[str, Any] = {
    "model": "ranker",
    "window_start": "2026-01-01T10:00:00+00:00",
    "window_end": "2026-01-01T11:00:00+00:00",
    "rows": 12345,
    "baseline_rows": 100000,
    "records": 4000,
    "objects": 7,
    "bad_lines": 2,
    "status": "violations",
    "generated_at": "2026-01-01T11:05:00+00:00",
}
VIOLATIONS: list[dict[str, Any]] = [
    {
        "feature_name": "price",
        "constraint_check_type": "baseline_drift_check",
        "description": "KS distance 0.312 from the baseline exceeds 0.1",
    },
    {
        "feature_name": "lookups.user_ltv",
        "constraint_check_type": "baseline_drift_check",
        "description": "KS distance 0.2",
    },
    {
        "feature_name": "country",
        "constraint_check_type": "categorical_values_check",
        "description": "12% outside the domain",
    },
]
COLUMNS: list[dict[str, Any]] = [
    {
        "name": "price",
        "baseline_name": "price",
        "kind": "numeric",
        "origin": "features",
        "drift": {"ks": 0.312, "psi": 0.4, "js": 0.25, "threshold": 0.1, "noise_floor": 0.02},
        "previous_drift": {"ks": 0.05, "psi": 0.01, "js": 0.03, "threshold": 0.1},
    },
    {
        "name": "country",
        "baseline_name": "country",
        "kind": "categorical",
        "origin": "features",
        "drift": {"linf": 0.07, "unseen_share": 0.12, "threshold": 0.1, "noise_floor": None},
        "previous_drift": None,
    },
    {
        "name": "gone",
        "baseline_name": "gone",
        "kind": "missing",
        "origin": "features",
        "drift": None,
        "previous_drift": None,
    },
]


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_push_metrics_body_and_path(server: Callable[[int], Recorder]) -> None:
    gw = server(200)
    push_metrics(
        gw.url,
        job="modeltap_monitor",
        model="ranker",
        summary=SUMMARY,
        columns=COLUMNS,
        violations=VIOLATIONS,
    )
    assert len(gw.requests) == 1
    req = gw.requests[0]
    assert req.method == "PUT"
    assert req.path == "/metrics/job/modeltap_monitor/model/ranker"
    s = _samples(req.body)

    def val(name: str, **labels: str) -> float | None:
        return s.get((name, tuple(sorted({"model": "ranker", **labels}.items()))))

    assert val("modeltap_monitor_rows") == 12345
    assert val("modeltap_monitor_status") == 1
    assert val("modeltap_monitor_drift", feature="price", metric="ks") == pytest.approx(0.312)
    assert val("modeltap_monitor_drift", feature="price", metric="psi") == pytest.approx(0.4)
    assert val("modeltap_monitor_drift", feature="country", metric="linf") == pytest.approx(0.07)
    assert val("modeltap_monitor_unseen_share", feature="country") == pytest.approx(0.12)
    prev = val("modeltap_monitor_previous_drift", feature="price", metric="ks")
    assert prev == pytest.approx(0.05)
    assert val("modeltap_monitor_drift_threshold", feature="price") == pytest.approx(0.1)
    # no figure for a missing column, and none for metrics a column lacks
    assert not any(dict(labels).get("feature") == "gone" for _, labels in s)
    assert val("modeltap_monitor_drift", feature="country", metric="ks") is None
    assert val("modeltap_monitor_violations", check="baseline_drift_check") == 2
    assert val("modeltap_monitor_violations", check="categorical_values_check") == 1
    others = set(KNOWN_CHECKS) - {"baseline_drift_check", "categorical_values_check"}
    assert all(val("modeltap_monitor_violations", check=c) == 0 for c in others)
    run = s[("modeltap_monitor_last_run_timestamp_seconds", ())]
    ok = s[("modeltap_monitor_last_success_timestamp_seconds", ())]
    assert run == ok and run > 1.7e9


def test_push_clean_run_extra_grouping_and_odd_names(server: Callable[[int], Recorder]) -> None:
    gw = server(202)
    cols = [{**COLUMNS[0], "name": 'we"ird\nname/x'}]
    push_metrics(
        gw.url + "/",
        job="nightly",
        model="m/1",
        summary={**SUMMARY, "status": "clean"},
        columns=cols,
        violations=[],
        grouping={"env": "prod"},
    )
    req = gw.requests[0]
    # '/' in a grouping value goes base64 (the Pushgateway's rule); extra labels sorted after
    enc = base64.urlsafe_b64encode(b"m/1").decode()
    assert req.path == f"/metrics/job/nightly/env/prod/model@base64/{enc}"
    s = _samples(req.body)
    m = (("model", "m/1"),)
    assert s[("modeltap_monitor_status", m)] == 0
    key = ("modeltap_monitor_drift", (("feature", 'we"ird\nname/x'), ("metric", "ks"), *m))
    assert s[key] == pytest.approx(0.312)
    assert sum(v for (n, _), v in s.items() if n == "modeltap_monitor_violations") == 0


def test_push_failed_run_keeps_last_success(server: Callable[[int], Recorder]) -> None:
    gw = server(200)
    push_metrics(
        gw.url,
        job="j",
        model="ranker",
        summary={"status": "error"},
        columns=COLUMNS,
        violations=[],
    )
    req = gw.requests[0]
    assert req.method == "POST"  # replaces only the metrics pushed: last success stays
    names = {n for n, _ in _samples(req.body)}
    assert names == {"modeltap_monitor_last_run_timestamp_seconds", "modeltap_monitor_status"}
    assert _samples(req.body)[("modeltap_monitor_status", (("model", "ranker"),))] == 2


def test_push_basic_auth_from_url(server: Callable[[int], Recorder]) -> None:
    gw = server(200)
    url = gw.url.replace("http://", "http://alice:s%3Acret@")
    push_metrics(url, job="j", model="m", summary=SUMMARY, columns=[], violations=[])
    auth = gw.requests[0].headers["Authorization"]
    assert base64.b64decode(auth.removeprefix("Basic ")) == b"alice:s:cret"


def test_push_server_error_raises(server: Callable[[int], Recorder]) -> None:
    gw = server(500)
    url = gw.url.replace("http://", "http://alice:hunter2@")
    with pytest.raises(PublishError) as exc:
        push_metrics(url, job="j", model="m", summary=SUMMARY, columns=[], violations=[])
    msg = str(exc.value)
    assert gw.url in msg and "500" in msg
    assert "hunter2" not in msg and "alice" not in msg
    assert len(gw.requests) == 1


def test_push_closed_port_names_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PublishError) as exc:
        push_metrics(url, job="j", model="m", summary=SUMMARY, columns=[], violations=[], timeout=5)
    assert url in str(exc.value)


def test_push_bad_arguments() -> None:
    with pytest.raises(ValueError, match="grouping"):
        push_metrics(
            "http://127.0.0.1:1",
            job="j",
            model="m",
            summary=SUMMARY,
            columns=[],
            violations=[],
            grouping={"model": "x"},
        )
    with pytest.raises(PublishError, match="not an http"):
        push_metrics(
            "ftp://127.0.0.1:1/x", job="j", model="m", summary=SUMMARY, columns=[], violations=[]
        )


def test_webhook_payload(server: Callable[[int], Recorder]) -> None:
    hook = server(200)
    post_webhook(
        hook.url + "/hooks/abc",
        summary=SUMMARY,
        violations=VIOLATIONS,
        report_location="s3://bucket/monitor/report.html",
    )
    req = hook.requests[0]
    assert req.method == "POST" and req.path == "/hooks/abc"
    assert req.headers["Content-Type"] == "application/json"
    doc = json.loads(req.body)
    assert "3 violation(s)" in doc["text"] and "ranker" in doc["text"]
    blocks = doc["blocks"]
    assert blocks[0]["type"] == "header"
    texts = json.dumps(blocks)
    for v in VIOLATIONS:
        assert v["feature_name"] in texts
        assert v["constraint_check_type"] in texts
        assert v["description"] in texts
    assert "s3://bucket/monitor/report.html" in blocks[-1]["elements"][0]["text"]
    fields = " ".join(f["text"] for f in blocks[1]["fields"])
    assert "12345" in fields and "2026-01-01T10:00:00+00:00" in fields


def test_webhook_escapes_user_strings_and_caps_violations(
    server: Callable[[int], Recorder],
) -> None:
    hook = server(200)
    many = [
        {
            "feature_name": f"<b>&f{i}`",
            "constraint_check_type": "baseline_drift_check",
            "description": "a <@channel> & <!here> > b",
        }
        for i in range(25)
    ]
    post_webhook(
        hook.url,
        summary={"model": "<m&>", "status": "violations"},
        violations=many,
        report_location="https://reports.example/r?a=1&b=<2>",
    )
    doc = json.loads(hook.requests[0].body)
    sections = [b for b in doc["blocks"] if b["type"] == "section"][1:]
    assert len(sections) == MAX_WEBHOOK_VIOLATIONS
    first = sections[0]["text"]["text"]
    assert "`&lt;b&gt;&amp;f0'`" in first
    assert "a &lt;@channel&gt; &amp; &lt;!here&gt; &gt; b" in first
    assert "<" not in first.replace("&lt;", "") and ">" not in first.replace("&gt;", "")
    assert "&lt;m&amp;&gt;" in doc["text"]
    tail = [e["text"] for b in doc["blocks"] if b["type"] == "context" for e in b["elements"]]
    assert any("5 more" in t for t in tail)
    assert "<https://reports.example/r?a=1&amp;b=&lt;2&gt;|open the report>" in tail[-1]


def test_webhook_non_2xx_raises(server: Callable[[int], Recorder]) -> None:
    hook = server(500)
    with pytest.raises(PublishError) as exc:
        post_webhook(
            hook.url + "/services/T0/B0/secret-token", summary=SUMMARY, violations=VIOLATIONS
        )
    msg = str(exc.value)
    assert "500" in msg and hook.url + "/services/…" in msg and "server says no" in msg
    assert "secret-token" not in msg


def test_webhook_closed_port_names_url() -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    with pytest.raises(PublishError) as exc:
        post_webhook(url, summary=SUMMARY, violations=VIOLATIONS, timeout=5)
    assert url in str(exc.value)


def test_push_model_quality(server: Callable[[int], Recorder]) -> None:
    gw = server(200)
    quality = {
        "task": "classification",
        "metrics": {"n": 400, "accuracy": 0.77, "roc_auc": 0.86, "log_loss": None, "invalid": 2},
        "holdout": {"accuracy": 0.9},
        "join": {"matched": 400, "unmatched": 3, "duplicates": 1, "labelled_share": 0.5},
        "bias": {"current_mean": 0.61, "baseline_mean": 0.5, "current_positive_rate": None},
    }
    push_metrics(
        gw.url,
        job="modeltap_monitor",
        model="churn",
        summary=SUMMARY,
        columns=[],
        violations=[],
        quality=quality,
    )
    s = _samples(gw.requests[0].body)

    def val(name: str, **labels: str) -> float | None:
        return s.get((name, tuple(sorted({"model": "churn", **labels}.items()))))

    task = {"task": "classification"}
    assert val("modeltap_monitor_model_quality", **task, metric="accuracy") == 0.77
    assert val("modeltap_monitor_model_quality", **task, metric="roc_auc") == 0.86
    assert val("modeltap_monitor_model_quality", **task, metric="log_loss") is None
    assert (
        val("modeltap_monitor_model_quality", **task, metric="n") is None
    )  # a count, not a metric
    assert val("modeltap_monitor_model_quality_holdout", metric="accuracy") == 0.9
    assert val("modeltap_monitor_labels", outcome="matched") == 400
    assert val("modeltap_monitor_labels", outcome="wrong_model") == 0
    assert val("modeltap_monitor_labelled_share") == 0.5
    assert val("modeltap_monitor_prediction_bias", figure="current_mean") == 0.61
    assert val("modeltap_monitor_prediction_bias", figure="current_positive_rate") is None
    assert val("modeltap_monitor_violations", check="model_quality_check") == 0
