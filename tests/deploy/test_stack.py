"""``./dev stack`` end to end, as a newcomer runs it: toy model, proxy, traffic
with a drift halfway, labels, monitor; on a local directory and on S3
(SeaweedFS); every process it started is gone afterwards."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import httpx
import pytest

from tests.deploy.conftest import STACK_REQUESTS, Pushgateway, StackRun, run_stack


def _violations(out: Path) -> set[tuple[str, str]]:
    doc = json.loads((out / "monitor" / "report" / "constraint_violations.json").read_text())
    return {(v["feature_name"], v["constraint_check_type"]) for v in doc["violations"]}


def _refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.ConnectError:
        return True
    return False


def test_stack_captures_labels_and_the_monitor_finds_the_drift(stack_run: StackRun) -> None:
    out = stack_run.out
    # Kept running until SIGINT (Ctrl-C): it answered meanwhile, then stopped everything.
    assert stack_run.answered_while_kept == 200, stack_run.stdout[-3000:]
    assert stack_run.returncode == 130, stack_run.stdout[-3000:]
    assert re.search(r"stopped proxy \(pid \d+\): exit 0", stack_run.stdout)
    assert set(stack_run.urls) == {"proxy", "model"}
    assert all(_refused(url) for url in stack_run.urls.values())

    captures = out / "captures"
    records = [
        json.loads(line)
        for path in captures.glob("toy/**/*.jsonl.gz")
        for line in gzip.decompress(path.read_bytes()).splitlines()
    ]
    assert len(records) == STACK_REQUESTS
    assert {r["model"]["name"] for r in records} == {"toy"}
    assert all(r["rows"][0]["prediction"] is not None for r in records)
    assert list((captures / "ground_truth" / "toy").rglob("*.jsonl.gz"))
    assert f"{STACK_REQUESTS} labels posted" in stack_run.stdout

    assert {("f0", "baseline_drift_check"), ("accuracy", "model_quality_check")} <= _violations(out)
    report = out / "monitor" / "report" / "report.html"
    assert report.stat().st_size > 1000 and f"report:        {report}" in stack_run.stdout
    assert f"captures:      {captures} (objects: " in stack_run.stdout


def test_stack_monitor_pushed_to_the_pushgateway(
    stack_run: StackRun, pushgateway: Pushgateway
) -> None:
    assert stack_run.returncode == 130
    pushes = [(m, p) for m, p, _ in pushgateway.pushes]
    assert ("PUT", "/metrics/job/modeltap_monitor/model/toy") in pushes
    body = pushgateway.pushes[-1][2]
    assert 'modeltap_monitor_drift{feature="f0",metric="ks",model="toy"}' in body


@pytest.mark.slow
def test_stack_on_s3_seaweedfs(tmp_path: Path) -> None:
    run = run_stack(tmp_path, "--s3", "--requests", str(STACK_REQUESTS))
    assert run.returncode == 0, run.stdout[-3000:]
    assert "captures:      s3://modeltap/captures (objects: " in run.stdout
    assert "objects: 0" not in run.stdout
    assert not (tmp_path / "captures").exists()  # everything went to S3
    assert ("f0", "baseline_drift_check") in _violations(tmp_path)
    assert all(_refused(url) for url in run.urls.values())
    print(f"stack --s3: {run.seconds:.1f} s")
