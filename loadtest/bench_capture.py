"""Capture core benchmarks (issue 2): append latency on the request path,
background throughput to the local sink and to SeaweedFS, and memory while
the sink is down.

    python -m loadtest capture [--quick]

Every figure is printed beside a reference measured in the same run (timer
overhead, a bare list.append, orjson+gzip of the same records with no
buffer), because absolute times on shared machines are noisy.
"""

from __future__ import annotations

import gc
import gzip
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from capture.buffer import BufferConfig, CaptureBuffer
from capture.capturer import Capturer
from capture.keys import KeyNamer
from capture.types import Exchange
from loadtest.sysinfo import rss_mb


def record_1kb(i: int) -> dict[str, Any]:
    feats = {f"f{j}": (i * 7 + j) % 1000 / 7.0 for j in range(40)}
    return {
        "schema": 1,
        "event_id": f"{i:032x}",
        "time": "2026-11-22T23:08:42.123Z",
        "model": {"name": "bench", "version": "1", "variant": None},
        "status": 200,
        "latency_ms": 3.2,
        "context": {"user": f"u{i % 5000}", "country": "NL"},
        "lookups": {},
        "rows": [{"features": feats, "prediction": 0.25}],
    }


def exchange(i: int) -> Exchange:
    body = orjson.dumps({"instances": [[(i + j) % 97 / 3 for j in range(20)]]})
    return Exchange.of(
        body, b'{"predictions": [0.731]}', path="/v1/models/m:predict", latency_s=0.003
    )


def pct(values: list[int], q: float) -> float:
    """The ``q`` quantile of nanosecond timings, in microseconds."""
    return float(np.percentile(values, q * 100, method="higher")) / 1000.0


def bench_append(n: int) -> None:
    """Per-call latency of Capturer.submit while the flusher is kept busy."""
    with tempfile.TemporaryDirectory() as d:
        cap = Capturer(sink=d, flush_max_records=500, buffer_max_bytes=1 << 30)
        exchanges = [exchange(i) for i in range(n)]
        timer = time.perf_counter_ns
        lat: list[int] = []
        base: list[int] = []
        sink_list: list[Any] = []
        gc.disable()
        try:
            for e in exchanges:
                t0 = timer()
                cap.submit(e)
                lat.append(timer() - t0)
            for e in exchanges:  # reference: a bare append, same timing harness
                t0 = timer()
                sink_list.append(e)
                base.append(timer() - t0)
        finally:
            gc.enable()
        busy = cap.stats.snapshot()["flushes"]["count"]  # batches encoded during the run
        cap.close()
    print(f"append (Capturer.submit, 100% sampled, {busy} batches encoded meanwhile), n={n}")
    print(
        f"  median {pct(lat, 0.5):.2f} us  p99 {pct(lat, 0.99):.2f} us  max {max(lat) / 1e3:.0f} us"
    )
    print(
        f"  reference list.append, same harness: median {pct(base, 0.5):.2f} us, "
        f"p99 {pct(base, 0.99):.2f} us"
    )


def bench_throughput(n: int, sink: Any, label: str, workers: int = 2) -> float:
    recs = [record_1kb(i) for i in range(n)]
    size = len(orjson.dumps(recs[0]))
    buf = CaptureBuffer(
        sink,
        KeyNamer("", "bench"),
        config=BufferConfig(max_records=5000, max_buffer_bytes=1 << 31, upload_workers=workers),
    )
    cpu0, t0 = time.process_time(), time.perf_counter()
    for r in recs:
        buf.offer(r, size)
    buf.close(timeout=300)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    written = buf.stats.get("records_written")
    assert written == n, (written, n)
    print(
        f"throughput to {label}: {n} records of {size} B -> {n / wall:,.0f} records/s wall, "
        f"{n / cpu:,.0f} records/s per CPU-second ({buf.stats.get('batches_written')} objects)"
    )
    return n / wall


def bench_reference_encode(n: int) -> None:
    recs = [record_1kb(i) for i in range(n)]
    t0 = time.perf_counter()
    for start in range(0, n, 5000):
        lines = [orjson.dumps(r) for r in recs[start : start + 5000]]
        gzip.compress(b"\n".join(lines), 3)
    dt = time.perf_counter() - t0
    print(f"reference: orjson + gzip(3) alone, no buffer/sink: {n / dt:,.0f} records/s")


def bench_exchange_throughput(n: int, root: str) -> None:
    exchanges = [exchange(i) for i in range(n)]
    cap = Capturer(sink=root, flush_max_records=5000, buffer_max_bytes=1 << 31)
    t0 = time.perf_counter()
    for e in exchanges:
        cap.submit(e)
    cap.close(timeout=300)
    dt = time.perf_counter() - t0
    print(
        f"throughput, raw exchanges -> records (build + encode + gzip + local write): "
        f"{n / dt:,.0f} exchanges/s"
    )


def bench_memory_sink_down(n: int, cap_mb: int) -> None:
    """Offer n ~1 KB exchanges while the S3 endpoint refuses connections."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens on this port: every upload fails fast
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    pad = b"x" * 900
    start = rss_mb()
    cap = Capturer(
        sink="s3://bench/captures",
        s3_endpoint_url=f"http://127.0.0.1:{port}",
        s3_region="us-east-1",
        buffer_max_bytes=cap_mb << 20,
        flush_max_bytes=4 << 20,
        close_timeout_s=1,
    )
    cap.submit(exchange(0))  # load boto3 and the background threads: fixed overhead
    gc.collect()
    before = rss_mb()
    peak = before
    for i in range(n):
        e = exchange(i)
        cap.submit(
            e._replace(request_body=e.request_body + pad, request_size=len(e.request_body) + 900)
        )
        if i % 20000 == 0:
            peak = max(peak, rss_mb())
    peak = max(peak, rss_mb())
    snap = cap.stats.snapshot()
    cap.close(timeout=1)
    print(
        f"memory, sink down, no spool, cap {cap_mb} MiB: RSS {start:.0f} MiB at start, "
        f"{before:.0f} MiB with the capturer up -> peak {peak:.0f} MiB "
        f"(+{peak - before:.0f} MiB) after {n} offers; "
        f"buffered {snap['buffer_bytes'] / 2**20:.0f} MiB, "
        f"dropped buffer_full {snap['dropped']['buffer_full']}"
    )


def bench_seaweed(n: int) -> None:
    from capture.sinks.s3 import S3Sink
    from loadtest.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedServer

    os.environ.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
    with tempfile.TemporaryDirectory() as d:
        server = SeaweedServer(Path(d))
        server.start()
        try:
            server.create_bucket("bench")
            sink = S3Sink("bench", "captures", endpoint_url=server.endpoint_url, region="us-east-1")
            bench_throughput(n, sink, "SeaweedFS S3 (loopback, same 2 cores)", workers=4)
        finally:
            server.stop()


def main(flags: list[str]) -> None:
    quick = "--quick" in flags
    n = 50_000 if quick else 300_000
    print(f"# capture benchmarks ({os.cpu_count()} cores, python {sys.version.split()[0]})")
    bench_append(n)
    bench_reference_encode(n)
    with tempfile.TemporaryDirectory() as d:
        from capture.sinks.local import LocalSink

        bench_throughput(n, LocalSink(d), "local directory")
    with tempfile.TemporaryDirectory() as d:
        bench_exchange_throughput(n // 3, d)
    bench_seaweed(n // 2)
    # In a fresh process, so the RSS baseline is not inflated by the runs above.
    n = 100_000 if quick else 400_000
    subprocess.run([sys.executable, "-m", "loadtest.bench_capture", "memory", str(n)], check=True)


if __name__ == "__main__" and sys.argv[1:2] == ["memory"]:
    bench_memory_sink_down(int(sys.argv[2]), 64)
