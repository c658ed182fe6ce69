"""monitor_job.readers on captures written by the real Capturer: a local tree
and the same in a real S3 (SeaweedFS), window pruning over dt/hour partitions,
records filtered by time, flat rows, and every bad-input case."""

from __future__ import annotations

import gzip
import logging
import os
import tracemalloc
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capture.capturer import Capturer
from capture.clock import ManualClock
from capture.types import Exchange
from monitor_job import readers
from monitor_job.locations import s3_client
from monitor_job.readers import (
    InputError,
    ObjectRef,
    ReadStats,
    flatten,
    list_captures,
    read_records,
    sampled_rate,
)
from tests.seaweed import free_ports

DAY = datetime(2026, 3, 1, tzinfo=timezone.utc)


def at(hour: float, day: int = 0) -> float:
    return (DAY + timedelta(days=day, hours=hour)).timestamp()


def kserve(i: int, t: float) -> Exchange:
    req = orjson.dumps({"instances": [[i * 0.5, "web", i % 7]]})
    resp = orjson.dumps({"predictions": [i / 100]})
    return Exchange.of(req, resp, event_id=f"ev-{i}", start=t, path="/v1/models/m:predict")


def write(sink: str, batches: list[list[tuple[int, float]]], model: str = "m", **kw: Any) -> None:
    """Capture each batch (exchanges of (id, time), ascending) as one object.

    The clock follows the exchange times, so each object lands in the hour
    partition of its first record, as in production.
    """
    clock = ManualClock(batches[0][0][1])
    with Capturer(sink=sink, model=model, clock=clock, flush_max_records=100_000, **kw) as cap:
        for batch in batches:
            for i, t in batch:
                clock.advance(t - clock.time())
                assert cap.submit(kserve(i, t))
            assert cap.flush(timeout=30)


#: id -> time. One object per group; the 09:59:50 batch straddles into hour 10.
TREE = [
    [(1, at(8.5))],
    [(2, at(9.25)), (3, at(9.75))],
    [(4, at(10 - 10 / 3600)), (5, at(10 + 10 / 3600))],
    [(6, at(10.5)), (7, at(10.9))],
    [(8, at(11.4))],
    [(9, at(10.5, day=1))],
]
TIMES = {i: t for batch in TREE for i, t in batch}


def ids(refs: list[ObjectRef], start: datetime | None, end: datetime | None) -> list[str]:
    return sorted(
        r["event_id"]
        for ref in refs
        if ref.kind == "records"
        for r in read_records(ref, start, end)
    )


def expected(start: datetime, end: datetime) -> list[str]:
    lo, hi = start.timestamp(), end.timestamp()
    return sorted(f"ev-{i}" for i, t in TIMES.items() if lo <= t < hi)


def hour(h: float, day: int = 0) -> datetime:
    return DAY + timedelta(days=day, hours=h)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("captures")
    write(str(root), TREE)
    # Full-traffic profile objects beside the records of hours 9 and 10.
    (root / "m/dt=2026-03-01/hour=09/host-1-1_000008.profile.json").write_bytes(b"{}")
    (root / "m/dt=2026-03-01/hour=10/host-1-1_000009.profile.json").write_bytes(b"{}")
    return root


def test_lists_our_layout_sorted_with_partitions_and_profiles(tree: Path) -> None:
    refs = list_captures(str(tree), None, None)
    assert [r.key for r in refs] == sorted(r.key for r in refs)
    assert {r.location for r in refs} == {str(tree)}
    assert len([r for r in refs if r.kind == "records"]) == len(TREE)
    partitions = sorted({r.key.rsplit("/", 1)[0] for r in refs})
    assert partitions == [
        "m/dt=2026-03-01/hour=08",
        "m/dt=2026-03-01/hour=09",
        "m/dt=2026-03-01/hour=10",
        "m/dt=2026-03-01/hour=11",
        "m/dt=2026-03-02/hour=10",
    ]
    profiles = [r for r in refs if r.kind == "profile"]
    assert [p.key.rsplit("/", 2)[1:] for p in profiles] == [
        ["hour=09", "host-1-1_000008.profile.json"],
        ["hour=10", "host-1-1_000009.profile.json"],
    ]
    assert all(r.size == (tree / r.key).stat().st_size for r in refs)
    assert ids(refs, None, None) == sorted(f"ev-{i}" for i in TIMES)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (hour(9), hour(10)),
        (hour(10), hour(11)),  # ev-5 sits in the hour=09 object (its batch began 09:59:50)
        (hour(10.25), hour(10.75)),  # cuts hour 10 in the middle: record times decide
        (hour(9.5), hour(11.5)),
        (hour(0, day=1), hour(23, day=1)),
        (hour(12), hour(13)),
    ],
)
def test_window_reads_exactly_the_records_inside_it(
    tree: Path, start: datetime, end: datetime
) -> None:
    refs = list_captures(f"file://{tree}", start, end)
    assert ids(refs, start, end) == expected(start, end)


def test_back_to_back_windows_see_every_record_once(tree: Path) -> None:
    seen: list[str] = []
    for h in range(0, 48):
        start, end = hour(h), hour(h + 1)
        seen += ids(list_captures(str(tree), start, end), start, end)
    assert sorted(seen) == sorted(f"ev-{i}" for i in TIMES)


def test_pruning_lists_only_the_window_partitions(
    tree: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="monitor_job.locations"):
        refs = list_captures(str(tree), hour(10), hour(11))
    listed = [r.getMessage().removeprefix("listing ") for r in caplog.records]
    rel = sorted(os.path.relpath(p, tree) for p in listed)
    assert rel == [
        ".",
        "m",
        "m/dt=2026-03-01",
        "m/dt=2026-03-01/hour=09",  # the hour before: batches begun there
        "m/dt=2026-03-01/hour=10",
    ]
    assert {r.key.split("/")[2] for r in refs} == {"hour=09", "hour=10"}
    # Profiles describe whole batches: only those of partitions inside the window.
    assert [r.key.split("/")[2] for r in refs if r.kind == "profile"] == ["hour=10"]


def test_hour_before_keeps_only_objects_written_after_the_window_began(tmp_path: Path) -> None:
    write(str(tmp_path), TREE[:3])
    for ref in list_captures(str(tmp_path), None, None):
        # the mtime production would give it: a minute after its last record
        last = max(TIMES[int(r["event_id"][3:])] for r in read_records(ref)) + 60
        os.utime(tmp_path / ref.key, (last, last))
    # [10:00, 11:00): the hour=09 objects written at 09:46 are skipped; the one
    # written at 10:01 (the straddling batch) is read.
    refs = list_captures(str(tmp_path), hour(10), hour(11))
    assert len(refs) == 1 and "hour=09" in refs[0].key
    assert ids(refs, hour(10), hour(11)) == ["ev-5"]
    # [09:30, 10:00): hour=08's object, written at 08:31, is not listed.
    refs = list_captures(str(tmp_path), hour(9.5), hour(10))
    assert {r.key.split("/")[2] for r in refs} == {"hour=09"}


def test_model_filter_and_several_models(tmp_path: Path) -> None:
    write(str(tmp_path), [[(1, at(10.1))]], model="alpha")
    write(str(tmp_path), [[(2, at(10.2))]], model="beta")
    both = list_captures(str(tmp_path), hour(10), hour(11))
    assert [r.key.split("/")[0] for r in both] == ["alpha", "beta"]
    only = list_captures(str(tmp_path), hour(10), hour(11), model="beta")
    assert [r.key.split("/")[0] for r in only] == ["beta"]
    assert ids(only, None, None) == ["ev-2"]
    assert list_captures(str(tmp_path), hour(10), hour(11), model="gamma") == []
    # The location may be one model's directory itself.
    inner = list_captures(str(tmp_path / "alpha"), hour(10), hour(11))
    assert [r.key.split("/")[0] for r in inner] == ["dt=2026-03-01"]
    assert ids(inner, None, None) == ["ev-1"]


def test_naive_datetimes_are_utc_and_empty_window_lists_nothing(tree: Path) -> None:
    naive = list_captures(str(tree), hour(10).replace(tzinfo=None), hour(11).replace(tzinfo=None))
    assert naive == list_captures(str(tree), hour(10), hour(11))
    assert list_captures(str(tree), hour(11), hour(10)) == []


# -- S3 --------------------------------------------------------------------------


@pytest.fixture
def s3_env(seaweed: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("MODELTAP_S3_ENDPOINT_URL", seaweed.endpoint_url)
    yield seaweed


def test_s3_tree_reads_like_the_local_one(
    s3_env: Any, s3_bucket: str, tree: Path, tmp_path: Path
) -> None:
    write(
        f"s3://{s3_bucket}/captures",
        TREE,
        s3_endpoint_url=s3_env.endpoint_url,
        s3_region="us-east-1",
    )
    location = f"s3://{s3_bucket}/captures"
    prefixes: list[str] = []

    def seen(params: dict[str, Any], **_: Any) -> None:
        prefixes.append(params.get("Prefix", ""))

    client = s3_client(s3_env.endpoint_url)
    client.meta.events.register("provide-client-params.s3.ListObjectsV2", seen)
    try:
        refs = list_captures(location, hour(10), hour(11))
    finally:
        client.meta.events.unregister("provide-client-params.s3.ListObjectsV2", seen)
    assert sorted(prefixes) == [
        "captures/",
        "captures/m/",
        "captures/m/dt=2026-03-01/",
        "captures/m/dt=2026-03-01/hour=09/",
        "captures/m/dt=2026-03-01/hour=10/",
    ]
    assert {r.location for r in refs} == {location}
    local = list_captures(str(tree), hour(10), hour(11))
    strip = [r.key.rsplit("/", 1)[0] for r in refs if r.kind == "records"]
    assert strip == [r.key.rsplit("/", 1)[0] for r in local if r.kind == "records"]
    assert ids(refs, hour(10), hour(11)) == expected(hour(10), hour(11))
    everything = list_captures(location, None, None)
    assert ids(everything, None, None) == sorted(f"ev-{i}" for i in TIMES)
    assert all(r.size > 0 for r in everything)


def test_s3_missing_bucket_object_and_unreachable_endpoint(
    s3_env: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InputError, match=r"s3://no-such-bucket-x/captures.*no such bucket"):
        list_captures("s3://no-such-bucket-x/captures", None, None)
    assert list_captures(f"s3://{s3_bucket}/nothing-here", None, None) == []
    gone = ObjectRef(
        f"s3://{s3_bucket}/captures", "m/dt=2026-03-01/hour=10/x.jsonl.gz", 1, "records"
    )
    with pytest.raises(InputError, match=rf"{gone.name}: no such object"):
        list(read_records(gone))
    (port,) = free_ports(1)
    monkeypatch.setenv("MODELTAP_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(InputError, match=rf"s3://{s3_bucket}/captures.*cannot reach S3"):
        list_captures(f"s3://{s3_bucket}/captures", None, None)


def test_s3_object_is_streamed_and_bad_lines_counted(s3_env: Any, s3_bucket: str) -> None:
    pad = "x" * 200
    lines = [
        orjson.dumps({"schema": 1, "time": "2026-03-01T10:00:00Z", "rows": [], "i": i, "p": pad})
        for i in range(30_000)
    ]
    lines.insert(1500, b"{torn")  # line 1501
    body = b"\n".join(lines) + b"\n"  # plain JSONL: ~7 MB on the wire
    key = "captures/m/dt=2026-03-01/hour=10/h-1-1_000001.jsonl"
    s3_env.client().put_object(Bucket=s3_bucket, Key=key, Body=body)
    (ref,) = list_captures(f"s3://{s3_bucket}/captures", hour(10), hour(11))
    assert ref.size == len(body)
    stats = ReadStats()
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_records(ref, hour(10), hour(11), stats=stats))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 30_000
    assert peak < len(body) / 4  # streamed: never the whole object in memory
    assert (stats.lines, stats.records, stats.bad_lines) == (30_001, 30_000, 1)
    (problem,) = stats.problems
    assert problem.startswith(f"{ref.name}:1501: invalid JSON (")


# -- bad input ---------------------------------------------------------------------


def test_missing_or_odd_locations(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=rf"{tmp_path / 'nope'}: no such directory"):
        list_captures(str(tmp_path / "nope"), None, None)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match=rf"{tmp_path / 'file'}: not a directory"):
        list_captures(str(tmp_path / "file"), None, None)
    with pytest.raises(InputError, match=r"gs://b/p: unsupported scheme 'gs'"):
        list_captures("gs://b/p", None, None)
    with pytest.raises(InputError, match=r"s3://: no bucket"):
        list_captures("s3://", None, None)
    with pytest.raises(InputError, match="empty"):
        list_captures(" ", None, None)


def put(root: Path, data: bytes, name: str = "h-1-1_000001.jsonl.gz") -> ObjectRef:
    path = root / "m/dt=2026-03-01/hour=10" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    (ref,) = [r for r in list_captures(str(root), None, None) if r.key.endswith(name)]
    return ref


REC = orjson.dumps({"schema": 1, "event_id": "a", "time": "2026-03-01T10:00:00.000Z", "rows": []})


def test_corrupt_gzip_raises_naming_the_object(tmp_path: Path) -> None:
    whole = gzip.compress(REC + b"\n" + REC + b"\n" * 5000)
    ref = put(tmp_path, whole[: len(whole) // 2])
    with pytest.raises(InputError, match=rf"{ref.name}: corrupt gzip stream after line \d+"):
        list(read_records(ref))
    ref = put(tmp_path, b"\x1f\x8b" + os.urandom(200), "h-1-1_000002.jsonl.gz")
    with pytest.raises(InputError, match=rf"{ref.name}: corrupt gzip stream"):
        list(read_records(ref))
    # A damaged deflate stream (ISA-L and zlib raise their own errors) and a bad CRC.
    garbled = whole[:40] + b"\xff" * 200 + whole[240:]
    bad_crc = whole[:-8] + bytes([whole[-8] ^ 0xFF]) + whole[-7:]
    for i, data in enumerate((garbled, bad_crc), 3):
        ref = put(tmp_path, data, f"h-1-1_00000{i}.jsonl.gz")
        with pytest.raises(InputError, match=rf"{ref.name}: corrupt gzip stream"):
            list(read_records(ref))


def test_file_without_a_valid_record_raises(tmp_path: Path) -> None:
    ref = put(tmp_path, gzip.compress(b'\n\nnot json\n{"a": 1}\n'))
    with pytest.raises(
        InputError,
        match=rf"{ref.name}: no valid record in 2 line\(s\); "
        r"line 3: invalid JSON",
    ):
        list(read_records(ref))
    ref = put(tmp_path, b"", "h-1-1_000002.jsonl")
    with pytest.raises(InputError, match=rf"{ref.name}: empty"):
        list(read_records(ref))
    missing = ObjectRef(str(tmp_path), "m/nope.jsonl.gz", 0, "records")
    with pytest.raises(InputError, match=rf"{missing.name}: no such file"):
        list(read_records(missing))


def test_bad_lines_are_skipped_and_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 4096)
    lines = [
        REC,
        b"   ",
        b"[1, 2]",
        b'{"hello": "world"}',
        b'{"schema": 1, "rows": []}',  # no time, with a window set
        b'{"schema": 1, "time": "2026-03-01T10:00:00Z", "x": "' + b"y" * 10_000 + b'"}',
        b'{"schema": 1, "time": "2026-03-01T10:00:01Z", "v": NaN}',
        REC,
    ]
    ref = put(tmp_path, b"\n".join(lines), "h-1-1_000003.jsonl")  # plain JSONL also reads
    stats = ReadStats()
    got = list(read_records(ref, hour(10), hour(11), stats=stats))
    assert [r.get("event_id") for r in got] == ["a", None, "a"]
    assert got[1]["v"] != got[1]["v"]  # NaN, read leniently
    assert (stats.lines, stats.records, stats.bad_lines) == (7, 3, 4)
    assert stats.problems == [
        f"{ref.name}:3: a JSON list, not an object",
        f"{ref.name}:4: not a capture record (no schema, time or rows)",
        f"{ref.name}:5: record time missing or not ISO-8601",
        f"{ref.name}:6: line longer than 4096 bytes",
    ]
    # Without a window, a record without time is kept.
    assert len(list(read_records(ref))) == 4


# -- flatten -----------------------------------------------------------------------


def captured(tmp_path: Path, request: Any, response: Any, **kw: Any) -> dict[str, Any]:
    """The record the real Capturer writes for one exchange, read back by the reader."""
    with Capturer(sink=str(tmp_path), model="m", **kw) as cap:
        cap.submit(Exchange.of(orjson.dumps(request), orjson.dumps(response), start=at(10)))
    (ref,) = list_captures(str(tmp_path), None, None)
    (record,) = read_records(ref)
    return record


def test_flatten_kserve_record(tmp_path: Path) -> None:
    rec = captured(
        tmp_path,
        {"instances": [{"age": 31, "plan": "pro", "geo": {"country": "NL"}}, {"age": 40}]},
        {"predictions": [{"label": "a", "p": 0.9}, [0.2, 0.8]]},
        model_version="7",
    )
    assert flatten(rec) == [
        {
            "model.version": "7",
            "age": 31,
            "plan": "pro",
            "geo.country": "NL",
            "prediction.label": "a",
            "prediction.p": 0.9,
        },
        {"model.version": "7", "age": 40, "prediction.0": 0.2, "prediction.1": 0.8},
    ]


def test_flatten_ranking_with_item_and_request_lookups(tmp_path: Path) -> None:
    rec = captured(
        tmp_path,
        {"user": "u1", "items": [{"item_id": "a", "price": 3.0}, {"item_id": "b", "price": 5.0}]},
        {
            "scores": [0.2, 0.7],
            "_modeltap": {"lookups": {"user_ltv": 12.5}, "items": {"a": {"stock": 3}}},
        },
    )
    rows = flatten(rec)
    assert rows == [
        {
            "context.user": "u1",
            "context.list_length": 2,
            "context.top1_score": 0.7,
            "context.top1_margin": pytest.approx(0.5),
            "lookups.user_ltv": 12.5,
            "price": 3.0,
            "score": 0.2,
            "rank": 2,
            "position": 0,
            "item_id": "a",
            "lookups.stock": 3,
        },
        {
            "context.user": "u1",
            "context.list_length": 2,
            "context.top1_score": 0.7,
            "context.top1_margin": pytest.approx(0.5),
            "lookups.user_ltv": 12.5,
            "price": 5.0,
            "score": 0.7,
            "rank": 1,
            "position": 1,
            "item_id": "b",
        },
    ]


def test_flatten_records_without_rows() -> None:
    level = {
        "context": {"user": {"tier": "gold"}},
        "lookups": {"ltv": 3},
        "rows": [],
        "model": {"version": 2},
    }
    assert flatten(level) == [{"context.user.tier": "gold", "lookups.ltv": 3, "model.version": 2}]
    assert flatten({"context": {}, "lookups": {}, "rows": [], "model": {"version": 2}}) == []
    assert flatten({"rows": "nope", "context": {"a": 1}}) == [{"context.a": 1}]


def test_flatten_never_raises_on_odd_shapes() -> None:
    odd: list[Any] = [
        None,
        [],
        "x",
        {"rows": None},
        {"rows": [1, "a", None]},
        {"rows": [{"features": [1, 2]}], "context": "x", "lookups": 3, "model": "m"},
        {"rows": [{"features": {"score": 1, "model": {"version": 9}}, "score": 0.5}]},
        {"rows": [{"prediction": list(range(100))}]},
        {"rows": [{"prediction": {}, "lookups": [1]}]},
    ]
    out = [flatten(r) for r in odd]
    assert out[:5] == [[], [], [], [], []]
    assert out[5] == [{}]
    assert out[6] == [{"features.score": 1, "features.model.version": 9, "score": 0.5}]
    assert out[7] == [{"prediction": list(range(100))}]
    assert out[8] == [{"prediction": {}}]


@settings(max_examples=300, deadline=None)
@given(st.datetimes(datetime(1970, 1, 2), datetime(2200, 1, 1), timezones=st.just(timezone.utc)))
def test_record_time_fast_path_equals_parse_time(t: datetime) -> None:
    from capture.record import parse_time
    from monitor_job.readers import record_time

    text = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
    assert record_time(text) == parse_time(text)
    assert record_time(text) is not None


@pytest.mark.parametrize(
    "text", ["2026-02-30T10:00:00.000Z", "2026-11-20T10:61:00.000Z", "2026-11-20 10:00:00", "x", 5]
)
def test_record_time_odd_spellings_go_through_parse_time(text: Any) -> None:
    from capture.record import parse_time
    from monitor_job.readers import record_time

    assert record_time(text) == parse_time(text)


@pytest.mark.parametrize(
    ("sampling", "want"),
    [
        ({"rate": 0.1, "reason": "sampled"}, "0.1"),
        ({"rate": 0.25, "reason": "sampled"}, "0.25"),
        ({"rate": 1.0, "reason": "sampled"}, None),  # stands for itself
        ({"rate": 1, "reason": "sampled"}, None),
        ({"rate": 0.1, "reason": "error"}, None),  # kept whatever the rate
        ({"rate": 0.1, "reason": "slow"}, None),
        ({"rate": 0.0, "reason": "sampled"}, None),  # no traffic stands behind it
        ({"rate": -0.5, "reason": "sampled"}, None),
        ({"rate": 1.5, "reason": "sampled"}, None),
        ({"rate": float("nan"), "reason": "sampled"}, None),
        ({"rate": True, "reason": "sampled"}, None),
        ({"rate": "0.1", "reason": "sampled"}, None),
        ({"rate": None, "reason": "sampled"}, None),
        ({"rate": 0.1}, None),
        ({"reason": "sampled"}, None),
        (None, None),
        ("sampled", None),
    ],
)
def test_sampled_rate_names_what_a_record_stands_for(sampling: Any, want: str | None) -> None:
    assert sampled_rate({"schema": 1, "sampling": sampling}) == want
    assert sampled_rate({"schema": 1}) is None
    assert sampled_rate(["not", "a", "record"]) is None
