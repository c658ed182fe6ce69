"""Payload benchmarks (issue 3): decorator overhead per call against the same
undecorated function in the same run, and adapter throughput off the request
path (record build + adapter extraction, no encoding or I/O).

    python -m loadtest payloads [--quick]
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import orjson

import capture
from capture.payloads import PayloadExtractor
from capture.record import RecordConfig, build_record
from capture.types import Exchange


def per_call_ns(fn: Callable[[Any], Any], arg: Any, n: int) -> tuple[float, float]:
    """(median, p99) nanoseconds of single calls, each timed on its own.

    Per-call timing keeps out the time a background thread holds the GIL
    between calls, which a loop mean would charge to the calls.
    """
    timer = time.perf_counter_ns
    samples = []
    gc.disable()
    try:
        for _ in range(n):
            t0 = timer()
            fn(arg)
            samples.append(timer() - t0)
    finally:
        gc.enable()
    samples.sort()
    return float(statistics.median(samples)), float(samples[int(0.99 * len(samples))])


def model(req: dict[str, Any]) -> dict[str, Any]:
    return {"score": 0.5}


def with_lookups(req: dict[str, Any]) -> dict[str, Any]:
    capture.current().lookups(user_ltv=1.0, segment="gold")
    return {"score": 0.5}


def bench_decorator(n: int) -> None:
    req = {f"f{i}": float(i) for i in range(20)}
    print(f"decorator overhead per call = decorated - undecorated, same run, n={n} calls each")
    with tempfile.TemporaryDirectory() as d:
        for fn, label in ((model, "plain"), (with_lookups, "with a lookups() call")):
            base, base99 = per_call_ns(fn, req, n)
            for rate, mode in ((1.0, "sampled"), (0.0, "not sampled")):
                cap = capture.Capturer(sink=d, sample_rate=rate, buffer_max_bytes=1 << 31)
                med, p99 = per_call_ns(cap.capture(fn), req, n)
                cap.close(timeout=120)
                print(
                    f"  {label:22s} {mode:12s}: median +{(med - base) / 1000:.2f} us "
                    f"(p99 +{(p99 - base99) / 1000:.2f} us; undecorated median "
                    f"{base / 1000:.2f} us)"
                )


def kserve_exchange() -> Exchange:
    body = orjson.dumps({"instances": [{f"f{i}": i * 1.5 for i in range(20)}]})
    return Exchange.of(
        body, b'{"predictions": [0.73]}', path="/v1/models/m:predict", latency_s=0.003
    )


def ranking_exchange(items: int = 100) -> Exchange:
    body = orjson.dumps(
        {
            "user_id": "u1",
            "context": {"hour": 13},
            "items": [{"id": f"sku-{i}", "price": i * 1.1, "cat": i % 7} for i in range(items)],
        }
    )
    resp = orjson.dumps({"scores": [((i * 37) % 100) / 100 for i in range(items)]})
    return Exchange.of(body, resp, path="/rank", latency_s=0.003)


def bench_adapter(label: str, ex: Exchange, n: int) -> None:
    config, extract = RecordConfig(), PayloadExtractor()
    t0 = time.process_time()
    for _ in range(n):
        record, req, resp = build_record(ex, config)
        extract(record, req, resp, ex)
    dt = time.process_time() - t0
    rows = len(record["rows"])
    print(
        f"adapter throughput, {label}: {n / dt:,.0f} exchanges/s per core "
        f"({rows} rows each; parse + build + extract, CPU time)"
    )


def main(flags: list[str]) -> None:
    quick = "--quick" in flags
    print("# payload benchmarks")
    bench_decorator(20_000 if quick else 100_000)
    bench_adapter("KServe v1, 1 row x 20 features", kserve_exchange(), 20_000 if quick else 100_000)
    bench_adapter("ranking, 100 items", ranking_exchange(), 3_000 if quick else 20_000)
