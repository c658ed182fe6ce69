"""Proxy benchmark (issue 4): wrk against the toy model directly, nginx in
front of it, and the proxy with capture on (100% sampled) and sampled out,
at 1 and 16 connections, all in one run on this machine.

    python -m loadtest proxy [--quick]

Needs ``wrk`` and ``nginx`` (Debian: ``apt-get install wrk nginx-light``).
Every server here is one process/worker, on loopback, sharing the 2 cores
with wrk (one thread).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

BODY = '{"instances": [[0.5, 1.0, 2.0, 3.0, 4.0]]}'
PATH = "/v1/models/toy:predict"
LUA = f"""wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.post(url + PATH, content=BODY, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def process(cmd: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(
        cmd,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        yield p
    finally:
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(url: str, connections: int, seconds: int, lua: Path) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(lua),
            url + PATH,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    mx = _ms(re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "p50": p50,
        "p99": p99,
        "max": mx,
        "non2xx": float(errors.group(1)) if errors else 0.0,
    }


NGINX = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  upstream model {{ server 127.0.0.1:{model}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://model;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""


def main(flags: list[str]) -> None:
    if not (shutil.which("wrk") and shutil.which("nginx")):
        print("needs wrk and nginx: apt-get install wrk nginx-light", file=sys.stderr)
        return
    seconds = 5 if "--quick" in flags else 15
    py = sys.executable
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        lua = tmp / "post.lua"
        lua.write_text(LUA)
        mport, nport, pon, poff, pmin = (free_port() for _ in range(5))
        (tmp / "nginx.conf").write_text(NGINX.format(dir=tmp, model=mport, port=nport))
        model = [
            py,
            "-m",
            "uvicorn",
            "loadtest.toy_model:app",
            "--port",
            str(mport),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        base = {"MODELTAP_UPSTREAM_URL": f"http://127.0.0.1:{mport}", "MODELTAP_MODEL": "toy"}
        on = {**base, "MODELTAP_PORT": str(pon), "MODELTAP_SINK": str(tmp / "on")}
        off = {
            **base,
            "MODELTAP_PORT": str(poff),
            "MODELTAP_SINK": str(tmp / "off"),
            "MODELTAP_SAMPLE_RATE": "0",
            "MODELTAP_SAMPLE_KEEP_ERRORS": "false",
            "MODELTAP_SLOW_THRESHOLD_S": "",
        }
        minimal = [
            py,
            "-m",
            "uvicorn",
            "loadtest.min_passthrough:app",
            "--port",
            str(pmin),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        with (
            process(minimal, {"MIN_UPSTREAM": f"http://127.0.0.1:{mport}"}),
            process(model),
            process(["nginx", "-c", str(tmp / "nginx.conf")]),
            process([py, "-m", "server"], on) as p_on,
            process([py, "-m", "server"], off),
        ):
            targets = {
                "model directly": f"http://127.0.0.1:{mport}",
                "nginx -> model": f"http://127.0.0.1:{nport}",
                "minimal ASGI + aiohttp hop (reference)": f"http://127.0.0.1:{pmin}",
                "proxy, capture on (100%)": f"http://127.0.0.1:{pon}",
                "proxy, capture sampled out (rate 0)": f"http://127.0.0.1:{poff}",
            }
            for url in targets.values():
                wait_up(url)
            print(f"# proxy benchmark: wrk -t1, {seconds}s per cell, POST {len(BODY)} B JSON")
            print("| target | conns | req/s | p50 ms | p99 ms | max ms | non-2xx |")
            print("| --- | --- | --- | --- | --- | --- | --- |")
            results = {}
            for conns in (1, 16):
                for name, url in targets.items():
                    r = wrk(url, conns, seconds, lua)
                    results[(name, conns)] = r
                    print(
                        f"| {name} | {conns} | {r['rps']:,.0f} | {r['p50']:.2f} | "
                        f"{r['p99']:.2f} | {r['max']:.1f} | {r['non2xx']:.0f} |",
                        flush=True,
                    )
            print(f"proxy (capture on) RSS after the run: {rss_mb(p_on.pid):.0f} MB")
            on16 = results[("proxy, capture on (100%)", 16)]["rps"]
            print(
                f"capture on / nginx at 16: {on16 / results[('nginx -> model', 16)]['rps']:.2f}; "
                f"capture on / capture sampled out: "
                f"{on16 / results[('proxy, capture sampled out (rate 0)', 16)]['rps']:.2f}"
            )
            d1 = results[("model directly", 1)]
            c1 = results[("proxy, capture on (100%)", 1)]
            print(
                f"added at 1 connection: p50 +{c1['p50'] - d1['p50']:.2f} ms, "
                f"p99 +{c1['p99'] - d1['p99']:.2f} ms"
            )
