"""The dashboard and the alert rules ask only for metrics that exist: every
name in their PromQL is in a real proxy's ``/_modeltap/metrics`` (scraped by
``./dev stack`` after its traffic, prediction histograms on) or in what the
real monitor job pushed to a Pushgateway; rules pass ``promtool``."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.conftest import Pushgateway, StackRun
from tests.deploy.manifests import (
    DEPLOY,
    dashboard,
    dashboard_exprs,
    promql_metrics,
    rule_exprs,
)

#: Series Prometheus makes itself for every scrape target.
PROMETHEUS_SERIES = {"up"}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def exposed_names(text: str) -> set[str]:
    """Sample names of an exposition, plus those a family declares (a labelled
    counter with no child yet still says its name in HELP/TYPE)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {s.name for s in family.samples}
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
    return names


def test_promql_names_are_found_and_functions_labels_keywords_are_not() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{model=~"$model",x="y z"}'
        "[$__rate_interval]))) / ignoring(le) b_total > 0 and time() - c_seconds > 3 * 3600"
    )
    assert promql_metrics(expr) == {"a_bucket", "b_total", "c_seconds"}


def test_dashboard_and_rules_use_only_metrics_the_proxy_and_monitor_expose(
    stack_run: StackRun, pushgateway: Pushgateway
) -> None:
    proxy = exposed_names((stack_run.out / "proxy-metrics.txt").read_text())
    pushed = set().union(*(exposed_names(body) for _, _, body in pushgateway.pushes))
    assert "modeltap_prediction_bucket" in proxy and "modeltap_monitor_drift" in pushed
    for source, exprs in (("dashboard", dashboard_exprs()), ("rules.yml", rule_exprs())):
        used = set().union(*map(promql_metrics, exprs))
        assert len(used) >= 8, (source, used)
        unknown = used - proxy - pushed - PROMETHEUS_SERIES
        assert not unknown, f"{source} uses metrics nothing exposes: {sorted(unknown)}"


def test_dashboard_has_the_panels_the_issue_asks_for() -> None:
    doc = dashboard()
    uid = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]["uid"]
    panels = [p for p in doc["panels"] if p["type"] != "row"]
    assert all(p["datasource"]["uid"] == uid for p in panels)
    assert all(t["datasource"]["uid"] == uid for p in panels for t in p["targets"])
    by_metric = {}
    for p in panels:
        for t in p["targets"]:
            for name in promql_metrics(t["expr"]):
                by_metric.setdefault(name, set()).add(p["type"])
    for needed in (
        "modeltap_proxy_requests_total",
        "modeltap_proxy_request_seconds_bucket",
        "modeltap_proxy_upstream_seconds_bucket",
        "modeltap_proxy_overhead_seconds_bucket",
        "modeltap_capture_buffer_records",
        "modeltap_capture_flushes_total",
        "modeltap_capture_records_dropped_total",
        "modeltap_capture_spool_bytes",
        "modeltap_monitor_drift",
        "modeltap_monitor_violations",
    ):
        assert needed in by_metric, needed
    assert by_metric["modeltap_prediction_bucket"] == {"timeseries", "heatmap"}
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))


def test_every_alert_says_what_is_wrong() -> None:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    rules = [r for g in doc["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {
        "ModeltapCaptureDropping",
        "ModeltapUploadsFailing",
        "ModeltapSpoolGrowing",
        "ModeltapDriftViolations",
    }
    assert all(r["annotations"]["summary"] and r["labels"]["severity"] for r in rules)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool absent (Debian: prometheus)")
def test_promtool_accepts_the_config_and_rules() -> None:
    for args in (
        ["check", "rules", str(DEPLOY / "prometheus" / "rules.yml")],
        ["check", "config", "--syntax-only", str(DEPLOY / "prometheus" / "prometheus.yml")],
    ):
        done = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
