"""SageMaker Data Capture files read as modeltap records: CSV, JSON and BASE64
payloads give the rows our own capture gives; the yyyy/mm/dd/hh layout is
pruned by window, locally and in a real S3 (SeaweedFS); bad lines are counted."""

from __future__ import annotations

import base64
import logging
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest

from capture.capturer import Capturer
from capture.types import Exchange
from monitor_job.readers import InputError, ReadStats, flatten, list_captures, read_records

DAY = datetime(2026, 3, 1, tzinfo=timezone.utc)
COLUMNS = ["f0", "f1", "f2"]


def hour(h: float, day: int = 0) -> datetime:
    return DAY + timedelta(days=day, hours=h)


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def part(data: Any, content_type: str, encoding: str, mode: str) -> dict[str, Any]:
    return {"observedContentType": content_type, "mode": mode, "data": data, "encoding": encoding}


def line(
    inp: tuple[Any, str, str],
    out: tuple[Any, str, str],
    event_id: str,
    when: datetime,
    inference_id: str | None = None,
) -> dict[str, Any]:
    meta = {"eventId": event_id, "inferenceTime": iso(when)}
    if inference_id is not None:
        meta["inferenceId"] = inference_id
    return {
        "captureData": {
            "endpointInput": part(*inp, "INPUT"),
            "endpointOutput": part(*out, "OUTPUT"),
        },
        "eventMetadata": meta,
        "eventVersion": "0",
    }


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


CSV_IN = ("5.1,web,3", "text/csv", "CSV")
JSON_IN = ('{"instances": [[1.5, "ios", 2]]}', "application/json", "JSON")


def write(root: Path, rel: str, lines: list[dict[str, Any]] | list[bytes]) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = [x if isinstance(x, bytes) else orjson.dumps(x) for x in lines]
    path.write_bytes(b"\n".join(raw) + b"\n")
    return path


def our_rows(tmp_path: Path, req: bytes, resp: bytes, content_type: str) -> list[Any]:
    """The rows our own capture writes for the same exchange."""
    sink = tmp_path / "ours"
    with Capturer(sink=str(sink), model="m", csv_columns=tuple(COLUMNS)) as cap:
        cap.submit(Exchange.of(req, resp, content_type=content_type))
    (ref,) = list_captures(str(sink), None, None)
    (record,) = read_records(ref)
    return list(record["rows"])


def test_payload_encodings_give_the_rows_of_our_own_capture(tmp_path: Path) -> None:
    t = hour(10.25)
    lines = [
        line(CSV_IN, ("0.93", "text/csv", "CSV"), "e-csv", t, inference_id="inf-1"),
        line(JSON_IN, ('{"predictions": [0.4]}', "application/json", "JSON"), "e-json", t),
        line(
            (
                b64(b'{"instances": [[2.5, "web", 1], [0.5, "tv", 0]]}'),
                "application/json",
                "BASE64",
            ),
            (b64(b'{"predictions": [0.7, 0.1]}'), "application/json", "BASE64"),
            "e-b64",
            t,
        ),
        line(
            (b64(b"1,2,3\n4,5,6"), "text/csv", "BASE64"),
            ("0.1\n0.2", "text/csv", "CSV"),
            "e-b64csv",
            t,
        ),
    ]
    rel = "ep-1/AllTraffic/2026/03/01/10/05-00-000-abc.jsonl"
    write(tmp_path / "dc", rel, lines)
    (ref,) = list_captures(str(tmp_path / "dc"), None, None)
    assert (ref.key, ref.kind) == (rel, "records")
    records = list(read_records(ref, csv_columns=COLUMNS))
    assert [r["event_id"] for r in records] == ["inf-1", "e-json", "e-b64", "e-b64csv"]
    assert records[0]["extra"]["sagemaker"] == {"eventId": "e-csv", "inferenceId": "inf-1"}
    assert {r["time"] for r in records} == {"2026-03-01T10:15:00.000Z"}
    assert all(r["model"]["name"] == "ep-1" for r in records)
    assert all(r["model"]["variant"] == "AllTraffic" for r in records)
    assert all(r["source"] == "sagemaker" and r["status"] is None for r in records)
    assert all(r["parse"]["error"] is None for r in records)
    assert records[0]["rows"] == [
        {"features": {"f0": 5.1, "f1": "web", "f2": 3}, "prediction": 0.93}
    ]
    assert records[0]["parse"]["adapter"] == "csv"
    assert records[2]["rows"] == [
        {"features": {"f0": 2.5, "f1": "web", "f2": 1}, "prediction": 0.7},
        {"features": {"f0": 0.5, "f1": "tv", "f2": 0}, "prediction": 0.1},
    ]
    assert records[3]["rows"] == [
        {"features": {"f0": 1, "f1": 2, "f2": 3}, "prediction": 0.1},
        {"features": {"f0": 4, "f1": 5, "f2": 6}, "prediction": 0.2},
    ]
    # Exactly the rows our capture writes for the same bytes.
    assert records[0]["rows"] == our_rows(tmp_path, b"5.1,web,3", b"0.93", "text/csv")
    assert records[1]["rows"] == our_rows(
        tmp_path / "2", JSON_IN[0].encode(), b'{"predictions": [0.4]}', "application/json"
    )
    assert flatten(records[1]) == [{"f0": 1.5, "f1": "ios", "f2": 2, "prediction": 0.4}]


def test_csv_without_column_names_uses_positions(tmp_path: Path) -> None:
    rel = "ep/v1/2026/03/01/10/x.jsonl"
    write(
        tmp_path,
        rel,
        [line(("1.5,2,3", "text/csv", "CSV"), ("1", "text/csv", "CSV"), "e", hour(10))],
    )
    (ref,) = list_captures(str(tmp_path), None, None)
    (record,) = read_records(ref)
    assert record["rows"] == [{"features": {"f0": 1.5, "f1": 2, "f2": 3}, "prediction": 1}]


def tree(root: Path) -> None:
    out = ("0.5", "text/csv", "CSV")
    write(root, "ep/AllTraffic/2026/03/01/09/a.jsonl", [line(CSV_IN, out, "e9", hour(9.5))])
    write(
        root,
        "ep/AllTraffic/2026/03/01/10/a.jsonl",
        [line(CSV_IN, out, "e10a", hour(10.2)), line(CSV_IN, out, "e10b", hour(10.8))],
    )
    write(root, "ep/AllTraffic/2026/03/02/10/a.jsonl", [line(CSV_IN, out, "d2", hour(10, 1))])
    write(root, "ep/Canary/2026/03/01/10/a.jsonl", [line(CSV_IN, out, "c10", hour(10.5))])
    write(root, "other/AllTraffic/2026/03/01/10/a.jsonl", [line(CSV_IN, out, "o10", hour(10.5))])


def ids(refs: list[Any], start: datetime | None, end: datetime | None) -> list[str]:
    return sorted(r["event_id"] for ref in refs for r in read_records(ref, start, end, COLUMNS))


def test_layout_is_pruned_by_window_and_filtered_by_endpoint(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tree(tmp_path)
    with caplog.at_level(logging.DEBUG, logger="monitor_job.locations"):
        refs = list_captures(str(tmp_path), hour(10), hour(10.5), model="ep")
    listed = sorted(
        os.path.relpath(r.getMessage().removeprefix("listing "), tmp_path) for r in caplog.records
    )
    assert "ep/AllTraffic/2026/03/02" not in listed and "other" not in listed
    assert "ep/AllTraffic/2026/03/01/10" in listed
    assert [r.key for r in refs] == [
        "ep/AllTraffic/2026/03/01/09/a.jsonl",  # the hour before, written just now
        "ep/AllTraffic/2026/03/01/10/a.jsonl",
        "ep/Canary/2026/03/01/10/a.jsonl",
    ]
    assert ids(refs, hour(10), hour(10.5)) == ["e10a"]
    everything = list_captures(str(tmp_path), None, None)
    assert ids(everything, None, None) == ["c10", "d2", "e10a", "e10b", "e9", "o10"]
    # A variant's directory as the location: the endpoint still comes from the path.
    variant = list_captures(str(tmp_path / "ep/Canary"), None, None)
    (record,) = read_records(variant[0], csv_columns=COLUMNS)
    assert (record["model"]["name"], record["model"]["variant"]) == ("ep", "Canary")


def test_sagemaker_layout_in_s3(
    seaweed: Any, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELTAP_S3_ENDPOINT_URL", seaweed.endpoint_url)
    tree(tmp_path)
    client = seaweed.client()
    for path in sorted(tmp_path.rglob("*.jsonl")):
        key = f"datacapture/{path.relative_to(tmp_path)}"
        client.put_object(Bucket=s3_bucket, Key=key, Body=path.read_bytes())
    refs = list_captures(f"s3://{s3_bucket}/datacapture", hour(10), hour(11))
    assert [r.key for r in refs] == [
        "ep/AllTraffic/2026/03/01/09/a.jsonl",
        "ep/AllTraffic/2026/03/01/10/a.jsonl",
        "ep/Canary/2026/03/01/10/a.jsonl",
        "other/AllTraffic/2026/03/01/10/a.jsonl",
    ]
    assert ids(refs, hour(10), hour(11)) == ["c10", "e10a", "e10b", "o10"]


def test_bad_sagemaker_lines_are_counted_with_the_problem(tmp_path: Path) -> None:
    good = line(CSV_IN, ("0.5", "text/csv", "CSV"), "ok", hour(10))
    bad_b64 = line(("%%%", "text/csv", "BASE64"), ("0.5", "text/csv", "CSV"), "b", hour(10))
    bad_enc = line(("1,2", "text/csv", "ZIP"), ("0.5", "text/csv", "CSV"), "z", hour(10))
    no_time = line(CSV_IN, ("0.5", "text/csv", "CSV"), "t", hour(10))
    del no_time["eventMetadata"]["inferenceTime"]
    number = line((12, "text/csv", "CSV"), ("0.5", "text/csv", "CSV"), "n", hour(10))
    lines = [good, bad_b64, bad_enc, no_time, number, {"captureData": "x"}]
    write(tmp_path, "ep/v/2026/03/01/10/x.jsonl", lines)
    (ref,) = list_captures(str(tmp_path), None, None)
    stats = ReadStats()
    got = list(read_records(ref, csv_columns=COLUMNS, stats=stats))
    assert [r["event_id"] for r in got] == ["ok"]
    assert stats.problems == [
        f"{ref.name}:2: captureData.endpointInput.data is not valid BASE64",
        f"{ref.name}:3: captureData.endpointInput: unknown encoding 'ZIP'",
        f"{ref.name}:4: eventMetadata.inferenceTime missing or not ISO-8601",
        f"{ref.name}:5: captureData.endpointInput.data is a int, not a string",
        f"{ref.name}:6: captureData is not an object",
    ]
    write(tmp_path, "ep/v/2026/03/01/10/y.jsonl", [bad_b64, bad_enc])
    ref_y = ref.__class__(ref.location, "ep/v/2026/03/01/10/y.jsonl", 0, "records")
    with pytest.raises(
        InputError,
        match=rf"{ref_y.name}: no valid record in 2 line\(s\); "
        r"line 1: captureData.endpointInput.data is not valid",
    ):
        list(read_records(ref_y))


def test_unparseable_payload_keeps_the_record_with_a_parse_note(tmp_path: Path) -> None:
    odd = line(
        ("\x00\x01", "application/octet-stream", "CSV"), ("?", "text/plain", "CSV"), "o", hour(10)
    )
    write(tmp_path, "ep/v/2026/03/01/10/x.jsonl", [odd])
    (ref,) = list_captures(str(tmp_path), None, None)
    (record,) = read_records(ref)
    assert record["rows"] == [] and record["parse"]["error"]
    assert flatten(record) == []
