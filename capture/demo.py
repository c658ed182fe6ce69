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
be a violation it finds. Labels for every exchange are ingested as the
proxy's ground-truth endpoint would, with a concept drift in the second half,
so the report's "Model quality" section shows accuracy below the holdout's.
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

#: The toy model's feature columns, in instance order.
COLUMNS = ("f0", "f1", "f2")
CHANNELS = ("web", "ios", "android")


def instance(i: int, drift: bool, rng: random.Random) -> list[Any]:
    """The ``i``-th request's features: ``f0`` ~ N(0, 1), or N(1.5, 1) once drifted."""
    shift = 1.5 if drift else 0.0
    return [round(rng.gauss(shift, 1.0), 4), rng.choice(CHANNELS), i % 7]


def true_label(x: float, drift: bool, rng: random.Random) -> int:
    """The outcome of a request whose ``f0`` is ``x``: Bernoulli(the model's score)
    before the drift; after it the world moved too, and the shifted inputs mean
    less than the model thinks (it over-predicts positives), so its quality drops."""
    logit = x - 3.0 if drift else x
    return int(rng.random() < 1 / (1 + math.exp(-logit)))


def write_training(out: Path, rng: random.Random, rows: int = 5000) -> tuple[Path, Path]:
    """Undrifted training data (``train.csv``, with ``label``) and the model's
    holdout accuracy on it (``holdout.json``), for ``modeltap-monitor baseline``."""
    out.mkdir(parents=True, exist_ok=True)
    train = out / "train.csv"
    right = 0
    with train.open("w") as fh:
        fh.write(",".join(COLUMNS) + ",label\n")
        for i in range(rows):
            x = rng.gauss(0.0, 1.0)
            y = int(rng.random() < 1 / (1 + math.exp(-x)))
            right += int((x >= 0) == bool(y))  # the model's call: score >= 0.5
            fh.write(f"{x:.4f},{rng.choice(CHANNELS)},{i % 7},{y}\n")
    holdout = out / "holdout.json"
    holdout.write_text(json.dumps({"accuracy": round(right / rows, 4)}))
    return train, holdout


def _exchange(i: int, drift: bool, rng: random.Random) -> Exchange:
    features = instance(i, drift, rng)
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


def _outcome(exchange: Exchange, drift: bool, rng: random.Random) -> dict[str, Any]:
    x = json.loads(exchange.request_body)["instances"][0][0]
    return {"event_id": exchange.event_id, "label": true_label(x, drift, rng)}


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
    outcomes: list[dict[str, Any]] = []
    with Capturer.from_env(None, **overrides) as cap:
        for i in range(args.requests):
            drift = i >= args.requests // 2
            exchange = _exchange(i, drift=drift, rng=rng)
            cap.submit(exchange)
            outcomes.append(_outcome(exchange, drift, rng))
        # Later, the outcomes are known: labels by event id, as a client would
        # post them to the proxy's /_modeltap/ground-truth.
        cap.ingest_labels("\n".join(json.dumps(o) for o in outcomes).encode())
    snap = cap.stats.snapshot()
    n_labels = snap["labels_accepted"]  # labels travel with the records: counted apart here
    print(
        f"offered {snap['offered'] - n_labels}, kept {snap['kept'] - n_labels}, "
        f"sampled out {snap['sampled_out']}, written {snap['records_written'] - n_labels} records "
        f"and {n_labels} labels in {snap['batches_written']} objects, "
        f"dropped {sum(snap['dropped'].values())}"
    )
    print(f"sink: {cap.sink.describe()}")
    root = Path(cap.sink.describe().removeprefix("file://"))
    found = sorted(root.rglob("*.jsonl.gz")) if root.is_dir() else []
    objects = [p for p in found if "ground_truth" not in p.relative_to(root).parts]
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
    train, holdout = write_training(out, rng)
    baseline = out / "baseline"
    base_args = ["--data", str(train), "--out", str(baseline), "--label", "label"]
    if monitor(["baseline", *base_args, "--holdout-metrics", str(holdout)]) != 0:
        return 1
    start = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(began))
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 60))
    report = out / "report"
    window = ["--start", start, "--end", end, "--no-previous", "--model", "demo"]
    where = ["--captures", str(captures), "--baseline", str(baseline), "--out", str(report)]
    code = monitor(["run", *where, *window])
    print(
        f"monitor exit {code} "
        "(1 = violations found: the drift planted halfway, in f0 and in accuracy)"
    )
    print(f"report: {(report / 'report.html').resolve()}")
    return 0 if code in (0, 1) else 1


if __name__ == "__main__":
    sys.exit(main())
