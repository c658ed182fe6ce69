"""The monitor's two read paths on one capture object of each shape (issue 5):
the Arrow path (``monitor_job.columnar``) against the row path
(``read_records`` + ``FlatColumns``), in one process, alternating.

    python -m loadtest readpaths [--quick]

Shapes: the monitor benchmark's ``scorer`` (one row per record) and
``ranker`` (10 rows per record) objects, 5,000 records each, and the proxy
benchmark's 100-item ranking exchange as the capture itself records it
(``RecordBuilder`` over ``loadtest.bench_payloads.proxied_exchange``:
the request's own ``context``, nested context, item lookups, no model
version), 1,000 records (~18 MB of JSON, below the Arrow path's 24 MiB).
Each figure is ``profile_object`` over the whole object, best of 5 passes
(process CPU time, so another job's load counts less); the table says which
path each object actually took.
"""

from __future__ import annotations

import gzip
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from loadtest import bench_monitor

REPEATS = 5


def _write(folder: Path, name: str, lines: list[bytes]) -> Any:
    from monitor_job.locations import ObjectRef

    path = folder / name
    path.write_bytes(gzip.compress(b"\n".join(lines) + b"\n", 3))
    return ObjectRef(location=str(folder), key=name, size=path.stat().st_size, kind="records")


def _bench_records(model: str, count: int) -> list[bytes]:
    step = 86400.0 / count
    return [orjson.dumps(r) for r in bench_monitor._records(model, 0, count, 0, step)]


def _toy_ranking_records(count: int) -> list[bytes]:
    from capture.capturer import RecordBuilder
    from capture.encoding import dumps
    from capture.settings import CaptureSettings
    from capture.stats import CaptureStats
    from loadtest.bench_payloads import proxied_exchange

    builder = RecordBuilder(CaptureSettings(model="toy"), stats=CaptureStats())
    out = []
    for i in range(count):
        record = builder.process(proxied_exchange(i, "rank"))
        assert record is not None
        out.append(dumps(record))
    return out


def _best(fn: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(REPEATS):
        t0 = time.process_time()
        result = fn()
        best = min(best, time.process_time() - t0)
    return best, result


def main(flags: list[str]) -> None:
    from monitor_job.execute import Partial, profile_object

    quick = "--quick" in flags
    scale = 10 if quick else 1
    shapes = [
        ("scorer (1 row per record)", "scorer", 5_000 // scale),
        ("ranker (10 rows per record)", "ranker", 5_000 // scale),
        ("toy ranking model (100 items, item lookups)", "toy", 1_000 // scale),
    ]
    print(
        "# monitor read paths: profile_object over one object, best of "
        f"{REPEATS} (process CPU time), Arrow path against the row path"
    )
    print("| object | records | rows | Arrow path rows/s | row path rows/s | ratio | read by |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="modeltap-bench-readpaths-") as tmp:
        folder = Path(tmp)
        for label, shape, count in shapes:
            lines = _toy_ranking_records(count) if shape == "toy" else _bench_records(shape, count)
            ref = _write(folder, f"{shape}.jsonl.gz", lines)
            fast_s, fast = _best(lambda ref=ref: profile_object(ref, None, None, arrow=True))
            slow_s, slow = _best(lambda ref=ref: profile_object(ref, None, None, arrow=False))
            part, rows = Partial.from_bytes(fast), Partial.from_bytes(slow).whole.rows
            read = "Arrow" if part.arrow_objects else f"row path ({', '.join(part.fallbacks)})"
            print(
                f"| {label} | {count:,} | {rows:,} | {rows / fast_s:,.0f} | "
                f"{rows / slow_s:,.0f} | {slow_s / fast_s:.2f} | {read} |"
            )
