"""docker-compose.yml, checked without a Docker engine: it parses, every
service's image and build are valid, every ``MODELTAP_*`` it sets is a real
setting (and the proxy's settings build), every mapped port and every
``http://service:port`` it or Prometheus/Grafana use is one the service
listens on, and the proxy gets time to drain and flush on stop."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import yaml

from monitor_job.cli import build_parser
from server.settings import ProxySettings
from tests.deploy.manifests import (
    DEPLOY,
    ROOT,
    command,
    compose,
    dockerfile_stages,
    environment,
    exec_form,
    interpolate,
    setting_names,
    stage_env,
    stage_last,
)

_PORT_FLAGS = re.compile(r"^--(?:port|address|console-address|web\.listen-address)(?:=|$)")


def _image_stage(service: dict[str, Any]) -> str | None:
    build = service.get("build")
    return build.get("target") if isinstance(build, dict) else None


def listening_ports(service: dict[str, Any]) -> set[int]:
    """Ports a service listens on, from its own configuration: flags of its
    command, ``GF_SERVER_HTTP_PORT``, or for the modeltap image the
    ``MODELTAP_PORT`` its environment or the Dockerfile sets."""
    ports: set[int] = set()
    argv = command(service.get("command"))
    for i, arg in enumerate(argv):
        if _PORT_FLAGS.match(arg):
            value = arg.split("=", 1)[1] if "=" in arg else argv[i + 1]
            ports.add(int(value.rsplit(":", 1)[-1]))
    env = environment(service)
    if "GF_SERVER_HTTP_PORT" in env:
        ports.add(int(env["GF_SERVER_HTTP_PORT"]))
    if _image_stage(service) == "proxy" and "entrypoint" not in service:
        image_env = stage_env(dockerfile_stages(), "proxy")
        ports.add(
            ProxySettings.from_env({**image_env, **env, "MODELTAP_UPSTREAM_URL": "http://x"}).port
        )
    return ports


def test_every_service_has_a_pinned_image_and_a_real_build() -> None:
    doc = compose()
    stages = dockerfile_stages()
    builds: dict[str, Any] = {}
    for name, service in doc["services"].items():
        image = service.get("image", "")
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: image {image!r} has no tag"
        assert not image.endswith(":latest"), name
        build = service.get("build")
        if build is None:
            continue
        context = ROOT / build["context"]
        assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name
        assert build["target"] in stages, f"{name}: no stage {build['target']!r}"
        # One image name, one build: compose would otherwise tag two builds alike.
        assert builds.setdefault(image, build) == build, name


def test_every_modeltap_variable_is_a_real_setting_and_the_proxy_settings_build() -> None:
    known = setting_names()
    assert "MODELTAP_UPSTREAM_URL" in known and "MODELTAP_SINK" in known
    stages = dockerfile_stages()
    seen = set(stage_env(stages, "proxy"))
    for name, service in compose()["services"].items():
        env = environment(service)
        seen |= set(env)
        unknown = {k for k in env if k.startswith("MODELTAP_")} - known
        assert not unknown, f"{name} sets variables that are not settings: {unknown}"
        if _image_stage(service) == "proxy" and "entrypoint" not in service:
            settings = ProxySettings.from_env({**stage_env(stages, "proxy"), **env})
            assert settings.host == "0.0.0.0" and settings.capture.model == "toy"
    assert {k for k in seen if k.startswith("MODELTAP_")} - known == set()


def test_every_mapped_port_and_service_url_is_one_the_service_listens_on() -> None:
    services = compose()["services"]
    listens = {name: listening_ports(s) for name, s in services.items()}
    mapped = 0
    for name, service in services.items():
        for mapping in service.get("ports", []):
            container = int(str(mapping).split(":")[-1].split("/")[0])
            assert container in listens[name], f"{name} maps {mapping}; listens on {listens[name]}"
            mapped += 1
    assert mapped >= 6
    texts = [yaml.safe_dump(services)]
    texts.append((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    texts.append((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    text = interpolate("\n".join(texts))
    urls = re.findall(r"https?://([a-z][\w-]*):(\d+)", text)
    urls += re.findall(r"targets: \[\"([a-z][\w-]*):(\d+)\"\]", text)  # Prometheus scrapes
    checked = 0
    for host, port in urls:
        if host in services:
            assert int(port) in listens[host], f"{host}:{port}; {host} listens on {listens[host]}"
            checked += 1
    assert checked >= 8, urls


def test_mounted_files_exist_and_the_monitor_loop_calls_real_commands() -> None:
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    loop = DEPLOY / "monitor" / "loop.sh"
    assert subprocess.run(["sh", "-n", str(loop)], check=False).returncode == 0
    text = loop.read_text().replace("\\\n", " ")
    parser = build_parser()
    subcommands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    calls = re.findall(
        r"modeltap-monitor (\w+)((?: +--[\w-]+(?: +\"[^\"]*\"| +[^-\s]\S*)?)+)", text
    )
    assert {sub for sub, _ in calls} == {"baseline", "run"}
    for sub, flags in calls:
        options = subcommands[sub]._option_string_actions
        for flag in re.findall(r"--[\w-]+", flags):
            assert flag in options, f"loop.sh: modeltap-monitor {sub} has no {flag}"


def test_the_proxy_gets_time_to_drain_and_flush_on_stop() -> None:
    proxy = compose()["services"]["proxy"]
    settings = ProxySettings.from_env(environment(proxy))
    grace = int(str(proxy["stop_grace_period"]).removesuffix("s"))
    assert grace >= 2 * settings.shutdown_timeout_s  # drain, then flush: each up to that


def test_the_toy_model_service_runs_the_image_command() -> None:
    model = compose()["services"]["model"]
    cmd = exec_form(stage_last(dockerfile_stages(), "toy-model", "CMD") or "[]")
    assert command(model["command"]) == cmd


def test_no_secret_is_hard_coded_without_an_override() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for var in ("MODELTAP_ADMIN_TOKEN", "MINIO_ROOT_PASSWORD", "GF_SECURITY_ADMIN_PASSWORD"):
        values = re.findall(rf"{var}: (.+)", text)
        assert values and all(v.startswith("${") for v in values), var
