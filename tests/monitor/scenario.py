"""Real captures and training files for monitor tests.

Captures are written by the real ``Capturer`` (KServe v1 payloads, local
sink), so the monitor reads exactly what production writes; times are set
per exchange, and objects land in the hour partitions of those times.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from capture.capturer import Capturer
from capture.clock import ManualClock
from capture.record import new_event_id
from capture.types import Exchange

COLUMNS = ["f0", "f1", "f2"]
CATEGORIES = ["web", "ios", "android"]


def training_csv(path: Path, n: int = 5000, seed: int = 1) -> Path:
    """f0 ~ N(0, 1), f1 in CATEGORIES (50/30/20), f2 integral 0..6, plus a label."""
    rng = np.random.default_rng(seed)
    f0 = rng.normal(0.0, 1.0, n)
    f1 = rng.choice(CATEGORIES, n, p=[0.5, 0.3, 0.2])
    f2 = rng.integers(0, 7, n)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*COLUMNS, "label"])
        for i in range(n):
            w.writerow([round(float(f0[i]), 5), f1[i], int(f2[i]), int(f0[i] > 0)])
    return path


Instance = list[Any]


def normal_instances(
    n: int, seed: int, shift: float = 0.0, categories: list[str] | None = None
) -> list[Instance]:
    rng = np.random.default_rng(seed)
    cats = categories or CATEGORIES
    probs = [0.5, 0.3, 0.2] if len(cats) == 3 else None
    f0 = rng.normal(shift, 1.0, n)
    f1 = rng.choice(cats, n, p=probs)
    f2 = rng.integers(0, 7, n)
    return [[round(float(f0[i]), 5), str(f1[i]), int(f2[i])] for i in range(n)]


def write_captures(
    sink: Path | str,
    instances: list[Instance],
    start: datetime,
    seconds: float,
    *,
    model: str = "m",
    to_body: Callable[[Instance], dict[str, Any]] | None = None,
    version: str = "1",
    status: int = 200,
    **capture: Any,
) -> None:
    """One exchange per instance, spread evenly over ``seconds`` from ``start``,
    answered with ``status``; ``capture`` overrides capture settings
    (``sample_rate``, ``profile_all``, ...)."""
    body = to_body or (lambda inst: {"instances": [inst]})
    t0 = start.timestamp()
    step = seconds / max(1, len(instances))
    clock = ManualClock(t0)  # objects land in the partitions of their records' times
    options: dict[str, Any] = {"flush_max_records": 1000, **capture}
    with Capturer(sink=str(sink), model=model, clock=clock, **options) as cap:
        for i, inst in enumerate(instances):
            clock.advance(t0 + i * step - clock.time())
            req = orjson.dumps(body(inst))
            score = 1 / (1 + np.exp(-float(inst[0]))) if isinstance(inst[0], float) else 0.5
            resp = orjson.dumps({"predictions": [round(float(score), 6)]})
            cap.submit(
                Exchange(
                    event_id=new_event_id(),
                    start=t0 + i * step,
                    latency_s=0.005,
                    method="POST",
                    path=f"/v1/models/{model}:predict",
                    query="",
                    request_headers=[("content-type", "application/json")],
                    request_body=req,
                    request_size=len(req),
                    status=status,
                    response_headers=[
                        ("content-type", "application/json"),
                        ("x-model-version", version),
                    ],
                    response_body=resp,
                    response_size=len(resp),
                )
            )
