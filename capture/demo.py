"""The main job on the embedded default: capture a burst of model traffic to
a local directory, no cloud, and show what landed.

    python -m capture.demo [--sink ./captures] [--requests 2000] [--sample-rate 1.0]

It plays a toy KServe-v1 model (three features, a score) whose input drifts
halfway through, hands every exchange to a ``Capturer`` exactly as the proxy
does, closes it (flushing), then lists the objects written and prints one
record. Settings also come from ``MODELTAP_*`` variables.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

from capture.capturer import Capturer
from capture.record import new_event_id
from capture.types import Exchange


def _exchange(i: int, drift: bool, rng: random.Random) -> Exchange:
    shift = 1.5 if drift else 0.0
    features: list[Any] = [
        round(rng.gauss(shift, 1.0), 4),
        rng.choice(["web", "ios", "android"]),
        i % 7,
    ]
    score = 1 / (1 + math.exp(-float(features[0])))
    req = json.dumps({"instances": [features]}).encode()
    resp = json.dumps({"predictions": [round(score, 6)]}).encode()
    latency = rng.uniform(0.002, 0.02)
    return Exchange(
        event_id=new_event_id(),
        start=time.time(),
        latency_s=latency,
        method="POST",
        path="/v1/models/demo:predict",
        query="",
        request_headers=[("content-type", "application/json"), ("authorization", "Bearer s3cr3t")],
        request_body=req,
        request_size=len(req),
        status=200,
        response_headers=[("content-type", "application/json"), ("x-model-version", "1")],
        response_body=resp,
        response_size=len(resp),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m capture.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--sink", default=None, help="sink URL or directory (default ./captures)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--sample-rate", type=float, default=None)
    args = ap.parse_args(argv)
    overrides: dict[str, Any] = {"model": "demo", "flush_max_records": 500}
    if args.sink:
        overrides["sink"] = args.sink
    if args.sample_rate is not None:
        overrides["sample_rate"] = args.sample_rate
    rng = random.Random(7)
    with Capturer.from_env(None, **overrides) as cap:
        for i in range(args.requests):
            cap.submit(_exchange(i, drift=i >= args.requests // 2, rng=rng))
    snap = cap.stats.snapshot()
    print(
        f"offered {snap['offered']}, kept {snap['kept']}, sampled out {snap['sampled_out']}, "
        f"written {snap['records_written']} in {snap['batches_written']} objects, "
        f"dropped {sum(snap['dropped'].values())}"
    )
    print(f"sink: {cap.sink.describe()}")
    root = Path(cap.sink.describe().removeprefix("file://"))
    objects = sorted(root.rglob("*.jsonl.gz")) if root.is_dir() else []
    for path in objects[-3:]:
        print(f"  {path}")
    if objects:
        first = gzip.decompress(objects[-1].read_bytes()).splitlines()[0]
        print("a record:", json.dumps(json.loads(first), indent=1)[:1200])
    return 0 if snap["records_written"] == snap["kept"] else 1


if __name__ == "__main__":
    sys.exit(main())
