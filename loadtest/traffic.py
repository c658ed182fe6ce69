"""Client traffic for the toy model behind the proxy, with a drift, and its labels.

The features and outcomes are the demo's (``capture.demo``): ``f0`` shifts by
1.5 sigma after ``drift_after`` requests, and the labels drift with it, so the
monitor should find ``f0`` drifted and accuracy below the holdout's. Each
label is posted back by the ``X-Request-ID`` the proxy returned, as a real
client would.

    python -m loadtest.traffic --proxy http://127.0.0.1:8080 --requests 2000 --token T
    python -m loadtest.traffic --proxy http://proxy:8080 --rate 10 --drift-after 9000 \\
        --token T          # no --requests: runs until stopped (the compose stack)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from capture.demo import instance, true_label

MODEL = "toy"
PREDICT_PATH = f"/v1/models/{MODEL}:predict"
LABELS_PATH = "/_modeltap/ground-truth"


@dataclass
class Traffic:
    """What was sent so far: answered requests, failures, labels not yet posted."""

    sent: int = 0
    failed: int = 0
    labels_posted: int = 0
    pending: list[dict[str, Any]] = field(default_factory=list)


def send(
    client: httpx.Client,
    traffic: Traffic,
    n: int,
    *,
    drift_after: int,
    rng: random.Random,
    rate: float | None = None,
) -> None:
    """``n`` predict requests; a label per answered one goes to ``traffic.pending``."""
    began = time.monotonic()
    for k in range(n):
        i = traffic.sent  # failures (a proxy still starting) do not move the drift
        drift = i >= drift_after
        features = instance(i, drift, rng)
        try:
            r = client.post(PREDICT_PATH, json={"instances": [features]})
        except httpx.HTTPError:
            r = None
        if r is None or r.status_code != 200:
            traffic.failed += 1
        else:
            traffic.sent += 1
            label = true_label(float(features[0]), drift, rng)
            traffic.pending.append({"event_id": r.headers["x-request-id"], "label": label})
        if rate:
            time.sleep(max(0.0, began + (k + 1) / rate - time.monotonic()))


def post_labels(client: httpx.Client, traffic: Traffic, token: str, batch: int = 1000) -> None:
    """Post the pending labels in JSONL batches; raises on a refused batch."""
    while traffic.pending:
        chunk, traffic.pending = traffic.pending[:batch], traffic.pending[batch:]
        body = "\n".join(json.dumps(entry) for entry in chunk)
        r = client.post(LABELS_PATH, content=body, headers={"Authorization": f"Bearer {token}"})
        r.raise_for_status()
        traffic.labels_posted += int(r.json()["accepted"])


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(prog="python -m loadtest.traffic", description=doc.split("\n")[0])
    ap.add_argument("--proxy", required=True, help="the proxy's base URL")
    ap.add_argument("--requests", type=int, help="stop after this many (default: run forever)")
    ap.add_argument("--drift-after", type=int, help="requests before the drift (default: half)")
    ap.add_argument("--rate", type=float, help="requests per second (default: as fast as it can)")
    ap.add_argument("--token", default=os.environ.get("MODELTAP_ADMIN_TOKEN"), help="admin token")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    if args.requests is None and args.drift_after is None:
        ap.error("--drift-after is needed without --requests")
    drift_after = args.drift_after if args.drift_after is not None else args.requests // 2
    rng, traffic = random.Random(args.seed), Traffic()
    chunk = 100
    with httpx.Client(base_url=args.proxy, timeout=30) as client:
        for _ in itertools.count() if args.requests is None else range(1):
            n = chunk if args.requests is None else args.requests
            send(client, traffic, n, drift_after=drift_after, rng=rng, rate=args.rate)
            if args.token:
                post_labels(client, traffic, args.token)
            print(
                f"sent {traffic.sent}, failed {traffic.failed}, labels {traffic.labels_posted}",
                flush=True,
            )
    return 0 if traffic.sent else 1


if __name__ == "__main__":
    sys.exit(main())
