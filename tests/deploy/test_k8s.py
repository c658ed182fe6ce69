"""The Kubernetes example: the proxy is a sidecar of the model with probes on
its admin routes, a grace period that covers preStop, drain and flush, real
settings only, the model's port as its upstream, and a monitor CronJob whose
command the monitor's own parser accepts."""

from __future__ import annotations

import shlex
from typing import Any

from monitor_job.cli import build_parser
from server.app import READYZ_MAX_S
from server.settings import ProxySettings
from tests.deploy.manifests import command, compose, k8s_docs, setting_names


def _kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in k8s_docs() if d["kind"] == kind]


def _settings_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for doc in _kind("ConfigMap"):
        env.update(doc["data"])
    for doc in _kind("Secret"):
        env.update(doc.get("stringData", {}))
    return env


def _containers() -> dict[str, dict[str, Any]]:
    (deployment,) = _kind("Deployment")
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


def test_settings_are_real_and_build() -> None:
    env = _settings_env()
    assert {k for k in env if k.startswith("MODELTAP_")} - setting_names() == set()
    for container in _containers().values():
        names = {e["name"] for e in container.get("env", [])}
        assert {n for n in names if n.startswith("MODELTAP_")} <= setting_names()
    settings = ProxySettings.from_env(env)
    assert settings.admin_token and settings.capture.sink.startswith("s3://")


def test_the_proxy_sidecar_fronts_the_model_with_probes_on_admin_routes() -> None:
    containers = _containers()
    proxy, model = containers["modeltap-proxy"], containers["model"]
    settings = ProxySettings.from_env(_settings_env())
    argv = command(model["args"])
    assert settings.upstream_url == f"http://127.0.0.1:{argv[argv.index('--port') + 1]}"
    ports = {p["name"]: p["containerPort"] for p in proxy["ports"]}
    assert ports == {"http": settings.port}
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/_modeltap/readyz", "port": "http"}
    assert proxy["livenessProbe"]["httpGet"] == {"path": "/_modeltap/healthz", "port": "http"}
    (service,) = _kind("Service")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    (deployment,) = _kind("Deployment")
    meta = deployment["spec"]["template"]["metadata"]["annotations"]
    assert meta["prometheus.io/path"] == "/_modeltap/metrics"
    assert int(meta["prometheus.io/port"]) == settings.port
    # The same images the compose file builds.
    images = {s["image"] for s in compose()["services"].values()}
    assert {c["image"] for c in containers.values()} <= images


def test_readiness_probe_waits_longer_than_readyz_can_take() -> None:
    probe = _containers()["modeltap-proxy"]["readinessProbe"]
    assert probe.get("timeoutSeconds", 1) > READYZ_MAX_S  # Kubernetes' default is 1 s
    assert probe["periodSeconds"] >= probe["timeoutSeconds"]


def test_grace_period_covers_prestop_drain_and_flush() -> None:
    (deployment,) = _kind("Deployment")
    spec = deployment["spec"]["template"]["spec"]
    proxy = _containers()["modeltap-proxy"]
    pre_stop = proxy["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    settings = ProxySettings.from_env(_settings_env())
    needed = int(pre_stop[1]) + 2 * settings.shutdown_timeout_s  # drain, then flush
    assert spec["terminationGracePeriodSeconds"] >= needed
    assert spec["securityContext"]["runAsNonRoot"] is True


def test_monitor_cronjob_command_is_one_the_monitor_accepts() -> None:
    (cron,) = _kind("CronJob")
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["/bin/sh", "-c"]
    argv = shlex.split(container["args"][0].replace("$(date -u +%Y-%m-%dT%H)", "2026-11-23T10"))
    assert argv[:2] == ["exec", "modeltap-monitor"]
    args = build_parser().parse_args(argv[2:])
    assert args.command == "run" and args.pushgateway and args.window == "1h"
    assert args.out == "s3://modeltap/monitor/2026-11-23T10"
