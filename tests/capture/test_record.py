import base64
import re
import time

import orjson
import pytest

from capture.errors import ConfigError
from capture.record import (
    RecordConfig,
    build_record,
    event_id_from_headers,
    format_time,
    header_allowed,
    new_event_id,
)
from capture.types import Exchange

UUID7 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")


def exchange(**kw):
    base = dict(
        event_id="e1",
        start=1_763_852_922.1234,
        latency_s=0.0123,
        method="POST",
        path="/v1/models/m:predict",
        query="a=1",
        request_headers=[("Content-Type", "application/json")],
        request_body=b'{"instances": [[1, 2]]}',
        request_size=23,
        status=200,
        response_headers=[("content-type", "application/json")],
        response_body=b'{"predictions": [0.5]}',
        response_size=22,
    )
    base.update(kw)
    return Exchange(**base)


def test_generated_ids_are_uuid7_and_time_ordered():
    ids = [new_event_id(now_ns=t * 1_000_000) for t in (1_000, 2_000, 3_000)]
    assert all(UUID7.match(i) for i in ids)
    assert ids == sorted(ids)
    assert len({new_event_id() for _ in range(10_000)}) == 10_000


def test_event_id_prefers_caller_ids_and_refuses_unsafe_ones():
    assert event_id_from_headers([("X-Request-ID", "req-1")]) == "req-1"
    assert event_id_from_headers([("inference-id", "inf-9")]) == "inf-9"
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert event_id_from_headers([("traceparent", tp)]) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert event_id_from_headers([("x-request-id", "req-2"), ("traceparent", tp)]) == "req-2"
    for bad in ("../../etc/passwd", "a b", "x" * 129, "", "é"):
        assert event_id_from_headers([("x-request-id", bad)]) is None


def test_time_is_utc_with_milliseconds():
    assert format_time(0.0) == "1970-01-01T00:00:00.000Z"
    assert format_time(1_763_852_922.1234) == "2025-11-22T23:08:42.123Z"


def test_time_matches_datetime_across_seconds_and_rounding():
    """``format_time`` keeps formatted seconds in a bounded cache; every
    time, rounded to the millisecond, still reads as ``datetime`` puts it:
    before 1970, on a rounding edge, and over more distinct seconds than the
    cache holds (so it is cleared and refilled on the way)."""
    import random
    from datetime import datetime, timedelta, timezone

    def expected(t: float) -> str:
        when = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=round(t * 1000))
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"

    rng = random.Random(7)
    times = [-1.5, -0.0004, 0.9996, 1_795_388_922.9995, 1_795_388_922.0005]
    times += [rng.uniform(-1e9, 4e9) for _ in range(300)]
    times += [1_795_388_922 + rng.random() * 5 for _ in range(300)]  # a batch's few seconds
    for t in times:
        assert format_time(t) == expected(t), t


def test_record_has_the_contract_fields():
    rec, req_json, resp_json = build_record(exchange(), RecordConfig(model="ranker"))
    assert rec["schema"] == 1 and rec["event_id"] == "e1"
    assert rec["time"] == "2025-11-22T23:08:42.123Z"
    assert rec["model"] == {"name": "ranker", "version": None, "variant": None}
    assert rec["status"] == 200 and rec["latency_ms"] == 12.3
    assert rec["request"]["body"] == {
        "size": 23,
        "encoding": "json",
        "data": {"instances": [[1, 2]]},
    }
    assert req_json == {"instances": [[1, 2]]} and resp_json == {"predictions": [0.5]}
    for name in ("context", "lookups", "rows", "parse"):
        assert name in rec
    orjson.loads(orjson.dumps(rec))


def test_model_version_from_config_or_response_header():
    ex = exchange(response_headers=[("X-Model-Version", "7"), ("x-model-variant", "b")])
    rec, _, _ = build_record(ex, RecordConfig())
    assert rec["model"]["version"] == "7" and rec["model"]["variant"] == "b"
    rec, _, _ = build_record(ex, RecordConfig(model_version="8"))
    assert rec["model"]["version"] == "8"


def test_bodies_json_text_base64_and_truncation():
    cfg = RecordConfig(max_body_bytes=8)
    rec, parsed, _ = build_record(exchange(), cfg)
    body = rec["request"]["body"]
    assert body["truncated"] is True and body["size"] == 23
    assert body["encoding"] == "text" and body["data"] == '{"instanc'[:8]
    assert parsed is None  # a cut body is never parsed

    # a multi-byte character cut in half is dropped, not mangled
    ex = exchange(
        request_body="aé".encode() * 3,
        request_size=9,
        request_headers=[("content-type", "text/plain")],
    )
    rec, _, _ = build_record(ex, RecordConfig(max_body_bytes=5))
    assert rec["request"]["body"]["data"] == "aéa"

    png = b"\x89PNG\r\n\x1a\n\x00\xff"
    ex = exchange(
        request_body=png, request_size=len(png), request_headers=[("content-type", "image/png")]
    )
    rec, _, _ = build_record(ex, RecordConfig())
    assert rec["request"]["body"]["encoding"] == "base64"
    assert base64.b64decode(rec["request"]["body"]["data"]) == png

    invalid = b"\xff\xfe not utf8"
    ex = exchange(request_body=invalid, request_size=len(invalid), request_headers=[])
    rec, _, _ = build_record(ex, RecordConfig())
    assert base64.b64decode(rec["request"]["body"]["data"]) == invalid

    nan_json = b'{"x": NaN}'
    ex = exchange(request_body=nan_json, request_size=len(nan_json))
    rec, parsed, _ = build_record(ex, RecordConfig())
    assert rec["request"]["body"] == {"size": 10, "encoding": "text", "data": '{"x": NaN}'}

    rec, _, _ = build_record(exchange(), RecordConfig(capture_bodies=False))
    assert rec["request"]["body"] is None and rec["request"]["size"] == 23

    ex = exchange(request_body=b"", request_size=0)
    assert build_record(ex, RecordConfig())[0]["request"]["body"] is None


def test_streamed_body_cut_by_caller_is_marked_truncated():
    ex = exchange(request_body=b'{"a": 1}', request_size=10_000)
    rec, parsed, _ = build_record(ex, RecordConfig())
    assert rec["request"]["body"]["truncated"] is True and parsed is None


def test_credentials_never_captured_even_if_allowlisted():
    allow = frozenset({"authorization", "cookie", "x-api-key", "x-tenant", "content-type"})
    cfg = RecordConfig(header_allowlist=allow)
    ex = exchange(
        request_headers=[
            ("Authorization", "Bearer s3cr3t"),
            ("Cookie", "sid=1"),
            ("X-Api-Key", "k"),
            ("X-Tenant", "acme"),
            ("Content-Type", "application/json"),
            ("X-Other", "o"),
        ]
    )
    rec, _, _ = build_record(ex, cfg)
    assert rec["request"]["headers"] == {"x-tenant": "acme", "content-type": "application/json"}
    assert "s3cr3t" not in orjson.dumps(rec).decode()
    assert not header_allowed("Proxy-Authorization", frozenset({"proxy-authorization"}))


def _reference_headers(headers, allow):
    """What the record kept before the per-name cache: lowercase every name
    (the last value of a repeated name wins), then filter."""
    lowered = {k.lower(): v for k, v in headers}
    return {k: v for k, v in lowered.items() if header_allowed(k, allow)}


def test_header_rules_are_cached_per_name_as_sent_and_stay_bounded():
    allow = frozenset({"x-tenant", "content-type"})
    cfg = RecordConfig(header_allowlist=allow)
    mixes = [
        [("Content-Type", "a"), ("content-type", "b"), ("X-TENANT", "t"), ("Cookie", "c")],
        [("content-type", "c"), ("Content-Type", "d"), ("x-tenant", "u"), ("X-Tenant", "v")],
        [("Authorization", "s3cr3t"), ("AUTHORIZATION", "s3cr3t"), ("X-Other", "o")],
    ]
    for _ in range(2):  # the second round reads the cache the first one filled
        for headers in mixes:
            rec, _, _ = build_record(exchange(request_headers=headers), cfg)
            assert rec["request"]["headers"] == _reference_headers(headers, cfg.header_allowlist)
            assert list(rec["request"]["headers"]) == list(
                _reference_headers(headers, cfg.header_allowlist)
            )
    # Clients choose header names: thousands of distinct ones do not grow the
    # cache past its bound, and names past it are still filtered correctly.
    many = [(f"X-Junk-{i}", "j") for i in range(3000)] + [("X-Tenant", "late")]
    rec, _, _ = build_record(exchange(request_headers=many), cfg)
    assert rec["request"]["headers"] == {"x-tenant": "late"}
    assert len(cfg._header_rules) <= 1024
    assert cfg == RecordConfig(header_allowlist=allow)  # the cache is not part of the config


def test_invalid_config_is_refused():
    with pytest.raises(ConfigError):
        RecordConfig(max_body_bytes=-1)


def test_build_is_fast_enough_to_sanity_check():
    # not a benchmark: guards against an accidental O(n^2) on large headers
    ex = exchange(request_headers=[(f"h{i}", "v") for i in range(1000)])
    t = time.perf_counter()
    build_record(ex, RecordConfig())
    assert time.perf_counter() - t < 1.0


@pytest.mark.parametrize("width", [0, 1, 5, 255, 256, 257, 300])
def test_unnamed_columns_are_named_f0_onwards_at_any_width(width):
    from capture.payloads.base import Notes, feature_dict

    values = [i * 0.5 for i in range(width)]
    got = feature_dict(values, None, Notes())
    assert list(got) == [f"f{i}" for i in range(width)]
    assert list(got.values()) == values
