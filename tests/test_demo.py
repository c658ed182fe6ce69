"""The README's first command (`./dev demo` = `python -m capture.demo`) works
from a clean directory: captures and labels land, the monitor finds the planted
drift in f0 and the accuracy drop the labels show."""

import subprocess
import sys
from pathlib import Path

import orjson


def test_demo_captures_then_the_monitor_finds_the_planted_drift(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "capture.demo", "--requests", "800"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "offered 800, kept 800" in done.stdout and "and 800 labels" in done.stdout
    assert len(list((tmp_path / "captures").rglob("*.jsonl.gz"))) >= 2
    violations = orjson.loads(
        (tmp_path / "monitor-demo" / "report" / "constraint_violations.json").read_bytes()
    )["violations"]
    assert ("f0", "baseline_drift_check") in {
        (v["feature_name"], v["constraint_check_type"]) for v in violations
    }
    assert {v["feature_name"] for v in violations} == {"f0", "accuracy"}
    assert ("accuracy", "model_quality_check") in {
        (v["feature_name"], v["constraint_check_type"]) for v in violations
    }
    assert len(list((tmp_path / "captures" / "ground_truth" / "demo").rglob("*.jsonl.gz"))) >= 1
    assert "model quality (classification): 800 labelled predictions" in done.stdout
    assert (tmp_path / "monitor-demo" / "report" / "report.html").stat().st_size > 1000
