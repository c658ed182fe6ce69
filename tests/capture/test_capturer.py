import time

import pytest

from capture.capturer import Capturer
from capture.errors import ConfigError
from capture.record import new_event_id
from capture.types import Exchange
from tests.capture.test_record import exchange
from tests.support import all_records, read_objects


def ex(i, status=200, latency=0.01, **kw):
    return exchange(event_id=f"ev-{i}", status=status, latency_s=latency, start=time.time(), **kw)


def test_end_to_end_to_local_directory(tmp_path):
    with Capturer(sink=str(tmp_path), model="ranker", model_version="3") as cap:
        for i in range(50):
            assert cap.submit(ex(i))
    records = all_records(tmp_path)
    assert sorted(r["event_id"] for r in records) == sorted(f"ev-{i}" for i in range(50))
    r = records[0]
    assert r["model"] == {"name": "ranker", "version": "3", "variant": None}
    assert r["request"]["body"]["data"] == {"instances": [[1, 2]]}
    assert all(k.startswith("ranker/dt=") for k in read_objects(tmp_path))
    s = cap.stats.snapshot()
    assert s["offered"] == s["kept"] == s["records_written"] == 50


def test_sampling_keeps_the_deterministic_subset_plus_errors_and_slow(tmp_path):
    with Capturer(sink=str(tmp_path), sample_rate=0.3, slow_threshold_s=0.5) as cap:
        for i in range(1000):
            cap.submit(ex(i))
        cap.submit(ex("err", status=503))
        cap.submit(ex("slow", latency=2.0))
        # Failed and slow exchanges whose keys the hash keeps anyway.
        hits = [i for i in range(1000, 1100) if cap.sampler.hit(f"ev-{i}")][:2]
        cap.submit(ex(hits[0], status=502))
        cap.submit(ex(hits[1], latency=0.7))
    kept = {r["event_id"]: r for r in all_records(tmp_path)}
    expected = {f"ev-{i}" for i in range(1000) if cap.sampler.hit(f"ev-{i}")}
    assert set(kept) - {"ev-err", "ev-slow", f"ev-{hits[0]}", f"ev-{hits[1]}"} == expected
    assert 250 < len(expected) < 350
    # The reason says what a record stands for: errors and slow ones are
    # labelled so before the hash (kept with certainty), the rest "sampled".
    reasons = {k: r["sampling"]["reason"] for k, r in kept.items()}
    assert reasons.pop("ev-err") == reasons.pop(f"ev-{hits[0]}") == "error"
    assert reasons.pop("ev-slow") == reasons.pop(f"ev-{hits[1]}") == "slow"
    assert set(reasons.values()) == {"sampled"}
    s = cap.stats.snapshot()
    assert s["offered"] == 1004 == s["kept"] + s["sampled_out"]


def test_at_full_rate_errors_and_slow_exchanges_still_say_so(tmp_path):
    with Capturer(sink=str(tmp_path), sample_rate=1.0, slow_threshold_s=0.5) as cap:
        cap.submit(ex("ok"))
        cap.submit(ex("err", status=500))
        cap.submit(ex("down", error="upstream unreachable: ConnectError"))
        cap.submit(ex("slow", latency=0.5))
    reasons = {r["event_id"]: r["sampling"]["reason"] for r in all_records(tmp_path)}
    assert reasons == {"ev-ok": "sampled", "ev-err": "error", "ev-down": "error", "ev-slow": "slow"}


def test_sample_on_a_header_key(tmp_path):
    with Capturer(sink=str(tmp_path), sample_rate=0.5, sample_key="header:X-User-Id") as cap:
        for i in range(200):
            user = f"u{i % 20}"
            cap.submit(ex(i, request_headers=[("X-User-Id", user)]))
    users_kept = {r["event_id"] for r in all_records(tmp_path)}
    by_user = {f"u{u}": cap.sampler.hit(f"u{u}") for u in range(20)}
    for i in range(200):
        assert (f"ev-{i}" in users_kept) == by_user[f"u{i % 20}"]


def test_redaction_applied_before_the_sink(tmp_path):
    body = b'{"instances": [{"email": "zed@example.org", "x": 1}]}'
    with Capturer(sink=str(tmp_path), redact_fields=("email",)) as cap:
        cap.submit(ex(1, request_body=body, request_size=len(body)))
    raw = b"".join(p.read_bytes() for p in tmp_path.rglob("*.gz"))
    import gzip

    assert b"zed@example.org" not in gzip.decompress(raw)
    assert all_records(tmp_path)[0]["request"]["body"]["data"] == {"instances": [{"x": 1}]}
    assert cap.stats.get("redactions") == 1


def test_extractor_failure_keeps_the_record_with_a_note(tmp_path):
    def broken(record, req, resp, exchange):
        raise ValueError("cannot read this payload")

    with Capturer(sink=str(tmp_path), extract=broken) as cap:
        cap.submit(ex(1))
    (r,) = all_records(tmp_path)
    assert "cannot read this payload" in r["parse"]["error"]
    assert cap.stats.get("parse_errors") == 1


def test_bad_exchange_never_raises_into_the_caller(tmp_path):
    with Capturer(sink=str(tmp_path)) as cap:
        broken = Exchange(*([None] * 13))  # what a buggy caller might pass
        assert cap.submit(broken) is False
        assert cap.submit(ex(1, request_body=b"\xff\xfe\x00", request_size=3))
    assert [r["event_id"] for r in all_records(tmp_path)] == ["ev-1"]


def test_from_env_and_unsafe_model(tmp_path):
    env = {"MODELTAP_SINK": f"file://{tmp_path}", "MODELTAP_MODEL": "fraud"}
    with Capturer.from_env(env) as cap:
        cap.submit(ex(new_event_id()))
    assert next(iter(read_objects(tmp_path))).startswith("fraud/")
    with pytest.raises(ConfigError):
        Capturer(sink=str(tmp_path), model="../../x")
