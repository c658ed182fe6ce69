"""Profiling a window: full-traffic profiles from the capture, and Dask.

Captures are written by the real Capturer (sampled, with
``profile_all``); the monitor runs end to end on them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from capture.traffic import PROFILE_SUFFIX
from monitor_job.cli import main
from monitor_job.execute import profile_window
from monitor_job.readers import list_captures, read_records
from tests.monitor.scenario import normal_instances, training_csv, write_captures

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
N = 3000  # exchanges over 10:00 .. 13:00, one row each


@pytest.fixture(scope="module")
def baseline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("baseline")
    out = root / "baseline"
    data = str(training_csv(root / "t.csv"))
    assert main(["baseline", "--data", data, "--out", str(out), "--label", "label"]) == 0
    return out


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10% of the rows as records, all of them in hourly traffic profiles."""
    caps = tmp_path_factory.mktemp("captures")
    write_captures(
        caps, normal_instances(N, seed=5), T0, 3 * 3600, sample_rate=0.1, profile_all=True
    )
    return caps


def run(caps: Path, baseline: Path, out: Path, start: str, end: str, *extra: str) -> int:
    args = ["run", "--captures", str(caps), "--baseline", str(baseline), "--out", str(out)]
    return main([*args, "--start", start, "--end", end, "--no-previous", *extra])


def stats_of(out: Path) -> dict[str, Any]:
    return dict(orjson.loads((out / "statistics.json").read_bytes()))


def test_profiled_hours_count_all_traffic_not_the_sample(
    sampled: Path, baseline_dir: Path, tmp_path: Path
) -> None:
    assert len(list(sampled.rglob("*" + PROFILE_SUFFIX))) >= 3
    code = run(sampled, baseline_dir, tmp_path, "2026-11-20T10:00:00Z", "2026-11-20T13:00:00Z")
    stats = stats_of(tmp_path)
    summary = stats["modeltap"]["summary"]
    assert stats["dataset"]["item_count"] == N  # every exchange, not ~300
    assert summary["profiled_hours"] == 3 and summary["traffic_profiles"] >= 3
    assert 150 < summary["records"] < 450  # the sampled records were still read
    violations = orjson.loads((tmp_path / "constraint_violations.json").read_bytes())
    assert violations["violations"] == []  # same distribution as the training data
    assert code == 0


def test_an_hour_cut_by_the_window_falls_back_to_its_records(
    sampled: Path, baseline_dir: Path, tmp_path: Path
) -> None:
    start, end = T0 + timedelta(minutes=30), T0 + timedelta(hours=3)
    run(sampled, baseline_dir, tmp_path, start.isoformat(), end.isoformat())
    refs = list_captures(str(sampled), start, T0 + timedelta(hours=1))
    records_10_30 = sum(
        1
        for r in refs
        if r.kind == "records"
        for _ in read_records(r, start, T0 + timedelta(hours=1))
    )
    stats = stats_of(tmp_path)
    assert stats["modeltap"]["summary"]["profiled_hours"] == 2
    # hours 11 and 12 from the profiles (exactly 2,000), 10:30-11:00 from sampled records
    assert stats["dataset"]["item_count"] == 2 * N // 3 + records_10_30
    assert records_10_30 > 0


def test_a_corrupt_profile_is_named_and_its_hour_uses_the_records(
    sampled: Path, baseline_dir: Path, tmp_path: Path
) -> None:
    caps = tmp_path / "caps"
    import shutil

    shutil.copytree(sampled, caps)
    victim = sorted(caps.rglob("*" + PROFILE_SUFFIX))[0]
    victim.write_bytes(b'{"format": 1, "rows": 3, "columns": {"x": "garbage"}}')
    out = tmp_path / "out"
    run(caps, baseline_dir, out, "2026-11-20T10:00:00Z", "2026-11-20T13:00:00Z")
    summary = stats_of(out)["modeltap"]["summary"]
    assert summary["profiled_hours"] == 2
    assert any(victim.name in p and "sampled records" in p for p in summary["problems"])
    assert N * 2 // 3 < stats_of(out)["dataset"]["item_count"] < N


def test_dask_local_cluster_gives_the_in_process_statistics(tmp_path: Path) -> None:
    caps = tmp_path / "caps"
    write_captures(caps, normal_instances(4000, seed=8), T0, 4 * 3600, flush_max_records=250)
    # and 2,000 more kept at 30%: their rows count 1/0.3 times as traffic
    half = normal_instances(2000, seed=9)
    write_captures(caps, half, T0, 4 * 3600, flush_max_records=250, sample_rate=0.3)
    refs = list_captures(str(caps), T0, T0 + timedelta(hours=4))
    assert len(refs) >= 8
    here = profile_window(refs, T0, T0 + timedelta(hours=4), progress=False)
    there = profile_window(refs, T0, T0 + timedelta(hours=4), dask="local", progress=False)
    assert there.counts() == here.counts()
    a, b = here.whole, there.whole
    assert a.rows == b.rows and set(a.columns) == set(b.columns)
    kept = a.rows - 4000
    assert 400 < kept < 800 and here.sampled_rows == {"0.3": kept}
    assert there.traffic_rows == here.traffic_rows == pytest.approx(4000 + kept / 0.3)
    for name, col in a.columns.items():
        other = b.columns[name]
        assert (col.count, col.nulls, dict(col.types)) == (
            other.count,
            other.nulls,
            dict(other.types),
        )
        if col.numeric_count:
            assert other.mean == pytest.approx(col.mean, rel=1e-12)
            assert (other.min, other.max) == (col.min, col.max)
        if col.inferred_type() == "Fractional":
            # KLL merges in a different order: quantiles agree within the sketch's rank error
            assert other.cdf(col.quantiles([0.5])) == pytest.approx([0.5], abs=0.02)
        if col.inferred_type() == "String":
            assert dict(other.top(5)) == dict(col.top(5))


@pytest.mark.parametrize("switch_at", [0, 700, 1500])
def test_segments_of_an_object_whose_version_changes_match_their_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, switch_at: int
) -> None:
    """A segment holding every row so far shares the whole profile until its
    first other row; then (and at the end) it must hold exactly its rows."""
    import gzip

    import numpy as np

    from capture.profile import DatasetProfile
    from monitor_job import execute

    caps = tmp_path / "c"
    write_captures(
        caps, normal_instances(2000, seed=8), T0, 600, flush_max_records=5000, flush_max_age_s=1e6
    )
    refs = list_captures(str(caps), T0, None)  # one object, unless a flush came early
    records = [rec for r in refs for rec in read_records(r)]
    records.sort(key=lambda rec: rec["time"])
    ref = refs[0]
    for other in refs[1:]:
        (Path(other.location) / other.key).unlink()
    versions = ["1" if i < switch_at or i >= 1800 else "2" for i in range(len(records))]
    for rec, version in zip(records, versions, strict=True):
        rec["model"]["version"] = version
    path = Path(ref.location) / ref.key
    path.write_bytes(gzip.compress(b"\n".join(orjson.dumps(r) for r in records)))
    monkeypatch.setattr(execute, "BATCH_ROWS", 256)
    part = execute.Partial.from_bytes(execute.profile_object(ref, None, None, segments=["f1"]))

    f0 = np.array([r["rows"][0]["features"]["f0"] for r in records])
    f1 = [r["rows"][0]["features"]["f1"] for r in records]
    expected = {"": np.ones(len(records), bool)}
    for v in ("1", "2"):
        expected[f"model.version={v}"] = np.array(versions) == v
    for cat in set(f1):
        expected[f"f1={cat}"] = np.array(f1) == cat
    expected = {key: mask for key, mask in expected.items() if mask.any()}
    assert set(part.profiles) == set(expected)
    for key, mask in expected.items():
        col = part.profiles[key].columns["f0"]
        assert col.count == mask.sum(), key
        assert col.mean == pytest.approx(f0[mask].mean()), key
        assert isinstance(part.profiles[key], DatasetProfile)
