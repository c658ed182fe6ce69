"""The main job on the embedded default: capture a burst of model traffic to
a local directory, no cloud, show what landed, then run the monitor on it.

    python -m capture.demo [--sink ./captures] [--requests 2000] [--sample-rate 1.0]
                           [--no-monitor] [--monitor-out ./monitor-demo]

It plays a toy KServe-v1 model (three features, a score) whose input drifts
halfway through, hands every exchange to a ``Capturer`` exactly as the proxy
does (with full-traffic profiles on), closes it (flushing), then lists the
objects written and prints one record. Settings also come from
``MODELTAP_*`` variables. Then, when the monitor's libraries are installed
(``modeltap[monitor]``), it writes a training CSV of the undrifted
distribution, runs ``modeltap-monitor baseline`` and ``run`` over the
captures, and prints where the report is: the planted drift on ``f0`` should
be the violation it finds.
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
    ap.add_argument("--no-monitor", action="store_true", help="capture only")
    ap.add_argument("--monitor-out", default="./monitor-demo", help="monitor outputs")
    args = ap.parse_args(argv)
    overrides: dict[str, Any] = {"model": "demo", "flush_max_records": 500, "profile_all": True}
    if args.sink:
        overrides["sink"] = args.sink
    if args.sample_rate is not None:
        overrides["sample_rate"] = args.sample_rate
    rng = random.Random(7)
    began = time.time()
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
    ok = snap["records_written"] == snap["kept"]
    if args.no_monitor or not root.is_dir():
        return 0 if ok else 1
    return _monitor(root, Path(args.monitor_out), began, rng) if ok else 1


def _monitor(captures: Path, out: Path, began: float, rng: random.Random) -> int:
    """Baseline from undrifted training data, then a run over the captures."""
    try:
        from monitor_job.cli import main as monitor
    except ImportError as exc:  # the capture alone is installed
        print(f"monitor skipped ({exc}); install modeltap[monitor] to run it")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    train = out / "train.csv"
    with train.open("w") as fh:
        fh.write("f0,f1,f2\n")
        for i in range(5000):
            fh.write(f"{rng.gauss(0.0, 1.0):.4f},{rng.choice(['web', 'ios', 'android'])},{i % 7}\n")
    baseline = out / "baseline"
    if monitor(["baseline", "--data", str(train), "--out", str(baseline)]) != 0:
        return 1
    start = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(began))
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    report = out / "report"
    window = ["--start", start, "--end", end, "--no-previous", "--model", "demo"]
    where = ["--captures", str(captures), "--baseline", str(baseline), "--out", str(report)]
    code = monitor(["run", *where, *window])
    print(f"monitor exit {code} (1 = violations found: the drift planted halfway)")
    print(f"report: {(report / 'report.html').resolve()}")
    return 0 if code in (0, 1) else 1


if __name__ == "__main__":
    sys.exit(main())
