"""End to end: training CSV -> baseline -> captures written by the real
Capturer -> `modeltap-monitor run` -> files, violations and exit codes."""

from __future__ import annotations

import gzip
import subprocess
import sys
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor_job.cli import main
from tests.monitor.scenario import normal_instances, training_csv, write_captures

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
WINDOW = ["--start", "2026-11-20T10:00:00Z", "--end", "2026-11-20T11:00:00Z"]


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("baseline")
    data = training_csv(root / "train.csv")
    out = root / "baseline"
    assert main(["baseline", "--data", str(data), "--out", str(out), "--label", "label"]) == 0
    return out


def run_cli(captures: Any, baseline: Any, out: Any, *extra: str) -> int:
    """``modeltap-monitor run`` in-process, outputs to ``out``."""
    args = ["--captures", str(captures), "--baseline", str(baseline), "--out", str(out)]
    return main(["run", *args, *extra])


def _violations(out: Path) -> list[dict[str, Any]]:
    doc = orjson.loads((out / "constraint_violations.json").read_bytes())
    return list(doc["violations"])


def _checks(violations: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(v["feature_name"], v["constraint_check_type"]) for v in violations}


def test_baseline_files_have_sagemaker_shape(baseline_dir: Path) -> None:
    stats = orjson.loads((baseline_dir / "statistics.json").read_bytes())
    cons = orjson.loads((baseline_dir / "constraints.json").read_bytes())
    assert stats["dataset"]["item_count"] == 5000
    by_name = {f["name"]: f for f in stats["features"]}
    assert by_name["f0"]["inferred_type"] == "Fractional"
    assert abs(by_name["f0"]["numerical_statistics"]["mean"]) < 0.05
    assert by_name["f2"]["inferred_type"] == "Integral"
    assert by_name["f1"]["inferred_type"] == "String"
    cats = {
        b["value"]
        for b in by_name["f1"]["string_statistics"]["distribution"]["categorical"]["buckets"]
    }
    assert cats == {"web", "ios", "android"}
    feats = {f["name"]: f for f in cons["features"]}
    assert feats["f1"]["kind"] == "categorical"
    assert sorted(feats["f1"]["string_constraints"]["domains"]) == ["android", "ios", "web"]
    assert feats["f0"]["kind"] == "numeric" and feats["f0"]["completeness"] == 1.0
    assert feats["f2"]["num_constraints"]["is_non_negative"] is True
    assert cons["monitoring_config"]["modeltap"]["ignore_columns"] == ["label"]


def test_clean_window_exits_0(baseline_dir: Path, tmp_path: Path) -> None:
    caps = tmp_path / "captures"
    write_captures(caps, normal_instances(3000, seed=2), T0, 3600)
    out = tmp_path / "out"
    code = run_cli(caps, baseline_dir, out, "--no-previous", *WINDOW)
    assert _violations(out) == []
    assert code == 0
    stats = orjson.loads((out / "statistics.json").read_bytes())
    assert stats["dataset"]["item_count"] == 3000
    assert stats["modeltap"]["summary"]["records"] == 3000
    assert (out / "report.html").stat().st_size > 1000


def test_drifted_window_exits_1_with_each_check(baseline_dir: Path, tmp_path: Path) -> None:
    caps = tmp_path / "captures"
    # f0 shifted by 1 sigma; a new category; f2 dropped and an extra field sent
    insts = normal_instances(3000, seed=3, shift=1.0, categories=["web", "ios", "tv"])
    write_captures(
        caps,
        insts,
        T0,
        3600,
        to_body=lambda i: {"instances": [{"f0": i[0], "f1": i[1], "extra": 1}]},
    )
    out = tmp_path / "out"
    code = run_cli(caps, baseline_dir, out, "--no-previous", *WINDOW)
    found = _checks(_violations(out))
    assert ("f0", "baseline_drift_check") in found
    assert ("f1", "categorical_values_check") in found
    assert ("f1", "baseline_drift_check") in found
    assert ("f2", "missing_column_check") in found
    assert ("extra", "extra_column_check") in found
    assert code == 1


def test_small_window_does_not_alarm_on_drift(baseline_dir: Path, tmp_path: Path) -> None:
    caps = tmp_path / "captures"
    write_captures(caps, normal_instances(60, seed=4, shift=0.3), T0, 3600)
    out = tmp_path / "out"
    code = run_cli(caps, baseline_dir, out, "--no-previous", *WINDOW)
    assert code == 0
    stats = orjson.loads((out / "statistics.json").read_bytes())
    assert any("min_rows" in n for n in stats["modeltap"]["summary"]["notes"])


def test_empty_window_is_a_volume_violation(baseline_dir: Path, tmp_path: Path) -> None:
    caps = tmp_path / "captures"
    caps.mkdir()
    out = tmp_path / "out"
    code = run_cli(caps, baseline_dir, out, "--no-previous", *WINDOW)
    assert code == 1
    assert ("(dataset)", "volume_check") in _checks(_violations(out))


def test_previous_window_and_records_outside_the_window(baseline_dir: Path, tmp_path: Path) -> None:
    caps = tmp_path / "captures"
    prev = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
    write_captures(caps, normal_instances(2000, seed=5), prev, 3600)
    write_captures(caps, normal_instances(400, seed=6), T0, 3600)
    later = datetime(2026, 11, 20, 11, 0, tzinfo=timezone.utc)
    write_captures(caps, normal_instances(700, seed=7, shift=3.0), later, 3600)
    out = tmp_path / "out"
    code = run_cli(caps, baseline_dir, out, *WINDOW)
    stats = orjson.loads((out / "statistics.json").read_bytes())
    summary = stats["modeltap"]["summary"]
    assert summary["rows"] == 400 and summary["previous_rows"] == 2000
    # 400 rows against 2,000 the hour before: volume fell to 0.2x
    assert ("(dataset)", "volume_check") in _checks(_violations(out))
    assert code == 1
    cols = {c["name"]: c for c in stats["modeltap"]["columns"]}
    assert cols["f0"]["previous_drift"]["ks"] is not None


def test_volume_counts_sampled_records_as_the_traffic_they_stand_for(
    baseline_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The hour before: 2,000 requests, all kept. This hour: 2,000 requests
    # kept at 25%, then the same sampling with traffic down to 400 requests.
    prev = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
    steady = tmp_path / "steady"
    write_captures(steady, normal_instances(2000, seed=5), prev, 3600)
    write_captures(steady, normal_instances(2000, seed=6), T0, 3600, sample_rate=0.25)
    out = tmp_path / "out-steady"
    run_cli(steady, baseline_dir, out, *WINDOW)
    printed = capsys.readouterr().out
    summary = orjson.loads((out / "statistics.json").read_bytes())["modeltap"]["summary"]
    assert f"sampled: they stand for {summary['traffic_rows']:,} rows of traffic" in printed
    assert 350 < summary["rows"] < 650  # ~500 sampled of 2,000
    assert summary["traffic_rows"] == 4 * summary["rows"]
    assert summary["sampled_rows"] == {"0.25": summary["rows"]}
    assert summary["previous_rows"] == summary["previous_traffic_rows"] == 2000
    assert ("(dataset)", "volume_check") not in _checks(_violations(out))

    fell = tmp_path / "fell"
    write_captures(fell, normal_instances(2000, seed=5), prev, 3600)
    write_captures(fell, normal_instances(400, seed=6), T0, 3600, sample_rate=0.25)
    out = tmp_path / "out-fell"
    assert run_cli(fell, baseline_dir, out, *WINDOW) == 1
    volume = [v for v in _violations(out) if v["constraint_check_type"] == "volume_check"]
    assert len(volume) == 1 and "of traffic (from" in volume[0]["description"]


def test_errors_kept_whatever_the_sampling_count_once(baseline_dir: Path, tmp_path: Path) -> None:
    # This hour's 1,000 requests all failed: at a 10% sampling rate every one
    # is kept as an error and stands for itself, hash hit or not (labelled
    # before the hash), so the traffic is 1,000, not ~1,900.
    prev = datetime(2026, 11, 20, 9, 0, tzinfo=timezone.utc)
    caps = tmp_path / "caps"
    write_captures(caps, normal_instances(1000, seed=5), prev, 3600)
    write_captures(caps, normal_instances(1000, seed=6), T0, 3600, sample_rate=0.1, status=503)
    out = tmp_path / "out"
    run_cli(caps, baseline_dir, out, *WINDOW)
    summary = orjson.loads((out / "statistics.json").read_bytes())["modeltap"]["summary"]
    assert summary["rows"] == summary["traffic_rows"] == 1000
    assert summary["sampled_rows"] == {}
    assert ("(dataset)", "volume_check") not in _checks(_violations(out))


def test_expected_volume_is_traffic_whatever_the_sampling(tmp_path: Path) -> None:
    data = training_csv(tmp_path / "train.csv")
    base = tmp_path / "baseline"
    flags = ["--label", "label", "--expected-rows-per-hour", "2000"]
    assert main(["baseline", "--data", str(data), "--out", str(base), *flags]) == 0
    for rate, served, alarm in ((0.2, 2000, False), (1.0, 2000, False), (0.2, 600, True)):
        caps = tmp_path / f"captures-{rate}-{served}"
        write_captures(caps, normal_instances(served, seed=9), T0, 3600, sample_rate=rate)
        out = tmp_path / f"out-{rate}-{served}"
        run_cli(caps, base, out, "--no-previous", *WINDOW)
        assert (("(dataset)", "volume_check") in _checks(_violations(out))) == alarm, (rate, served)


def test_segments_by_model_version(baseline_dir: Path, tmp_path: Path) -> None:
    caps = tmp_path / "captures"
    write_captures(caps, normal_instances(1500, seed=8), T0, 1800, version="1")
    half = datetime(2026, 11, 20, 10, 30, tzinfo=timezone.utc)
    write_captures(caps, normal_instances(1500, seed=9, shift=1.5), half, 1800, version="2")
    out = tmp_path / "out"
    code = run_cli(caps, baseline_dir, out, "--no-previous", *WINDOW)
    assert code == 1
    seg = [v for v in _violations(out) if v.get("segment")]
    assert {v["segment"] for v in seg if v["feature_name"] == "f0"} == {"model.version=2"}


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_report_lists_violations(baseline_dir: Path, tmp_path: Path) -> None:
    caps = tmp_path / "captures"
    write_captures(caps, normal_instances(2000, seed=10, shift=1.0), T0, 3600)
    out = tmp_path / "out"
    assert run_cli(caps, baseline_dir, out, "--no-previous", *WINDOW) == 1
    parser = _Text()
    parser.feed((out / "report.html").read_text())
    text = " ".join(parser.text)
    assert "baseline_drift_check" in text and "f0" in text


# --- bad input: exit 2 with the file named -------------------------------------------


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitor_job", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_missing_baseline_exits_2_naming_it(tmp_path: Path) -> None:
    (tmp_path / "caps").mkdir()
    proc = _run_cli(
        "run",
        "--captures",
        str(tmp_path / "caps"),
        "--baseline",
        str(tmp_path / "nope"),
        "--out",
        str(tmp_path / "out"),
        *WINDOW,
    )
    assert proc.returncode == 2
    assert "nope/baseline_profile.json" in proc.stderr and "no such file" in proc.stderr


def test_a_bad_malloc_pad_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODELTAP_MONITOR_MALLOC_PAD", "lots")
    (tmp_path / "caps").mkdir()
    assert run_cli(tmp_path / "caps", tmp_path / "nope", tmp_path / "out", *WINDOW) == 2
    assert "MODELTAP_MONITOR_MALLOC_PAD" in capsys.readouterr().err


def test_corrupt_constraints_exit_2(baseline_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "baseline_profile.json").write_bytes(
        (baseline_dir / "baseline_profile.json").read_bytes()
    )
    (bad / "constraints.json").write_text("{not json")
    (tmp_path / "caps").mkdir()
    code = run_cli(tmp_path / "caps", bad, tmp_path / "out", *WINDOW)
    assert code == 2


def test_corrupt_profile_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "baseline_profile.json").write_bytes(b"\x00garbage")
    (tmp_path / "caps").mkdir()
    code = run_cli(tmp_path / "caps", bad, tmp_path / "out", *WINDOW)
    assert code == 2
    assert "baseline_profile.json" in capsys.readouterr().err


def test_corrupt_capture_object_exits_2_naming_it(baseline_dir: Path, tmp_path: Path) -> None:
    caps = tmp_path / "captures"
    write_captures(caps, normal_instances(300, seed=11), T0, 3600)
    obj = sorted(caps.rglob("*.jsonl.gz"))[0]
    obj.write_bytes(gzip.compress(b'{"schema": 1}\n')[:20])  # cut gzip stream
    proc = _run_cli(
        "run",
        "--captures",
        str(caps),
        "--baseline",
        str(baseline_dir),
        "--out",
        str(tmp_path / "out"),
        "--no-previous",
        *WINDOW,
    )
    assert proc.returncode == 2, proc.stderr
    assert obj.name in proc.stderr


def test_bad_arguments_exit_2(baseline_dir: Path, tmp_path: Path) -> None:
    proc = _run_cli(
        "run",
        "--captures",
        str(tmp_path),
        "--baseline",
        str(baseline_dir),
        "--out",
        str(tmp_path / "o"),
        "--start",
        "yesterday",
    )
    assert proc.returncode == 2 and "--start" in proc.stderr
    proc = _run_cli(
        "run",
        "--captures",
        str(tmp_path),
        "--baseline",
        str(baseline_dir),
        "--out",
        str(tmp_path / "o"),
        "--window",
        "-1h",
    )
    assert proc.returncode == 2 and "--window" in proc.stderr
    bad_csv = tmp_path / "t.csv"
    bad_csv.write_bytes(b"")
    proc = _run_cli("baseline", "--data", str(bad_csv), "--out", str(tmp_path / "b"))
    assert proc.returncode == 2 and "t.csv" in proc.stderr
