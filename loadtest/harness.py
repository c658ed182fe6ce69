"""Real processes and steady load for the reliability tests and the soak.

- ``ServerProcess``: ``python -m server`` (the proxy) or the toy model under
  uvicorn as a child process on a free loopback port, its output in a file
  (the tests read the proxy's log), stopped with SIGTERM or killed; its RSS
  and its ``/_modeltap/metrics`` on demand.
- ``SteadyLoad``: an open-loop generator (a request every ``1/rate`` s,
  whether or not earlier ones were answered, so an outage that slows the
  proxy shows as latency, not as fewer requests) on an asyncio loop in a
  thread, with the proxy's own httptools client (``server.upstream``) so
  the generator costs little CPU. Each request carries its own
  ``X-Request-ID``, so every id sent is known whatever happens to it.
- ``s3_event_ids``: every record's event id in a bucket, with repeats.

Every process started here is stopped by its ``stop()``/``kill()`` or on
leaving its ``with`` block.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gzip
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import orjson
from prometheus_client.parser import text_string_to_metric_families

from loadtest.sysinfo import free_port, tree_rss_mb
from server.upstream import UpstreamError, UpstreamPool

ROOT = Path(__file__).resolve().parent.parent
PREDICT_PATH = b"/v1/models/toy:predict"
PREDICT_BODY = b'{"instances": [[0.5, 1.0, 2.0, 3.0]]}'


class ServerProcess:
    """A child process serving HTTP on ``port``; output goes to ``log_path``."""

    def __init__(
        self,
        cmd: list[str],
        *,
        port: int,
        log_path: Path,
        env: dict[str, str] | None = None,
        health_path: str = "/_modeltap/healthz",
        preexec: Callable[[], None] | None = None,
    ) -> None:
        self.cmd, self.port, self.log_path = cmd, port, Path(log_path)
        self.env = env or {}
        self.health_path = health_path
        self.preexec = preexec
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @classmethod
    def proxy(cls, env: dict[str, str], log_path: Path, **kw: Any) -> ServerProcess:
        """``python -m server`` with ``env``, on its ``MODELTAP_PORT`` or a free port."""
        port = int(env.get("MODELTAP_PORT") or free_port())
        env = {**env, "MODELTAP_PORT": str(port), "MODELTAP_HOST": "127.0.0.1"}
        return cls([sys.executable, "-m", "server"], port=port, log_path=log_path, env=env, **kw)

    @classmethod
    def toy_model(cls, log_path: Path) -> ServerProcess:
        port = free_port()
        cmd = [sys.executable, "-m", "uvicorn", "loadtest.toy_model:app"]
        cmd += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        return cls(cmd, port=port, log_path=log_path, health_path="/status/200")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 30.0) -> ServerProcess:
        keep = {k: v for k, v in os.environ.items() if not k.startswith("MODELTAP_")}
        env = {**keep, "PYTHONPATH": str(ROOT), **self.env}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in _reap)
        self.proc = subprocess.Popen(
            self.cmd,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=self.preexec,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reap()
                raise RuntimeError(f"{self.cmd} exited at start: {self.log()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + self.health_path, timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{self.cmd} not up within {timeout}s: {self.log()[-2000:]}")

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait; SIGKILL after ``timeout``. Returns the exit code."""
        if self.proc is None:
            return 0
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reap()
        return code

    def kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()
            self._reap()

    def _reap(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def rss_mb(self) -> float:
        """The proxy's RSS plus its children's (the capture's encoder helper)."""
        return tree_rss_mb(self.pid)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """``/_modeltap/metrics``: (sample name, sorted labels) -> value."""
        text = httpx.get(self.url + "/_modeltap/metrics", timeout=10).text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def __enter__(self) -> ServerProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        self._reap()


def capture_counts(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[str, Any]:
    """The capture counters and gauges from a proxy's scraped metrics, named
    without ``modeltap_capture_`` and ``_total`` (``records_offered``,
    ``buffer_bytes``, ...); ``dropped`` maps each reason to its count."""
    out: dict[str, Any] = {"dropped": {}}
    for (name, labels), value in metrics.items():
        if not name.startswith("modeltap_capture_") or name.endswith("_created"):
            continue
        key = name.removeprefix("modeltap_capture_").removesuffix("_total")
        reason = dict(labels).get("reason")
        if key == "records_dropped":
            if reason is not None:
                out["dropped"][reason] = out["dropped"].get(reason, 0) + int(value)
        elif key != "flushes":
            out[key] = out.get(key, 0) + int(value)
    return out


@dataclass(slots=True)
class Result:
    """One request of a ``SteadyLoad``: when it was sent (monotonic), how long
    it took, its status (0: no HTTP answer) and the id it was sent with."""

    sent: float
    seconds: float
    status: int
    request_id: str
    echoed: bool


@dataclass
class SteadyLoad:
    """``rate`` requests/s to ``url`` until ``stop()``; results in ``results``."""

    url: str
    rate: float
    path: bytes = PREDICT_PATH
    body: bytes = PREDICT_BODY
    timeout_s: float = 10.0
    max_connections: int = 64
    id_prefix: str = "load"
    results: list[Result] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def start(self) -> SteadyLoad:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Result]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 10)
        return self.snapshot()

    def snapshot(self) -> list[Result]:
        with self._lock:
            return list(self.results)

    def __enter__(self) -> SteadyLoad:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _run(self) -> None:
        pool = UpstreamPool(
            self.url, max_connections=self.max_connections, timeout_s=self.timeout_s
        )
        tasks: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate
        next_at = loop.time()
        try:
            while not self._stop.is_set():
                now = loop.time()
                if now < next_at:
                    await asyncio.sleep(next_at - now)
                    continue
                next_at += interval
                if now - next_at > 1.0:  # fell behind by a second: do not burst to catch up
                    next_at = now
                task = loop.create_task(self._one(pool))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.wait(tasks, timeout=self.timeout_s + 5)
        finally:
            await pool.aclose()

    async def _one(self, pool: UpstreamPool) -> None:
        rid = f"{self.id_prefix}-{next(self._ids):08d}"
        headers = [(b"content-type", b"application/json"), (b"x-request-id", rid.encode())]
        t0 = time.monotonic()
        status, echoed = 0, False
        try:
            async with await pool.request("POST", self.path, headers, self.body) as resp:
                await resp.read()
                status = resp.status
                echoed = (b"x-request-id", rid.encode()) in resp.headers
        except UpstreamError:
            pass
        with self._lock:
            self.results.append(Result(t0, time.monotonic() - t0, status, rid, echoed))


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (an observed value, rounding up); NaN when empty."""
    return float(np.percentile(values, q, method="higher")) if values else float("nan")


def summarize(results: list[Result]) -> dict[str, float]:
    """Count, answered (any 2xx), error share and latency percentiles (ms)."""
    ok = [r for r in results if 200 <= r.status < 300]
    ms = [r.seconds * 1000 for r in ok]
    n = len(results)
    return {
        "sent": n,
        "answered": len(ok),
        "error_share": (n - len(ok)) / n if n else float("nan"),
        "p50": percentile(ms, 50),
        "p99": percentile(ms, 99),
        "max": max(ms, default=float("nan")),
    }


def between(results: list[Result], start: float, end: float) -> list[Result]:
    return [r for r in results if start <= r.sent < end]


def s3_event_ids(client: Any, bucket: str, prefix: str = "") -> collections.Counter[str]:
    """Every record's event id in ``bucket`` under ``prefix``, counted."""
    ids: collections.Counter[str] = collections.Counter()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith(".jsonl.gz"):
                continue
            raw = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            for line in gzip.decompress(raw).splitlines():
                if line:
                    ids[orjson.loads(line)["event_id"]] += 1
    return ids


def s3_raw_objects(client: Any, bucket: str) -> Iterator[tuple[str, bytes]]:
    """(key, bytes after gunzip when gzip) of every object in ``bucket``."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            raw = client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            if raw[:2] == b"\x1f\x8b":
                raw = gzip.decompress(raw)
            yield obj["Key"], raw


def s3_env(endpoint: str, bucket: str, prefix: str = "captures") -> dict[str, str]:
    """Proxy settings for an S3 sink at ``endpoint`` (credentials from ``AWS_*``)."""
    return {
        "MODELTAP_SINK": f"s3://{bucket}/{prefix}",
        "MODELTAP_S3_ENDPOINT_URL": endpoint,
        "MODELTAP_S3_REGION": "us-east-1",
    }
