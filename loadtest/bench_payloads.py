"""Payload benchmarks (issue 3): decorator overhead per call against the same
undecorated function in the same run, adapter throughput off the request
path (record build + adapter extraction, no encoding or I/O), and the CPU a
record costs the proxy's encoder helper.

    python -m loadtest payloads [--quick]

The helper's cost per record (``bench_helper_batch``) is what
``capture.offload``'s helper process does with a batch: unpack the exchanges
the proxy packed, build each record (``RecordBuilder``: record, payload
adapter, redaction), tally its predictions (``server.metrics.PredictionTally``)
and encode it (JSON, gzip), for the proxy benchmark's two payloads (a
one-row ``predict`` and a 100-item ``rank`` with its lookups header and
``_modeltap`` field, as ``loadtest.toy_model`` answers). Process CPU time,
the best of 7 passes over one batch, with zlib's deflate in the same run as
the reference for ``capture.compression``'s ISA-L. Beside it, the C calls
alone (``helper_floor_us``): what building the same records would still
cost if none of the Python between those calls ran.
"""

from __future__ import annotations

import gc
import marshal
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import orjson

import capture
from capture import compression
from capture.buffer import encode_items
from capture.capturer import RecordBuilder
from capture.offload import pack, pack_one, unpack
from capture.payloads import PayloadExtractor
from capture.record import RecordConfig, build_record
from capture.settings import CaptureSettings
from capture.stats import CaptureStats
from capture.types import Exchange
from loadtest.bench_proxy import BODY, PATH, RANK_BODY, RANK_PATH
from server.metrics import PredictionTally


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


def proxied_exchange(i: int, payload: str) -> Exchange:
    """The ``i``-th exchange of the proxy benchmark's ``payload``, as the proxy
    hands it to the capture (headers as wrk and the toy model send them)."""
    event_id = f"0193{i:028x}"
    if payload == "predict":
        path, body = PATH, BODY.encode()
        resp = b'{"predictions": [0.731]}'
        resp_headers = [("x-model-version", "1")]
    else:
        path, body = RANK_PATH, RANK_BODY.encode()
        items = orjson.loads(body)["items"]
        scores = [round(((k * 37) % 100) / 100 + 0.012, 6) for k in range(len(items))]
        lookups = {"ltv": 120.5, "tier": "gold"}
        resp = orjson.dumps({"scores": scores, "_modeltap": {"lookups": lookups}})
        stock = {str(it["id"]): {"stock": k % 4} for k, it in enumerate(items)}
        resp_headers = [("x-modeltap-lookups", orjson.dumps({"items": stock}).decode())]
    return Exchange(
        event_id,
        1795388922.123 + i * 1e-4,
        0.0012,
        "POST",
        path,
        "",
        [
            ("host", "127.0.0.1:40123"),
            ("content-length", str(len(body))),
            ("content-type", "application/json"),
        ],
        body,
        len(body),
        200,
        [
            ("date", "Mon, 23 Nov 2026 15:00:00 GMT"),
            ("server", "uvicorn"),
            ("content-length", str(len(resp))),
            ("content-type", "application/json"),
            *resp_headers,
            ("x-request-id", event_id),
        ],
        resp,
        len(resp),
    )


def helper_batch_us(payload: str, n: int, repeats: int = 7) -> float:
    """CPU µs per record of the helper's work on ``n`` exchanges (best of ``repeats``)."""
    packed = pack([pack_one(proxied_exchange(i, payload)) for i in range(n)])
    assert packed is not None
    settings = CaptureSettings(model="toy")
    builder = RecordBuilder(settings, stats=CaptureStats())
    bounds = [0.1 * k for k in range(11)] + [math.inf]  # as prometheus_client's +Inf bucket
    tally = PredictionTally(bounds, bounds)

    def process(item: Any) -> dict[str, Any] | None:
        record = builder.process(item)
        if record is not None:
            tally.add(record)
        return record

    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        groups, failed = encode_items(unpack(packed), process, settings.gzip_level, "toy")
        best = min(best, time.process_time() - t0)
        assert not failed and sum(count for _, count in groups.values()) == n
        tally.take()
    return best / n * 1e6


def helper_floor_us(payload: str, n: int, repeats: int = 7) -> float:
    """CPU µs per record of the C calls alone in ``helper_batch_us``'s work:
    ``marshal.loads`` of each packed exchange, ``orjson.loads`` of both
    bodies, ``orjson.dumps`` of a record of the batch's shape and gzip.
    No record is built: this is the floor that a native record builder,
    calling the same libraries, could not go below."""
    packed = pack([pack_one(proxied_exchange(i, payload)) for i in range(n)])
    assert packed is not None
    record = RecordBuilder(CaptureSettings(model="toy"), stats=CaptureStats()).process(
        proxied_exchange(0, payload)
    )
    request_body, response_body = (
        Exchange._fields.index("request_body"),
        Exchange._fields.index("response_body"),
    )
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        z = compression.gzip_compressor(CaptureSettings().gzip_level)
        pending: list[bytes] = []
        for part in marshal.loads(packed):
            for row in marshal.loads(part):
                fields = marshal.loads(row)[1]
                orjson.loads(fields[request_body])
                orjson.loads(fields[response_body])
                pending.append(orjson.dumps(record))
                if len(pending) >= 64:
                    pending.append(b"")
                    z.compress(b"\n".join(pending))
                    pending = []
        z.flush()
        best = min(best, time.process_time() - t0)
    return best / n * 1e6


def bench_helper_batch(quick: bool) -> None:
    print(
        "encoder helper CPU per record: unpack + build + tally + JSON + gzip over one batch, "
        "best of 7 passes (process time)"
    )
    for payload, n in (("predict", 2_000 if quick else 10_000), ("rank", 200 if quick else 1_000)):
        fast = helper_batch_us(payload, n)
        saved = compression._isal
        compression._isal = None  # the same run's reference: zlib's deflate
        try:
            reference = helper_batch_us(payload, n)
        finally:
            compression._isal = saved
        floor = helper_floor_us(payload, n)
        print(
            f"  {payload:8s}: {fast:,.1f} us/record with {compression.backend()} "
            f"(zlib in the same run: {reference:,.1f}; the C calls alone: {floor:,.1f}; "
            f"{n:,} records a batch)"
        )


def main(flags: list[str]) -> None:
    quick = "--quick" in flags
    print("# payload benchmarks")
    bench_decorator(20_000 if quick else 100_000)
    bench_adapter("KServe v1, 1 row x 20 features", kserve_exchange(), 20_000 if quick else 100_000)
    bench_adapter("ranking, 100 items", ranking_exchange(), 3_000 if quick else 20_000)
    bench_helper_batch(quick)
