"""Proxy benchmark (issue 4): wrk against the toy model directly, nginx in
front of it, and the proxy with capture on (100% sampled) and sampled out,
at 1 and 16 connections, all in one run on this machine; for a minimal JSON
prediction (42 B) and a 100-item ranking request (``POST /rank``, ~6 KB in,
~1 KB out: the rows a ranking capture splits into).

    python -m loadtest proxy [--quick] [--seconds=N] [--repeat=N] [--conns=1,16]
                             [--only=WORD,...] [--payloads=predict,rank]
    python -m loadtest proxy --rss [--requests=1000000] [--conns=16]

``--only`` keeps the rows whose name contains one of the words (``directly``,
``nginx``, ``aiohttp``, ``httptools``, ``capture on``, ``sampled out``); the
servers for the other rows are not started. ``--seconds`` overrides the 15 s
per cell (5 s with ``--quick``); ``--repeat=N`` runs each cell N times,
round-robin over the rows, and reports each figure's median (this
machine's load drifts by ±20% within minutes). The ranking payload runs
against the model, nginx and the proxy rows only (the references are for the
hop itself).

``--rss``: the resident memory of the proxy and its encoder helper over ``--requests`` small JSON
requests (one million by default, several minutes) at 16 connections with
capture on at 100%, sampled from ``/proc/<pid>/status`` every
``RSS_INTERVAL_S`` seconds while wrk runs in 20 s rounds; prints RSS at the
start (after a warm-up), its maximum and at the end, and the requests and
records the proxy counted (``/_modeltap/metrics``).

Needs ``wrk`` and ``nginx`` (Debian: ``apt-get install wrk nginx-light``).
Every server here is one process/worker, on loopback, sharing the 2 cores
with wrk (one thread).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx

from loadtest.sysinfo import free_ports, tree_cpu_seconds, tree_rss_mb

BODY = '{"instances": [[0.5, 1.0, 2.0, 3.0, 4.0]]}'
PATH = "/v1/models/toy:predict"
RANK_PATH = "/rank"
RANK_BODY = json.dumps(
    {
        "user_id": "u42",
        "context": {"page": "home", "device": "mobile"},
        "items": [
            {"id": f"item-{i}", "price": round(5 + i * 0.75, 2), "category": f"c{i % 7}"}
            for i in range(100)
        ],
    },
    separators=(",", ":"),
)
#: payload name -> (path, body)
PAYLOADS = {"predict": (PATH, BODY), "rank": (RANK_PATH, RANK_BODY)}
RSS_INTERVAL_S = 3.0


def lua(body: str) -> str:
    return f"""wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
"""


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


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def wrk(url: str, connections: int, seconds: int, lua: Path, path: str = PATH) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(lua),
            url + path,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
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
        "requests": float(total),
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


def run_flags(flags: list[str], repeat: int) -> tuple[int, int, int] | None:
    """``(--seconds, --repeat, --conns)`` of a benchmark that looks inside
    capture-on runs (``threads``, ``neighbour``, ``variants``); None, with
    a message, when wrk is not installed."""
    if not shutil.which("wrk"):
        print("needs wrk: apt-get install wrk", file=sys.stderr)
        return None
    return (
        int(_flag(flags, "--seconds", "10")),
        int(_flag(flags, "--repeat", str(repeat))),
        int(_flag(flags, "--conns", "16")),
    )


def main(flags: list[str]) -> None:
    if not (shutil.which("wrk") and shutil.which("nginx")):
        print("needs wrk and nginx: apt-get install wrk nginx-light", file=sys.stderr)
        return
    if "--rss" in flags:
        rss(flags)
        return
    seconds = int(_flag(flags, "--seconds", "5" if "--quick" in flags else "15"))
    repeat = int(_flag(flags, "--repeat", "1"))
    conn_counts = [int(c) for c in _flag(flags, "--conns", "1,16").split(",")]
    only = [w for w in _flag(flags, "--only", "").split(",") if w]
    payloads = [p for p in _flag(flags, "--payloads", ",".join(PAYLOADS)).split(",") if p]
    unknown = set(payloads) - set(PAYLOADS)
    if unknown:
        print(f"unknown payloads {sorted(unknown)}; choose from {list(PAYLOADS)}", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as d, contextlib.ExitStack() as stack:
        tmp = Path(d)
        scripts = {}
        for name in payloads:
            scripts[name] = tmp / f"{name}.lua"
            scripts[name].write_text(lua(PAYLOADS[name][1]))
        rows = _rows(tmp)
        if only:  # the model always runs; its row is measured when asked for
            rows = {k: v for k, v in rows.items() if k == MODEL or any(w in k for w in only)}
        pids = _start(stack, rows)
        measured = [n for n in rows if n != MODEL or not only or any(w in n for w in only)]
        print(
            f"# proxy benchmark: wrk -t1, {seconds}s per cell, median of {repeat} interleaved "
            f"run(s) per cell (each column's own median); predict: POST {len(BODY)} B "
            f"JSON to {PATH}; rank: POST {len(RANK_BODY)} B, 100 items, to {RANK_PATH}"
        )
        print(
            "| payload | target | conns | req/s | p50 ms | p99 ms | max ms | non-2xx "
            "| server CPU µs/req (children) |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        results: dict[tuple[str, str, int], dict[str, float]] = {}
        for payload in payloads:
            path = PAYLOADS[payload][0]
            names = [n for n in measured if payload == "predict" or n in RANK_ROWS]
            for conns in conn_counts:
                runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
                for _ in range(repeat):  # round-robin, so drifting load hits every row alike
                    for name in names:
                        runs[name].append(
                            _measured(
                                pids.get(name),
                                rows[name][0],
                                conns,
                                seconds,
                                scripts[payload],
                                path,
                                pids.values(),
                            )
                        )
                for name in names:
                    r = results[(payload, name, conns)] = _median(runs[name])
                    print(
                        f"| {payload} | {name} | {conns} | {r['rps']:,.0f} | {r['p50']:.2f} | "
                        f"{r['p99']:.2f} | {r['max']:.1f} | {r['non2xx']:.0f} | "
                        f"{r['cpu_us']:.0f} ({r['child_cpu_us']:.0f}) |",
                        flush=True,
                    )
        if CAPTURE_ON in pids:
            print(
                "proxy (capture on) RSS with its encoder helper after the run: "
                f"{tree_rss_mb(pids[CAPTURE_ON]):.0f} MB"
            )
        for name in (CAPTURE_ON, CAPTURE_THREAD):
            if name in pids:  # records kept and dropped over every cell of the row
                counts = _scrape(rows[name][0])
                print(
                    f"{name}: {counts.get('modeltap_capture_records_kept_total', 0):,.0f} kept, "
                    f"{counts.get('modeltap_capture_records_dropped_total', 0):,.0f} dropped"
                )
        for payload in payloads:
            _ratios(payload, {(n, c): r for (p, n, c), r in results.items() if p == payload})


def _rows(tmp: Path) -> dict[str, tuple[str, list[str] | None, dict[str, str]]]:
    """name -> (url, command, environment) of every row; the model's command is None."""
    py = sys.executable
    mport, nport, pon, poff, pmin, pfast, pthread = free_ports(7)
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
    thread = {
        **base,
        "MODELTAP_PORT": str(pthread),
        "MODELTAP_SINK": str(tmp / "thread"),
        "MODELTAP_ENCODER": "thread",
    }
    minimal = {"MIN_UPSTREAM": f"http://127.0.0.1:{mport}"}
    return {
        MODEL: (f"http://127.0.0.1:{mport}", uvicorn("loadtest.toy_model:app", mport), {}),
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
        CAPTURE_THREAD: (f"http://127.0.0.1:{pthread}", [py, "-m", "server"], thread),
    }


Rows = dict[str, tuple[str, list[str] | None, dict[str, str]]]


@contextlib.contextmanager
def capture_pair(
    make_rows: Callable[[Path], Rows] | None = None,
) -> Iterator[tuple[Rows, dict[str, int], Path]]:
    """The model, the proxy with capture on and with capture sampled out,
    started as ``main`` starts them; with the wrk script of the ``predict``
    payload. Yields ``(rows, pids, script)``; stops them all on exit. For the
    benchmarks that look inside one run (``threads``, ``neighbour``);
    ``make_rows`` (a temporary directory -> rows) starts others instead
    (``variants``)."""
    names = (MODEL, CAPTURE_ON, CAPTURE_OFF)
    with tempfile.TemporaryDirectory() as d, contextlib.ExitStack() as stack:
        tmp = Path(d)
        if make_rows is None:
            rows = {k: v for k, v in _rows(tmp).items() if k in names}
        else:
            rows = make_rows(tmp)
        pids = _start(stack, rows)
        script = tmp / "predict.lua"
        script.write_text(lua(BODY))
        yield rows, pids, script


def _start(
    stack: contextlib.ExitStack, rows: dict[str, tuple[str, list[str] | None, dict[str, str]]]
) -> dict[str, int]:
    """Start the model first, then the other rows; wait until all answer. name -> pid."""
    pids = {}
    for name, (_, cmd, env) in sorted(rows.items(), key=lambda kv: kv[0] != MODEL):
        if cmd is not None:
            pids[name] = stack.enter_context(process(cmd, env)).pid
        if name == MODEL:
            wait_up(rows[MODEL][0])
    for url, _, _ in rows.values():
        wait_up(url)
    return pids


def rss(flags: list[str]) -> None:
    """Resident memory of the proxy (capture on, 100%) over a million requests."""
    target = int(_flag(flags, "--requests", "1000000").replace("_", ""))
    conns = int(_flag(flags, "--conns", "16").split(",")[-1])
    with tempfile.TemporaryDirectory() as d, contextlib.ExitStack() as stack:
        tmp = Path(d)
        script = tmp / "predict.lua"
        script.write_text(lua(BODY))
        rows = {k: v for k, v in _rows(tmp).items() if k in (MODEL, CAPTURE_ON)}
        pid = _start(stack, rows)[CAPTURE_ON]
        url = rows[CAPTURE_ON][0]
        wrk(url, conns, 5, script)  # warm-up: pools, caches, first batches
        samples = [tree_rss_mb(pid)]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(RSS_INTERVAL_S):
                samples.append(tree_rss_mb(pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        print(
            f"# proxy RSS: {target:,} POSTs of {len(BODY)} B JSON, wrk -t1 -c{conns}, "
            f"capture on (100%), RSS sampled every {RSS_INTERVAL_S:.0f} s"
        )
        done, rate, t0 = 0, 0.0, time.monotonic()
        while done < target:
            # 20 s rounds; the last one sized to end near the target
            secs = 20 if not rate else max(2, min(20, round((target - done) / rate) + 1))
            r = wrk(url, conns, secs, script)
            done += int(r["requests"])
            rate = r["rps"]
            print(
                f"{done:>10,} requests  {rate:,.0f} req/s  p99 {r['p99']:.1f} ms  "
                f"RSS {tree_rss_mb(pid):.0f} MB",
                flush=True,
            )
        stop.set()
        sampler.join()
        samples.append(tree_rss_mb(pid))
        elapsed = time.monotonic() - t0
        counts = _scrape(url)
        print(
            f"{done:,} requests in {elapsed:.0f} s ({done / elapsed:,.0f} req/s); the proxy "
            f"counted {counts.get('modeltap_proxy_requests_total', 0):,.0f} requests (with "
            f"warm-up), {counts.get('modeltap_capture_records_kept_total', 0):,.0f} records kept, "
            f"{counts.get('modeltap_capture_records_written_total', 0):,.0f} written so far, "
            f"{counts.get('modeltap_capture_records_dropped_total', 0):,.0f} dropped"
        )
        print("| RSS at start (after warm-up) | max | at the end |")
        print("| --- | --- | --- |")
        print(f"| {samples[0]:.0f} MB | {max(samples):.0f} MB | {samples[-1]:.0f} MB |")


#: ``settle``: the servers count as quiet when all of them together use
#: under this share of one core over ``SETTLE_WINDOW_S``.
SETTLE_SHARE = 0.02
SETTLE_WINDOW_S = 0.25


def settle(pids: Iterable[int], timeout: float = 30.0) -> float:
    """Wait until the servers (and their children) are quiet; the seconds waited.

    A capture-on run leaves work behind it: the helper may still be
    building the last sealed batch when wrk stops. Started at once, the
    next cell (capture off, say) would share the machine with that work
    and look slower, and capture on would look cheaper than it is. The
    batch still open when a run ends is not waited for: it is sealed and
    built during the next capture-on run, as the previous run's was in
    this one, so each run carries about as much in as it leaves out.
    """
    start = time.monotonic()
    pids = list(pids)

    def total() -> float:
        used = 0.0
        for pid in pids:
            with contextlib.suppress(OSError):
                used += sum(tree_cpu_seconds(pid))
        return used

    last = total()
    while time.monotonic() - start < timeout:
        time.sleep(SETTLE_WINDOW_S)
        now = total()
        if now - last < SETTLE_SHARE * SETTLE_WINDOW_S:
            break
        last = now
    else:
        print(f"# servers still busy after {timeout:.0f}s; measuring anyway", file=sys.stderr)
    return time.monotonic() - start


def _measured(
    pid: int | None,
    url: str,
    conns: int,
    seconds: int,
    lua: Path,
    path: str,
    servers: Iterable[int] = (),
) -> dict[str, float]:
    """One wrk cell plus the CPU its server used per request: the process
    itself and its children (the proxy's encoder helper, nginx's worker).
    Starts once ``servers`` are quiet (``settle``)."""
    settle(servers)
    before = tree_cpu_seconds(pid) if pid else (0.0, 0.0)
    r = wrk(url, conns, seconds, lua, path)
    after = tree_cpu_seconds(pid) if pid else (0.0, 0.0)
    n = max(r["requests"], 1.0)
    r["cpu_us"] = (after[0] - before[0]) / n * 1e6
    r["child_cpu_us"] = (after[1] - before[1]) / n * 1e6
    return r


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over repeated runs of one cell (max: the largest)."""
    import statistics

    out = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out["max"] = max(r["max"] for r in runs)
    out["non2xx"] = sum(r["non2xx"] for r in runs)
    return out


def _scrape(url: str) -> dict[str, float]:
    """Sample name -> value summed over labels, from the proxy's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/_modeltap/metrics", timeout=10).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
    return out


MODEL = "model directly"
NGINX_ROW = "nginx -> model"
AIOHTTP_REF = "minimal raw ASGI + aiohttp hop (reference)"
HTTPTOOLS_REF = "minimal raw ASGI + httptools client hop (reference)"
CAPTURE_ON = "proxy, capture on (100%)"
CAPTURE_OFF = "proxy, capture sampled out (rate 0)"
CAPTURE_THREAD = "proxy, capture on (100%), records built in-process (ENCODER=thread)"


RANK_ROWS = (MODEL, NGINX_ROW, CAPTURE_ON, CAPTURE_OFF, CAPTURE_THREAD)


def _ratios(payload: str, results: dict[tuple[str, int], dict[str, float]]) -> None:
    """The issue's targets, for the rows that ran."""
    print(f"{payload}:")

    def rps(name: str, conns: int) -> float | None:
        r = results.get((name, conns))
        return r["rps"] if r else None

    on16 = rps(CAPTURE_ON, 16)
    for other in (NGINX_ROW, CAPTURE_OFF, CAPTURE_THREAD, AIOHTTP_REF, HTTPTOOLS_REF):
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
