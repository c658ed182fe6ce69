"""The issue's user story on a real S3 server (SeaweedFS): a training CSV in
a bucket -> baseline in the bucket -> a day of captures written by the real
Capturer (sampled, with full-traffic profiles) -> `modeltap-monitor run`
with every input and output on S3 -> the report names what drifted."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor_job.cli import main
from tests.monitor.scenario import normal_instances, training_csv, write_captures
from tests.monitor.test_cli import run_cli

DAY = datetime(2026, 11, 20, tzinfo=timezone.utc)


def test_a_day_of_captures_on_s3_against_a_training_csv_on_s3(
    seaweed: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELTAP_S3_ENDPOINT_URL", seaweed.endpoint_url)
    s3 = seaweed.client()
    train = training_csv(tmp_path / "train.csv")
    s3.upload_file(str(train), s3_bucket, "training/train.csv")
    bucket = f"s3://{s3_bucket}"
    assert (
        main(
            [
                "baseline",
                "--data",
                f"{bucket}/training/train.csv",
                "--out",
                f"{bucket}/baseline",
                "--label",
                "label",
            ]
        )
        == 0
    )
    # The morning looks like training; from noon f0 is shifted by one standard deviation.
    capture = {
        "sample_rate": 0.25,
        "profile_all": True,
        "s3_endpoint_url": seaweed.endpoint_url,
    }
    sink = f"{bucket}/captures"
    write_captures(sink, normal_instances(1200, seed=11), DAY, 12 * 3600, **capture)
    noon = DAY + timedelta(hours=12)
    write_captures(sink, normal_instances(1200, seed=12, shift=1.0), noon, 12 * 3600, **capture)

    out = f"{bucket}/reports/2026-11-20"
    day = ["--start", DAY.isoformat(), "--end", (DAY + timedelta(days=1)).isoformat()]
    code = run_cli(sink, f"{bucket}/baseline", out, *day, "--no-previous")
    assert code == 1

    def read(name: str) -> bytes:
        body = s3.get_object(Bucket=s3_bucket, Key=f"reports/2026-11-20/{name}")["Body"]
        return bytes(body.read())

    violations = orjson.loads(read("constraint_violations.json"))["violations"]
    assert {(v["feature_name"], v["constraint_check_type"]) for v in violations} == {
        ("f0", "baseline_drift_check")
    }
    stats = orjson.loads(read("statistics.json"))
    assert stats["dataset"]["item_count"] == 2400  # all traffic, from the profiles
    assert stats["modeltap"]["summary"]["profiled_hours"] == 24
    html = read("report.html").decode()
    assert "f0" in html and "baseline_drift_check" in html
    assert html.index("f0") < html.index("f1")  # the drifted column comes first

    # Weeks later the outcomes are known: labels for every kept prediction go
    # to the same bucket with `modeltap-monitor labels`, and a run over the
    # hour they arrived in joins them to the day's predictions on S3.
    from monitor_job.readers import list_captures, read_records

    labels = []
    for ref in list_captures(sink, DAY, DAY + timedelta(days=1)):
        if ref.kind == "records":
            for rec in read_records(ref):
                p = rec["rows"][0]["prediction"]
                labels.append({"event_id": rec["event_id"], "label": int(p >= 0.5)})
    assert 500 < len(labels) < 700  # a quarter of 2,400 kept as records
    (tmp_path / "labels.jsonl").write_bytes(b"\n".join(orjson.dumps(x) for x in labels))
    label_file = str(tmp_path / "labels.jsonl")
    assert main(["labels", "--file", label_file, "--sink", sink, "--model", "m"]) == 0
    now = datetime.now(timezone.utc)
    hour = [f"--start={now - timedelta(hours=1):%Y-%m-%dT%H:%M:%S%z}"]
    hour.append(f"--end={now + timedelta(hours=1):%Y-%m-%dT%H:%M:%S%z}")
    lookback = ["--label-lookback", f"{(now - DAY).days + 1}d", "--no-previous"]
    run_cli(sink, f"{bucket}/baseline", f"{bucket}/reports/labels", *hour, *lookback)
    body = s3.get_object(Bucket=s3_bucket, Key="reports/labels/statistics.json")["Body"]
    quality = orjson.loads(body.read())["modeltap"]["model_quality"]
    assert quality["join"]["matched"] == len(labels) and quality["join"]["unmatched"] == 0
    assert quality["task"] == "classification" and quality["metrics"]["accuracy"] == 1.0
