"""Monitor job benchmark (issue 5): ``modeltap-monitor run`` end to end over
gzip JSONL captures on local disk, against a baseline that ``modeltap-monitor
baseline`` built from a training CSV of the same columns.

    python -m loadtest monitor [--quick] [--full] [--rows=N] [--train-rows=N] [--no-fixed]
                               [--pad-reference]

Two capture sets, 1,000,000 flattened rows each (10,000,000 with ``--full``,
20,000 with ``--quick``), written in the capture's record format (schema 1,
request and response bodies included, as ``capture.record`` writes them) and
key layout ``{model}/dt=2026-11-02/hour=HH/{host}-{pid}-{seq}.jsonl.gz``,
5,000 records per object, spread over the 24 hours of 2026-11-02:

- ``scorer``: KServe v1, one row per record: 12 features (6 float, 3 int,
  3 string of 5, 50 and 1,000 values), ``prediction``, ``context.user_tier``,
  ``lookups.user_ltv``, ``model.version``: 16 columns;
- ``ranker``: ranking, 10 rows per record: ``item_id`` (10,000 items),
  ``position``, ``score``, ``rank``, 3 item features, the request's
  ``context.user_id`` (200,000 users), ``context.hour`` and the ranking
  aggregates, ``model.version``: 14 columns.

Each run is ``monitor_job.cli.main(["run", ...])`` in a child process (the
window is the day, so the previous window is listed and found empty); its
wall and CPU time come from ``os.wait4``, its peak RSS from its own VmHWM
(a child's ``ru_maxrss`` would include ours). rows/s counts flattened rows
over the child's whole life (imports, baseline load, listing, reading,
profiling, checks, report.html with its plots). A run over 1,000 rows of the
same set gives that fixed cost apart.

Generated data is cached under ``.bench/`` (git-ignored; ``MODELTAP_BENCH_DIR``
moves it) and reused: ``monitor-captures-<rows>/`` (written by a process
pool, ``os.cpu_count()`` workers) and ``monitor-train-<model>-<rows>.csv``
(200,000 rows; ``--train-rows``) with the baseline built from it.
``--no-fixed`` skips the 1,000-row runs.

``--pad-reference`` then runs each set twice more, one after the other, with and
without the malloc pad (``monitor_job.malloc``; ``MODELTAP_MONITOR_MALLOC_PAD=0``
for the reference), and prints the pairs.
"""

from __future__ import annotations

import csv
import gzip
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(os.environ.get("MODELTAP_BENCH_DIR") or ROOT / ".bench")
DAY = "2026-11-02"
DAY_START = 1793577600.0  # 2026-11-02T00:00:00Z
RECORDS_PER_OBJECT = 5000
TRAIN_ROWS = 200_000
TARGET_ROWS_PER_S = 200_000
TARGET_RSS_MB = 300  # for 10M rows
MODELS = {"scorer": 1, "ranker": 10}  # rows per record

DEVICES = np.array(["web", "ios", "android", "tv", "partner"])
DEVICE_P = np.array([0.45, 0.25, 0.2, 0.07, 0.03])
COUNTRIES = np.array([f"c{i:02d}" for i in range(50)])
CATEGORIES = np.array([f"cat-{i:04d}" for i in range(1000)])
TIERS = np.array(["gold", "silver", "bronze"])


def _zipf_pick(rng: np.random.Generator, vocab: np.ndarray, n: int) -> np.ndarray:
    return vocab[(rng.zipf(1.3, n) - 1) % vocab.size]


# -- column values (shared by the captures and the training CSVs) -------------


def scorer_columns(rng: np.random.Generator, n: int) -> dict[str, Any]:
    income = np.round(rng.lognormal(10.5, 0.6, n), 2)
    score_a = np.round(rng.normal(0.0, 1.0, n), 5)
    return {
        "age": rng.integers(18, 90, n).tolist(),
        "income": income.tolist(),
        "tenure_days": rng.integers(0, 3650, n).tolist(),
        "score_a": score_a.tolist(),
        "score_b": np.round(rng.beta(2.0, 5.0, n), 5).tolist(),
        "ratio": np.round(rng.random(n), 4).tolist(),
        "clicks_7d": rng.poisson(4.0, n).tolist(),
        "amount": np.round(rng.lognormal(3.0, 1.0, n), 2).tolist(),
        "session_s": np.round(rng.exponential(90.0, n), 1).tolist(),
        "device": rng.choice(DEVICES, n, p=DEVICE_P).tolist(),
        "country": _zipf_pick(rng, COUNTRIES, n).tolist(),
        "category": _zipf_pick(rng, CATEGORIES, n).tolist(),
        "user_tier": rng.choice(TIERS, n, p=[0.1, 0.3, 0.6]).tolist(),
        "user_ltv": np.round(income / 50 + rng.normal(0, 20, n), 2).tolist(),
        "prediction": np.round(1 / (1 + np.exp(-score_a)), 6).tolist(),
    }


SCORER_FEATURES = [
    "age",
    "income",
    "tenure_days",
    "score_a",
    "score_b",
    "ratio",
    "clicks_7d",
    "amount",
    "session_s",
    "device",
    "country",
    "category",
]


def ranker_columns(rng: np.random.Generator, n_lists: int, k: int = 10) -> dict[str, Any]:
    n = n_lists * k
    item = rng.zipf(1.2, n) % 10_000
    scores = np.round(rng.random(n), 6)
    return {
        "user_id": [f"u{u:06d}" for u in rng.integers(0, 200_000, n_lists).tolist()],
        "hour": rng.integers(0, 24, n_lists).tolist(),
        "item_id": [f"sku-{i:05d}" for i in item.tolist()],
        "price": np.round(1.0 + (item % 500) * 0.37 + rng.random(n), 2).tolist(),
        "cat": (item % 40).tolist(),
        "popularity": np.round(1.0 / (1.0 + item / 100.0), 5).tolist(),
        "score": scores.tolist(),
    }


# -- captures ---------------------------------------------------------------


def _body(data: Any) -> tuple[dict[str, Any], int]:
    size = len(orjson.dumps(data))
    return {"size": size, "encoding": "json", "data": data}, size


def _record(
    model: str,
    t: float,
    event: str,
    req: Any,
    resp: Any,
    rows: list[Any],
    context: Any,
    lookups: Any,
) -> dict[str, Any]:
    req_body, req_size = _body(req)
    resp_body, resp_size = _body(resp)
    ms = int(t * 1000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
    return {
        "schema": 1,
        "event_id": event,
        "time": stamp,
        "model": {"name": model, "version": "7", "variant": None},
        "request": {
            "method": "POST",
            "path": f"/v1/models/{model}:predict",
            "query": "",
            "headers": {"content-type": "application/json"},
            "content_type": "application/json",
            "size": req_size,
            "body": req_body,
        },
        "response": {
            "status": 200,
            "headers": {"content-type": "application/json", "x-model-version": "7"},
            "content_type": "application/json",
            "size": resp_size,
            "body": resp_body,
        },
        "status": 200,
        "latency_ms": 4.2,
        "error": None,
        "context": context,
        "lookups": lookups,
        "rows": rows,
        "parse": {"adapter": "kserve_v1" if model == "scorer" else "ranking", "error": None},
        "sampling": {"rate": 1.0, "reason": "sampled"},
    }


def _records(model: str, index: int, count: int, first: int, step: float) -> list[dict[str, Any]]:
    """Records ``first .. first+count`` of ``model``, deterministic per object."""
    rng = np.random.default_rng([17, MODELS[model], index])
    out = []
    if model == "scorer":
        cols = scorer_columns(rng, count)
        names = list(cols)
        for i, values in enumerate(zip(*cols.values(), strict=True)):
            row = dict(zip(names, values, strict=True))
            feats = {k: row[k] for k in SCORER_FEATURES}
            pred = row["prediction"]
            out.append(
                _record(
                    model,
                    DAY_START + (first + i) * step,
                    f"{index:08x}-{i:08x}",
                    {"instances": [feats]},
                    {"predictions": [pred]},
                    [{"features": feats, "prediction": pred}],
                    {"user_tier": row["user_tier"]},
                    {"user_ltv": row["user_ltv"]},
                )
            )
        return out
    k = MODELS[model]
    cols = ranker_columns(rng, count, k)
    for i in range(count):
        items = [
            {
                "item_id": cols["item_id"][j],
                "price": cols["price"][j],
                "cat": cols["cat"][j],
                "popularity": cols["popularity"][j],
            }
            for j in range(i * k, (i + 1) * k)
        ]
        scores = cols["score"][i * k : (i + 1) * k]
        order = sorted(range(k), key=lambda j: -scores[j])
        rows: list[dict[str, Any]] = [
            {
                "position": j,
                "item_id": it["item_id"],
                "features": {
                    "price": it["price"],
                    "cat": it["cat"],
                    "popularity": it["popularity"],
                },
                "score": scores[j],
            }
            for j, it in enumerate(items)
        ]
        for rank, j in enumerate(order, 1):
            rows[j]["rank"] = rank
        top = sorted(scores, reverse=True)
        context = {
            "user_id": cols["user_id"][i],
            "hour": cols["hour"][i],
            "list_length": k,
            "top1_score": top[0],
            "top1_margin": round(top[0] - top[1], 6),
        }
        req = {"user_id": context["user_id"], "hour": context["hour"], "items": items}
        out.append(
            _record(
                model,
                DAY_START + (first + i) * step,
                f"{index:08x}-{i:08x}",
                req,
                {"scores": scores},
                rows,
                context,
                {},
            )
        )
    return out


def _write_object(args: tuple[str, str, int, int, int, float]) -> int:
    root, model, index, count, first, step = args
    records = _records(model, index, count, first, step)
    hour = int((DAY_START + first * step - DAY_START) // 3600)
    folder = Path(root) / model / f"dt={DAY}" / f"hour={hour:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    data = b"\n".join(map(orjson.dumps, records)) + b"\n"
    path = folder / f"bench-1-1793577600000_{index:06d}.jsonl.gz"
    path.write_bytes(gzip.compress(data, 3))
    return len(records)


def captures(rows: int) -> Path:
    """The cached capture set of ``rows`` flattened rows per model (written on first use)."""
    root = BENCH_DIR / f"monitor-captures-{rows}"
    if (root / ".complete").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    tmp = BENCH_DIR / f".monitor-captures-{rows}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tasks = []
    for model, per in MODELS.items():
        records = rows // per
        step = 86400.0 / records
        for index, first in enumerate(range(0, records, RECORDS_PER_OBJECT)):
            count = min(RECORDS_PER_OBJECT, records - first)
            tasks.append((str(tmp), model, index, count, first, step))
    t0 = time.perf_counter()
    workers = os.cpu_count() or 1
    if len(tasks) > 1 and workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            written = sum(pool.map(_write_object, tasks, chunksize=1))
    else:
        written = sum(map(_write_object, tasks))
    (tmp / ".complete").write_text(f"{written} records\n")
    tmp.rename(root)
    print(
        f"  (generated {root}: {written:,} records in "
        f"{time.perf_counter() - t0:.0f} s, {workers} processes)"
    )
    return root


def training(model: str, rows: int) -> Path:
    """A training CSV of the model's columns (cached), ``rows`` rows."""
    path = BENCH_DIR / f"monitor-train-{model}-{rows}.csv"
    if path.exists():
        return path
    rng = np.random.default_rng([23, MODELS[model]])
    if model == "scorer":
        cols = scorer_columns(rng, rows)
        cols["label"] = [int(p > 0.5) for p in cols["prediction"]]
    else:
        k = MODELS[model]
        lists = rows // k
        raw = ranker_columns(rng, lists, k)
        cols = {
            "user_id": [u for u in raw["user_id"] for _ in range(k)],
            "hour": [h for h in raw["hour"] for _ in range(k)],
            "position": [j for _ in range(lists) for j in range(k)],
            **{c: raw[c] for c in ("item_id", "price", "cat", "popularity", "score")},
        }
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        w.writerows(zip(*cols.values(), strict=True))
    tmp.replace(path)
    return path


# -- runs -----------------------------------------------------------------


# The child writes its own peak RSS (VmHWM) on the way out: ``ru_maxrss`` from
# wait4/RUSAGE_CHILDREN would include this process's RSS, which Linux carries
# into a child's high-water mark across fork and exec.
_CHILD = """
import logging, sys
from monitor_job.cli import main
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
logging.getLogger("monitor_job.execute").setLevel(logging.INFO)  # how objects were read
try:
    code = main({argv!r})
finally:
    with open("/proc/self/status") as fh:
        hwm = next(line.split()[1] for line in fh if line.startswith("VmHWM:"))
    with open({hwm_file!r}, "w") as out:
        out.write(hwm)
sys.exit(code)
"""


def run_cli(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> tuple[int, float, float, float]:
    """``monitor_job.cli.main(argv)`` in a child (``env`` added to ours): (exit
    code, wall s, CPU s, peak RSS MB)."""
    hwm_file = log.with_suffix(".hwm")
    code = _CHILD.format(argv=argv, hwm_file=str(hwm_file))
    with log.open("wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss = int(hwm_file.read_text()) / 1024 if hwm_file.exists() else float("nan")
    return proc.returncode, wall, usage.ru_utime + usage.ru_stime, rss


def baseline(model: str, rows: int, work: Path) -> Path:
    """The baseline built by ``modeltap-monitor baseline`` from the training CSV (cached)."""
    out = BENCH_DIR / f"monitor-baseline-{model}-{rows}"
    if (out / "constraints.json").exists():
        return out
    argv = ["baseline", "--data", str(training(model, rows)), "--out", str(out)]
    if model == "scorer":
        argv += ["--label", "label"]
    log = work / f"baseline-{model}.log"
    rc, wall, _, rss = run_cli(argv, log)
    if rc != 0:
        raise RuntimeError(f"baseline for {model} failed:\n{log.read_text()[-3000:]}")
    print(f"  (baseline {model}: {rows:,} CSV rows in {wall:.1f} s, peak RSS {rss:.0f} MB)")
    return out


def monitor_run(
    model: str, captures_root: Path, base: Path, work: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    out = work / f"out-{model}-{captures_root.name}"
    log = work / f"run-{model}-{captures_root.name}.log"
    argv = [
        "run",
        "--captures",
        str(captures_root),
        "--baseline",
        str(base),
        "--out",
        str(out),
        "--model",
        model,
        "--start",
        f"{DAY}T00:00:00Z",
        "--window",
        "1d",
        "--no-progress",
    ]
    rc, wall, cpu, rss = run_cli(argv, log, env)
    if rc not in (0, 1):
        raise RuntimeError(f"monitor run failed ({rc}):\n{log.read_text()[-3000:]}")
    stats = orjson.loads((out / "statistics.json").read_bytes())
    summary = stats["modeltap"]["summary"]
    read = [line for line in log.read_text().splitlines() if "read by the Arrow path" in line]
    return {
        "read": read[0].split(": ", 2)[-1] if read else "row path only",
        "rc": rc,
        "wall": wall,
        "cpu": cpu,
        "rss": rss,
        "rows": summary["rows"],
        "records": summary["records"],
        "objects": summary["objects"],
        "violations": summary["violations"],
        "columns": len(stats["features"]) if "features" in stats else None,
    }


def main(flags: list[str]) -> None:
    quick = "--quick" in flags
    opts = dict(f.split("=", 1) for f in flags if "=" in f)
    default = 20_000 if quick else 10_000_000 if "--full" in flags else 1_000_000
    rows = int(opts.get("--rows", default))
    train_rows = int(opts.get("--train-rows", 20_000 if quick else TRAIN_ROWS))
    small = 0 if "--no-fixed" in flags else 1_000
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    print(
        f"# monitor benchmark ({os.cpu_count()} cores, python {platform.python_version()}): "
        f"`modeltap-monitor run` over {rows:,} flattened rows per model, gzip JSONL on local "
        f"disk, {RECORDS_PER_OBJECT:,} records per object, one process"
    )
    big = captures(rows)
    tiny = captures(small) if small else None
    results = []
    with tempfile.TemporaryDirectory(prefix="modeltap-bench-monitor-") as tmp:
        work = Path(tmp)
        for model in MODELS:
            base = baseline(model, train_rows, work)
            fixed = monitor_run(model, tiny, base, work) if tiny is not None else None
            res = monitor_run(model, big, base, work)
            if res["rows"] != rows:
                raise RuntimeError(f"{model}: the run saw {res['rows']:,} rows, not {rows:,}")
            results.append((model, fixed, res))
    print(
        "| captures | records | rows | objects | wall | CPU | rows/s | peak RSS | fixed cost "
        f"({small:,} rows) | rows/s net of it |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for model, fixed, res in results:
        per = MODELS[model]
        label = "1 row per record" if per == 1 else f"ranking, {per} rows per record"
        if fixed is None:
            fixed_cell = net = "-"
        else:
            fixed_cell = f"{fixed['wall']:.1f} s, {fixed['rss']:.0f} MB"
            net = f"{res['rows'] / max(res['wall'] - fixed['wall'], 1e-9):,.0f}"
        print(
            f"| {model} ({label}) | {res['records']:,} | {res['rows']:,} | {res['objects']:,} | "
            f"{res['wall']:.1f} s | {res['cpu']:.1f} s | {res['rows'] / res['wall']:,.0f} | "
            f"{res['rss']:.0f} MB | {fixed_cell} | {net} |"
        )
    for model, _, res in results:
        print(f"{model}: {res['read']}")
    worst = min(r["rows"] / r["wall"] for _, _, r in results)
    peak = max(r["rss"] for _, _, r in results)
    print(
        f"target >= {TARGET_ROWS_PER_S:,} rows/s per process: "
        f"{'met' if worst >= TARGET_ROWS_PER_S else 'NOT met'} (slowest {worst:,.0f}, end to end)"
    )
    note = "" if rows >= 10_000_000 else f" (the target is for 10M rows; this run had {rows:,})"
    print(
        f"target peak RSS <= {TARGET_RSS_MB} MB: "
        f"{'met' if peak <= TARGET_RSS_MB else 'NOT met'} (highest {peak:.0f} MB){note}"
    )
    if "--pad-reference" in flags:
        pad_reference(big, train_rows)


#: The reference for the malloc pad: the same run with glibc's defaults.
NO_PAD = {"MODELTAP_MONITOR_MALLOC_PAD": "0"}


def pad_reference(captures_root: Path, train_rows: int) -> None:
    """Each set read with and without the malloc pad, alternated (pad first)."""
    print("| captures | malloc | wall | CPU | rows/s | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="modeltap-bench-monitor-") as tmp:
        work = Path(tmp)
        for model in MODELS:
            base = baseline(model, train_rows, work)
            for label, env in (("64 MiB pad (default)", None), ("glibc's defaults", NO_PAD)):
                res = monitor_run(model, captures_root, base, work, env)
                print(
                    f"| {model} | {label} | {res['wall']:.1f} s | {res['cpu']:.1f} s | "
                    f"{res['rows'] / res['wall']:,.0f} | {res['rss']:.0f} MB |",
                    flush=True,
                )
