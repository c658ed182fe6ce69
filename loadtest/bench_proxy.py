"""Proxy benchmark (issue 4): wrk against the toy model directly, nginx in
front of it, and the proxy with capture on (100% sampled) and sampled out,
at 1 and 16 connections, all in one run on this machine.

    python -m loadtest proxy [--quick] [--seconds=N] [--conns=1,16] [--only=WORD,...]

``--only`` keeps the rows whose name contains one of the words (``directly``,
``nginx``, ``aiohttp``, ``httptools``, ``capture on``, ``sampled out``); the
servers for the other rows are not started. ``--seconds`` overrides the 15 s
per cell (5 s with ``--quick``).

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


def _flag(flags: list[str], name: str, default: str) -> str:
    for flag in flags:
        if flag.startswith(name + "="):
            return flag.split("=", 1)[1]
    return default


def main(flags: list[str]) -> None:
    if not (shutil.which("wrk") and shutil.which("nginx")):
        print("needs wrk and nginx: apt-get install wrk nginx-light", file=sys.stderr)
        return
    seconds = int(_flag(flags, "--seconds", "5" if "--quick" in flags else "15"))
    conn_counts = [int(c) for c in _flag(flags, "--conns", "1,16").split(",")]
    only = [w for w in _flag(flags, "--only", "").split(",") if w]
    py = sys.executable
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        lua = tmp / "post.lua"
        lua.write_text(LUA)
        mport, nport, pon, poff, pmin, pfast = (free_port() for _ in range(6))
        (tmp / "nginx.conf").write_text(NGINX.format(dir=tmp, model=mport, port=nport))

        def uvicorn(app: str, port: int) -> list[str]:
            return [
                py,
                "-m",
                "uvicorn",
                app,
                "--port",
                str(port),
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
        minimal = {"MIN_UPSTREAM": f"http://127.0.0.1:{mport}"}
        # name -> (url, command, environment); the model itself always runs.
        rows: dict[str, tuple[str, list[str] | None, dict[str, str]]] = {
            MODEL: (f"http://127.0.0.1:{mport}", None, {}),
            NGINX_ROW: (f"http://127.0.0.1:{nport}", ["nginx", "-c", str(tmp / "nginx.conf")], {}),
            AIOHTTP_REF: (
                f"http://127.0.0.1:{pmin}",
                uvicorn("loadtest.min_passthrough:app", pmin),
                minimal,
            ),
            HTTPTOOLS_REF: (
                f"http://127.0.0.1:{pfast}",
                uvicorn("loadtest.min_passthrough:app_httptools", pfast),
                minimal,
            ),
            CAPTURE_ON: (f"http://127.0.0.1:{pon}", [py, "-m", "server"], on),
            CAPTURE_OFF: (f"http://127.0.0.1:{poff}", [py, "-m", "server"], off),
        }
        if only:
            rows = {k: v for k, v in rows.items() if any(w in k for w in only)}
        with contextlib.ExitStack() as stack:
            stack.enter_context(process(uvicorn("loadtest.toy_model:app", mport)))
            pids = {
                name: stack.enter_context(process(cmd, env)).pid
                for name, (_, cmd, env) in rows.items()
                if cmd is not None
            }
            wait_up(f"http://127.0.0.1:{mport}")
            for url, _, _ in rows.values():
                wait_up(url)
            print(f"# proxy benchmark: wrk -t1, {seconds}s per cell, POST {len(BODY)} B JSON")
            print("| target | conns | req/s | p50 ms | p99 ms | max ms | non-2xx |")
            print("| --- | --- | --- | --- | --- | --- | --- |")
            results = {}
            for conns in conn_counts:
                for name, (url, _, _) in rows.items():
                    r = wrk(url, conns, seconds, lua)
                    results[(name, conns)] = r
                    print(
                        f"| {name} | {conns} | {r['rps']:,.0f} | {r['p50']:.2f} | "
                        f"{r['p99']:.2f} | {r['max']:.1f} | {r['non2xx']:.0f} |",
                        flush=True,
                    )
            if CAPTURE_ON in pids:
                print(f"proxy (capture on) RSS after the run: {rss_mb(pids[CAPTURE_ON]):.0f} MB")
            _ratios(results)


MODEL = "model directly"
NGINX_ROW = "nginx -> model"
AIOHTTP_REF = "minimal raw ASGI + aiohttp hop (reference)"
HTTPTOOLS_REF = "minimal raw ASGI + httptools client hop (reference)"
CAPTURE_ON = "proxy, capture on (100%)"
CAPTURE_OFF = "proxy, capture sampled out (rate 0)"


def _ratios(results: dict[tuple[str, int], dict[str, float]]) -> None:
    """The issue's targets, for the rows that ran."""

    def rps(name: str, conns: int) -> float | None:
        r = results.get((name, conns))
        return r["rps"] if r else None

    on16 = rps(CAPTURE_ON, 16)
    for other in (NGINX_ROW, CAPTURE_OFF, AIOHTTP_REF, HTTPTOOLS_REF):
        den = rps(other, 16)
        if on16 and den:
            print(f"capture on / {other} at 16 connections: {on16 / den:.2f}")
    fast, slow = rps(HTTPTOOLS_REF, 16), rps(AIOHTTP_REF, 16)
    if fast and slow:
        print(f"httptools reference / aiohttp reference at 16 connections: {fast / slow:.2f}")
    d1, c1 = results.get((MODEL, 1)), results.get((CAPTURE_ON, 1))
    if d1 and c1:
        print(
            f"added at 1 connection: p50 +{c1['p50'] - d1['p50']:.2f} ms, "
            f"p99 +{c1['p99'] - d1['p99']:.2f} ms"
        )
