"""Profiling benchmark (issue 5): ``DatasetProfile.update_columns`` on a
1,000,000-row x 20-column frame held in memory as column batches, against
whylogs profiling the same frame in the same run.

    python -m loadtest profile [--quick] [--no-reference] [--rows=N] [--repeats=N]

The frame (seed 5): 10 float64 columns (full-precision normal, lognormal,
uniform, exponential, sigmoid scores and a bimodal mixture; prices rounded to
cents, rates to 4 decimals, ages to 1 decimal; one column with 5% NaN),
5 int64 columns (7, ~20, 61, 100,000 distinct values and an id-like column of
~all-distinct 40-bit ids) and 5 string columns (5, 50, 1,000 and 10,000
distinct values with skewed frequencies, and an id-like column of ~all-distinct
16-character hex ids). It is generated with numpy once and cached as
``.bench/profile-frame-<rows>.npz`` (``.bench/`` is git-ignored); our side
reads it as 8 batches of rows/8 (125,000) rows: numbers as numpy arrays,
strings as pyarrow string arrays (what ``monitor_job.training`` hands a
baseline from CSV or Parquet). A second run feeds the strings as Python
lists of ``str`` instead (what a JSONL baseline, or this code before Arrow
input, gets), for comparison. Each side runs in a fresh subprocess, so its
peak RSS is its own; our figures are best and median of ``--repeats`` (3)
profiles of the whole frame, each into a new ``DatasetProfile``.

Reference: whylogs (``whylogs.log(df)`` on a pandas DataFrame of the same
frame, strings as ``object`` columns). whylogs 1.6 needs numpy<2 (it uses
``np.unicode_``), so it lives in its own venv, ``.bench/whylogs-venv``, which
this benchmark creates on first use (``python3 -m venv`` then ``pip install
whylogs 'numpy<2' 'pandas<3'``) and runs this file in as a script. When it
cannot be set up (no registry, a failed build) the reason is printed and our
figure stands alone. ``--no-reference`` or ``MODELTAP_BENCH_NO_REFERENCE=1``
skips it. ``MODELTAP_BENCH_DIR`` moves ``.bench/`` elsewhere (the smoke test).

Only stdlib and numpy are imported at module level: the whylogs venv runs
this file and has neither our package, datasketches nor pyarrow.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from loadtest.sysinfo import peak_rss_mb, rss_mb

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(os.environ.get("MODELTAP_BENCH_DIR") or ROOT / ".bench")
WHYLOGS_VENV = BENCH_DIR / "whylogs-venv"
WHYLOGS_REQUIREMENTS = ["whylogs", "numpy<2", "pandas<3"]
SEED = 5
BATCHES = 8
TARGET_ROWS_PER_S = 1_000_000


# -- the frame ---------------------------------------------------------------------


def make_frame(n: int, seed: int = SEED) -> dict[str, np.ndarray]:
    """The benchmark frame as numpy arrays (strings as fixed-width ``str_``)."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    cols["f_normal"] = rng.normal(0.0, 1.0, n)
    cols["f_lognormal"] = rng.lognormal(3.0, 1.0, n)
    cols["f_uniform"] = rng.random(n)
    cols["f_exponential"] = rng.exponential(2.0, n)
    cols["f_score"] = 1.0 / (1.0 + np.exp(-rng.normal(-1.0, 1.5, n)))
    cols["f_bimodal"] = np.where(rng.random(n) < 0.3, rng.normal(-2, 0.5, n), rng.normal(3, 1, n))
    cols["f_price"] = np.round(rng.lognormal(2.5, 0.8, n), 2)
    cols["f_rate"] = np.round(rng.beta(2.0, 8.0, n), 4)
    cols["f_age"] = np.round(np.clip(rng.normal(41.0, 13.0, n), 18, 95), 1)
    with_nan = rng.normal(100.0, 15.0, n)
    with_nan[rng.random(n) < 0.05] = np.nan
    cols["f_with_nan"] = with_nan
    cols["i_weekday"] = rng.integers(0, 7, n)
    cols["i_count"] = rng.poisson(3.0, n)
    cols["i_year"] = rng.integers(1950, 2011, n)
    cols["i_zip"] = rng.integers(0, 100_000, n)
    cols["i_user_id"] = rng.integers(0, 2**40, n)
    for name, card in (("s_5", 5), ("s_50", 50), ("s_1k", 1_000), ("s_10k", 10_000)):
        vocab = np.array([f"{name[2:]}-{j:05d}" for j in range(card)])
        cols[name] = vocab[(rng.zipf(1.2, n) - 1) % card]
    ids = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    cols["s_id"] = np.char.mod("%016x", ids)
    return cols


def frame_path(n: int) -> Path:
    """The cached frame of ``n`` rows (generated on first use)."""
    path = BENCH_DIR / f"profile-frame-{n}.npz"
    if not path.exists():
        BENCH_DIR.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **make_frame(n))
        tmp.replace(path)
    return path


def load_frame(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


# -- the two sides (each in its own process) -------------------------------------


# How our side gets the string columns: (label, child side).
STRING_FORMS = (("strings as Arrow arrays", "ours"), ("strings as lists of `str`", "ours-lists"))


def _batches(frame: dict[str, np.ndarray], arrow: bool) -> list[tuple[dict[str, Any], int]]:
    """The frame as BATCHES column batches: numbers as arrays, strings as
    pyarrow string arrays, or as fresh lists of ``str`` (fresh objects: a
    string's hash is computed once and then cached in the object, so reusing
    lists would flatter later repeats)."""
    import pyarrow as pa

    n = len(next(iter(frame.values())))
    size = -(-n // BATCHES)
    out = []
    for start in range(0, n, size):
        batch: dict[str, Any] = {}
        for name, arr in frame.items():
            part = arr[start : start + size]
            if part.dtype.kind != "U":
                batch[name] = np.ascontiguousarray(part)
            else:
                batch[name] = pa.array(part, pa.string()) if arrow else part.tolist()
        out.append((batch, len(part)))
    return out


def run_ours(path: Path, repeats: int, arrow: bool = True) -> dict[str, Any]:
    from capture.profile import DatasetProfile

    frame = load_frame(path)
    n = len(next(iter(frame.values())))
    frame_rss = 0.0
    times = []
    prof = DatasetProfile()
    for _ in range(repeats):
        batches = _batches(frame, arrow)
        frame_rss = max(frame_rss, rss_mb())
        prof = DatasetProfile()
        t0 = time.perf_counter()
        for batch, rows in batches:
            prof.update_columns(batch, rows)
        times.append(time.perf_counter() - t0)
        del batches
    assert prof.rows == n, (prof.rows, n)
    return {
        "rows": n,
        "times": times,
        "frame_rss_mb": frame_rss,
        "peak_rss_mb": peak_rss_mb(),
        "s_id_distinct": prof.columns["s_id"].distinct(),
        "f_normal_median": prof.columns["f_normal"].quantiles([0.5])[0],
        "profile_bytes": len(prof.to_bytes()),
        # KLL compacts at random, so only the string columns can match across processes.
        "strings_digest": hashlib.blake2b(
            json.dumps([prof.columns[k].to_dict() for k in frame if k.startswith("s_")]).encode()
        ).hexdigest(),
    }


def run_whylogs(path: Path, repeats: int) -> dict[str, Any]:
    os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")
    import pandas as pd
    import whylogs

    frame = load_frame(path)
    df = pd.DataFrame(
        {k: (v.astype(object) if v.dtype.kind == "U" else v) for k, v in frame.items()}
    )
    del frame
    frame_rss = rss_mb()
    times = []
    result = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = whylogs.log(df)
        times.append(time.perf_counter() - t0)
    assert result is not None
    summary = result.view().to_pandas()
    return {
        "rows": len(df),
        "times": times,
        "frame_rss_mb": frame_rss,
        "peak_rss_mb": peak_rss_mb(),
        "s_id_distinct": float(summary.loc["s_id", "cardinality/est"]),
        "version": whylogs.__version__,
    }


def _child(python: str, side: str, path: Path, repeats: int) -> dict[str, Any]:
    proc = subprocess.run(
        [python, str(Path(__file__).resolve()), side, str(path), str(repeats)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{side} side failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def whylogs_python() -> tuple[str | None, str]:
    """The whylogs venv's python, created on first use; (None, why) when it cannot be."""
    python = WHYLOGS_VENV / "bin" / "python"
    check = [str(python), "-c", "import whylogs, pandas"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return str(python), "cached"
    print(f"setting up the whylogs reference in {WHYLOGS_VENV} (first run only)...", flush=True)
    steps = [
        ["python3", "-m", "venv", str(WHYLOGS_VENV)],
        [str(python), "-m", "pip", "install", "--quiet", *WHYLOGS_REQUIREMENTS],
    ]
    for cmd in steps:
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"{' '.join(cmd[:4])}: {exc}"
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if "is ignored" not in ln]
            return None, f"{' '.join(cmd[:4])} failed: " + " | ".join(lines[-3:])
    if subprocess.run(check, capture_output=True).returncode != 0:
        return None, "whylogs installed but does not import"
    return str(python), "created"


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} rows/s"


def main(flags: list[str]) -> None:
    quick = "--quick" in flags
    opts = dict(f.split("=", 1) for f in flags if "=" in f)
    n = int(opts.get("--rows", 20_000 if quick else 1_000_000))
    repeats = int(opts.get("--repeats", 1 if quick else 3))
    reference = "--no-reference" not in flags and not os.environ.get("MODELTAP_BENCH_NO_REFERENCE")
    path = frame_path(n)
    print(
        f"# profile benchmark ({os.cpu_count()} cores, python {platform.python_version()}): "
        f"{n:,} rows x 20 columns (10 float64, 5 int64, 5 string), {BATCHES} batches of "
        f"{-(-n // BATCHES):,} rows, frame {path.name}"
    )
    ours = {side: _child(sys.executable, side, path, repeats) for _, side in STRING_FORMS}
    ref: dict[str, Any] | None = None
    why = "skipped (--no-reference)"
    if reference:
        python, why = whylogs_python()
        if python is not None:
            try:
                ref = _child(python, "whylogs", path, repeats)
            except RuntimeError as exc:
                why = str(exc).splitlines()[-1]
    print(f"| what | best of {repeats} | median of {repeats} | peak RSS (frame alone) |")
    print("| --- | --- | --- | --- |")
    rows = [
        (f"modeltap `DatasetProfile.update_columns`, {how}", ours[side])
        for how, side in STRING_FORMS
    ]
    if ref is not None:
        rows.append((f"whylogs {ref['version']} `whylogs.log(df)` (reference)", ref))
    for label, res in rows:
        print(
            f"| {label} | {_rate(res['rows'], min(res['times']))} | "
            f"{_rate(res['rows'], statistics.median(res['times']))} | "
            f"{res['peak_rss_mb']:.0f} MB ({res['frame_rss_mb']:.0f} MB) |"
        )
    best = ours["ours"]["rows"] / min(ours["ours"]["times"])
    met = "met" if best >= TARGET_ROWS_PER_S else "NOT met"
    note = "" if n >= 1_000_000 else f" (the target is for 1M rows; this run had {n:,})"
    arrow, lists = ours["ours"], ours["ours-lists"]
    print(f"target >= {TARGET_ROWS_PER_S:,} rows/s in one process (strings as Arrow): {met}{note}")
    print(
        f"sanity: s_id distinct estimate {arrow['s_id_distinct']:,.0f}"
        + (f" (whylogs {ref['s_id_distinct']:,.0f})" if ref is not None else "")
        + f", f_normal median {arrow['f_normal_median']:.3f}, "
        f"profile {arrow['profile_bytes'] / 1024:.0f} KiB serialised; "
        f"string columns' profiles equal to the lists': "
        f"{'yes' if arrow['strings_digest'] == lists['strings_digest'] else 'NO'}"
    )
    if ref is None:
        print(f"reference: whylogs not run: {why}")
    else:
        print(f"ratio: modeltap / whylogs = {best / (ref['rows'] / min(ref['times'])):.1f}x")


if __name__ == "__main__" and len(sys.argv) == 4:
    where, times = Path(sys.argv[2]), int(sys.argv[3])
    if sys.argv[1] == "whylogs":
        print(json.dumps(run_whylogs(where, times)))
    elif sys.argv[1] in ("ours", "ours-lists"):
        print(json.dumps(run_ours(where, times, arrow=sys.argv[1] == "ours")))
