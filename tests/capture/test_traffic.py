"""Full-traffic profiles (``MODELTAP_PROFILE_ALL``): every exchange in the
profile, sampled or not, written beside the records in the right hour."""

from __future__ import annotations

import gzip
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson
import pytest

import capture
from capture.capturer import Capturer
from capture.clock import ManualClock
from capture.errors import ConfigError
from capture.profile import DatasetProfile
from capture.settings import CaptureSettings
from capture.traffic import PROFILE_SUFFIX
from capture.types import Exchange
from tests.support import GatedSink, all_records, wait_for

T0 = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc).timestamp()


def kserve(i: int, t: float, x: float, email: str = "") -> Exchange:
    inst: dict[str, object] = {"x": x, "channel": "web" if i % 3 else "ios"}
    if email:
        inst["email"] = email
    req = orjson.dumps({"instances": [inst]})
    resp = orjson.dumps({"predictions": [round(x / 10, 4)]})
    return Exchange.of(req, resp, event_id=f"ev-{i}", start=t, path="/v1/models/m:predict")


def profiles(root: Path) -> dict[str, DatasetProfile]:
    return {
        str(p.relative_to(root)): DatasetProfile.from_bytes(p.read_bytes())
        for p in sorted(root.rglob("*" + PROFILE_SUFFIX))
    }


def merged(profs: dict[str, DatasetProfile]) -> DatasetProfile:
    total = DatasetProfile()
    for p in profs.values():
        total.merge(p)
    return total


def test_sampled_out_exchanges_are_profiled_by_hour_beside_the_records(tmp_path: Path) -> None:
    xs = np.random.default_rng(3).normal(5.0, 2.0, 2000).round(4)
    clock = ManualClock(T0)
    step = 3600 / len(xs)  # 09:30 .. 10:30: two hour partitions
    with Capturer(
        sink=str(tmp_path), model="m", sample_rate=0.1, profile_all=True, clock=clock
    ) as cap:
        for i, x in enumerate(xs):
            clock.advance(T0 + i * step - clock.time())
            cap.submit(kserve(i, T0 + i * step, float(x)))
    records = all_records(tmp_path)
    assert 100 < len(records) < 320  # the raw rows stay sampled
    profs = profiles(tmp_path)
    hours = {k.split("/")[2] for k in profs}
    assert hours == {"hour=09", "hour=10"}
    assert all(k.startswith("m/dt=2026-03-01/") for k in profs)
    for key, prof in profs.items():  # each object holds only its own hour
        start = datetime.fromisoformat(prof.meta["start"])
        end = datetime.fromisoformat(prof.meta["end"])
        assert f"hour={start:%H}" in key and start.hour == end.hour
        assert prof.meta["model"] == "m" and prof.meta["kind"] == "traffic"
    total = merged(profs)
    assert total.rows == len(xs) == sum(p.meta["exchanges"] for p in profs.values())
    x = total.columns["x"]
    assert x.count == len(xs) and x.mean == pytest.approx(float(xs.mean()), rel=1e-9)
    assert x.min == float(xs.min()) and x.max == float(xs.max())
    assert total.columns["prediction"].count == len(xs)
    assert dict(total.columns["channel"].top(2)) == {"web": 1333, "ios": 667}
    s = cap.stats.snapshot()
    assert s["profiled"] == len(xs) and s["profile_dropped"] == 0
    assert s["profiles_written"] == len(profs)


def test_redacted_fields_never_reach_a_profile(tmp_path: Path) -> None:
    with Capturer(
        sink=str(tmp_path), sample_rate=0.5, profile_all=True, redact_fields=("email",)
    ) as cap:
        for i in range(200):
            cap.submit(kserve(i, T0, float(i), email=f"person{i}@example.org"))
    raw = b"".join(p.read_bytes() for p in tmp_path.rglob("*" + PROFILE_SUFFIX))
    assert raw and b"example.org" not in raw
    records = b"".join(gzip.decompress(p.read_bytes()) for p in tmp_path.rglob("*.gz"))
    assert b"example.org" not in records
    total = merged(profiles(tmp_path))
    assert total.rows == 200 and "email" not in total.columns
    assert cap.stats.get("redactions") == len(all_records(tmp_path))  # kept records only


def test_flush_writes_profiles_on_demand_and_age_writes_them_on_its_own(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    with Capturer(
        sink=str(tmp_path), sample_rate=0.0, profile_all=True, profile_max_age_s=300, clock=clock
    ) as cap:
        for i in range(10):
            cap.submit(kserve(i, T0, 1.0))
        assert cap.flush(timeout=10)
        assert merged(profiles(tmp_path)).rows == 10
        for i in range(10, 15):
            cap.submit(kserve(i, T0 + 1, 2.0))
        clock.advance(301)  # age trigger, no flush
        assert wait_for(lambda: merged(profiles(tmp_path)).rows == 15, timeout=10)
        assert len(profiles(tmp_path)) == 2
    assert all_records(tmp_path) == []  # nothing sampled: profiles only


def test_sink_outage_keeps_the_profile_and_writes_it_later(tmp_path: Path) -> None:
    sink = GatedSink(tmp_path)
    sink.failing = True
    with Capturer(sink=sink, sample_rate=0.0, profile_all=True) as cap:
        for i in range(50):
            cap.submit(kserve(i, T0, float(i)))
        assert cap.flush(timeout=10)
        assert profiles(tmp_path) == {} and cap.stats.get("profile_write_failures") >= 1
        sink.failing = False
        assert cap.flush(timeout=10)
        assert merged(profiles(tmp_path)).rows == 50
    assert cap.stats.get("profile_dropped") == 0


def test_outage_until_close_counts_the_lost_exchanges(tmp_path: Path) -> None:
    sink = GatedSink(tmp_path)
    sink.failing = True
    cap = Capturer(sink=sink, sample_rate=0.0, profile_all=True, close_timeout_s=1)
    for i in range(20):
        cap.submit(kserve(i, T0, float(i)))
    cap.close(5)
    assert profiles(tmp_path) == {}
    assert cap.stats.get("profile_dropped") == 20


def test_a_full_queue_drops_from_the_profile_never_from_the_request(tmp_path: Path) -> None:
    sink = GatedSink(tmp_path)
    sink.gate.clear()  # the worker blocks on its first write: the queue fills
    cap = Capturer(sink=sink, sample_rate=0.0, profile_all=True, profile_max_queue_bytes=20_000)
    cap.submit(kserve(0, T0, 0.0))
    assert cap.traffic is not None and cap.traffic.flush(timeout=0.5) is False  # blocked
    results = [cap.submit(kserve(i, T0, float(i))) for i in range(1, 400)]
    assert results == [False] * 399  # sampled out, as without profiles
    dropped = cap.stats.get("profile_dropped")
    assert dropped > 0
    sink.gate.set()
    cap.close(10)
    assert merged(profiles(tmp_path)).rows + dropped == 400
    assert cap.stats.snapshot()["offered"] == 400


def test_unsampled_decorated_calls_are_profiled(tmp_path: Path) -> None:
    with capture.Capturer(sink=str(tmp_path), sample_rate=0.0, profile_all=True) as cap:

        @cap.capture
        def predict(features: dict[str, float]) -> dict[str, float]:
            return {"score": features["x"] * 2}

        for i in range(30):
            assert predict({"x": float(i)}) == {"score": 2.0 * i}
    assert all_records(tmp_path) == []
    total = merged(profiles(tmp_path))
    assert total.rows == 30
    assert total.columns["x"].max == 29.0


def test_profile_settings_are_validated_and_read_from_the_environment() -> None:
    s = CaptureSettings.from_env(
        {"MODELTAP_PROFILE_ALL": "true", "MODELTAP_PROFILE_MAX_AGE_S": "60"}
    )
    assert s.profile_all and s.profile_max_age_s == 60
    with pytest.raises(ConfigError, match="MODELTAP_PROFILE_MAX_AGE_S"):
        CaptureSettings(profile_max_age_s=0)
    assert CaptureSettings().profile_all is False
