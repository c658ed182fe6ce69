"""The Dockerfile, run without Docker: its structure (multi-stage, slim base,
non-root, no build tools in the final stages, the monitor installed) and its
proxy stage's ENTRYPOINT, CMD, ENV and HEALTHCHECK run here as they would in
the container, in front of the toy-model stage's CMD.

Two substitutions, both said: the image's ``/opt/modeltap/bin`` is this
checkout's venv (``pip install '.[monitor]'`` made both from pyproject.toml),
and the ports and host are free loopback ones (tests only touch 127.0.0.1;
that the image's ``MODELTAP_HOST`` means 0.0.0.0 is checked on the settings)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import httpx

from server.settings import ProxySettings
from tests.deploy.manifests import (
    ROOT,
    dockerfile_stages,
    exec_form,
    k8s_docs,
    stage_env,
    stage_last,
)
from tests.servers import free_port
from tests.support import all_records, wait_for

STAGES = dockerfile_stages()
VENV_BIN = Path(sys.executable).parent


def test_stages_slim_non_root_and_no_build_tools_in_the_image() -> None:
    assert list(STAGES)[-1] == "proxy"  # the default target
    assert re.fullmatch(r"python:3\.11-slim(-\w+)?", STAGES["runtime"].base)
    assert STAGES["toy-model"].base == STAGES["proxy"].base == "runtime"
    for name in ("runtime", "toy-model", "proxy"):
        user = stage_last(STAGES, name, "USER") or "root"
        assert user.split(":")[0] not in ("root", "0"), name
    runtime = STAGES["runtime"].instructions
    copies = [rest for word, rest in runtime if word == "COPY"]
    assert copies == ["--from=builder /opt/modeltap /opt/modeltap"]
    for name in ("runtime", "toy-model", "proxy"):
        runs = " ".join(rest for word, rest in STAGES[name].instructions if word == "RUN")
        assert not re.search(r"apt-get install|gcc|build-essential|pip install", runs), name
    builder = " ".join(rest for word, rest in STAGES["builder"].instructions)
    assert "pip install '.[monitor]'" in builder  # the monitor is in the same image
    # the compiled modules (setup.py): the build script and a C compiler are
    # there, and the build fails rather than ship interpreted Python
    assert re.search(
        r"COPY [^\n]*\bsetup\.py\b",
        "\n".join(f"{w} {r}" for w, r in STAGES["builder"].instructions),
    )
    assert re.search(r"apt-get install [^&]*\bgcc\b", builder)
    assert "capture.compiled_modules()" in builder


def test_entrypoint_is_the_console_script_pyproject_declares() -> None:
    entry = exec_form(stage_last(STAGES, "proxy", "ENTRYPOINT") or "[]")
    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert entry == ["modeltap-proxy"] and scripts["modeltap-proxy"] == "server.__main__:main"
    assert scripts["modeltap-monitor"] == "monitor_job.cli:main"
    assert (VENV_BIN / "modeltap-proxy").is_file()  # what PATH finds first in the image
    env = stage_env(STAGES, "proxy")
    settings = ProxySettings.from_env({**env, "MODELTAP_UPSTREAM_URL": "http://model:9000"})
    assert settings.host == "0.0.0.0"
    assert stage_last(STAGES, "proxy", "EXPOSE") == str(settings.port)


def _image_env(stage: str) -> dict[str, str]:
    """The stage's ENV as run here: the venv for /opt/modeltap/bin, the repo for /app."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELTAP_")}
    for key, value in stage_env(STAGES, stage).items():
        value = value.replace("/opt/modeltap/bin", str(VENV_BIN)).replace("$PATH", env["PATH"])
        env[key] = value.replace("/app", str(ROOT)) if key == "PYTHONPATH" else value
    return env


def _free_loopback(argv: list[str], port: int) -> list[str]:
    out = list(argv)
    out[out.index("--host") + 1] = "127.0.0.1"
    out[out.index("--port") + 1] = str(port)
    return out


def test_proxy_stage_runs_here_as_in_the_container(tmp_path: Path) -> None:
    model_port, proxy_port = free_port(), free_port()
    model_cmd = exec_form(stage_last(STAGES, "toy-model", "CMD") or "[]")
    model = subprocess.Popen(
        _free_loopback(model_cmd, model_port),
        env=_image_env("toy-model"),
        cwd=tmp_path,  # PYTHONPATH, not the working directory, finds loadtest/
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    entry = exec_form(stage_last(STAGES, "proxy", "ENTRYPOINT") or "[]")
    cmd = exec_form(stage_last(STAGES, "proxy", "CMD") or "[]")
    env = _image_env("proxy")
    env.update(
        MODELTAP_UPSTREAM_URL=f"http://127.0.0.1:{model_port}",
        MODELTAP_PORT=str(proxy_port),
        MODELTAP_HOST="127.0.0.1",
        MODELTAP_SINK=str(tmp_path / "captures"),
    )
    health = stage_last(STAGES, "proxy", "HEALTHCHECK") or ""
    check = exec_form(health.split(" CMD ", 1)[1].strip())
    url = f"http://127.0.0.1:{proxy_port}"
    proxy = None
    try:
        assert wait_for(lambda: _answers(f"http://127.0.0.1:{model_port}/status/200"), 30)
        proxy = subprocess.Popen(
            [*entry, *cmd], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert wait_for(lambda: _healthcheck(check, env) == 0, 30), proxy.poll()
        r = httpx.post(url + "/v1/models/toy:predict", json={"instances": [[0.0, "web", 1]]})
        assert r.status_code == 200 and r.json() == {"predictions": [0.5]}
        event_id = r.headers["x-request-id"]
        for path in _k8s_probe_paths():
            assert httpx.get(url + path, timeout=5).status_code == 200, path
        proxy.send_signal(signal.SIGTERM)
        assert proxy.wait(30) == 0, proxy.communicate()[1][-2000:]
        assert _healthcheck(check, env) != 0
    finally:
        for p in (proxy, model):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    assert event_id in {rec["event_id"] for rec in all_records(tmp_path / "captures")}


def _k8s_probe_paths() -> set[str]:
    paths = set()
    for doc in k8s_docs():
        if doc["kind"] == "Deployment":
            for c in doc["spec"]["template"]["spec"]["containers"]:
                for probe in ("readinessProbe", "livenessProbe"):
                    if probe in c:
                        paths.add(c[probe]["httpGet"]["path"])
    assert paths
    return paths


def _healthcheck(check: list[str], env: dict[str, str]) -> int:
    """The image's HEALTHCHECK command ("python" is the venv's, as PATH makes it there)."""
    argv = [sys.executable if check[0] == "python" else check[0], *check[1:]]
    return subprocess.run(argv, env=env, capture_output=True, timeout=10, check=False).returncode


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
