"""Ground-truth labels: parsing and validation, and their trip through the
capture's buffer to the sink under ``ground_truth/``."""

import json
import time

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capture.capturer import Capturer
from capture.labels import LABEL_KIND, MAX_ERRORS, parse_labels
from tests.capture.test_capturer import ex
from tests.support import read_objects

NOW = 1_795_000_000.0  # 2026-11-18T11:06:40Z


def parse(body, **kw):
    return parse_labels(
        body if isinstance(body, bytes) else orjson.dumps(body), model="churn", now=NOW, **kw
    )


@pytest.mark.parametrize(
    "body",
    [
        {"event_id": "e1", "label": 1},
        [{"event_id": "e1", "label": 1}],
        {"labels": [{"event_id": "e1", "label": 1}]},
        b'{"event_id": "e1", "label": 1}\n',
        b'\n{"event_id": "e1", "label": 1}\r\n\n',
    ],
)
def test_the_accepted_shapes_give_the_same_record(body):
    batch = parse(body)
    assert batch.summary() == {"accepted": 1, "rejected": 0, "dropped": 0, "errors": []}
    assert batch.records == [
        {
            "schema": 1,
            "kind": LABEL_KIND,
            "event_id": "e1",
            "item_id": None,
            "label": 1,
            "time": "2026-11-18T11:06:40.000Z",
            "received": "2026-11-18T11:06:40.000Z",
            "model": {"name": "churn"},
            "source": "api",
        }
    ]


def test_optional_fields_item_time_model():
    batch = parse(
        b'{"event_id": "r1", "item_id": "sku-9", "label": 3, "time": "2026-11-01T10:00:00Z"}\n'
        b'{"event_id": "r2", "item_id": 17, "label": true, "time": 1793527200.5,'
        b' "model": "ranker"}\n'
        b'{"event_id": "r3", "label": "cat", "time": "2026-11-01T12:00:00+02:00"}\n'
    )
    assert batch.rejected == 0
    r1, r2, r3 = batch.records
    assert (r1["item_id"], r1["label"], r1["time"]) == ("sku-9", 3, "2026-11-01T10:00:00.000Z")
    assert (r2["item_id"], r2["label"], r2["model"]) == ("17", True, {"name": "ranker"})
    assert r2["time"] == "2026-11-01T10:00:00.500Z"
    assert (r3["label"], r3["time"]) == ("cat", "2026-11-01T10:00:00.000Z")


def test_sagemaker_ground_truth_lines():
    lines = [
        {
            "groundTruthData": {"data": "1", "encoding": "CSV"},
            "eventMetadata": {"eventId": "sm-1"},
            "eventVersion": "0",
        },
        {
            "groundTruthData": {"data": "0.25,extra", "encoding": "CSV"},
            "eventMetadata": {"eventId": "sm-2"},
            "eventVersion": "0",
        },
        {
            "groundTruthData": {"data": '"spam"', "encoding": "JSON"},
            "eventMetadata": {"eventId": "sm-3"},
            "eventVersion": "0",
        },
        {
            "groundTruthData": {"data": "1", "encoding": "PROTOBUF"},
            "eventMetadata": {"eventId": "sm-4"},
        },
    ]
    batch = parse(b"\n".join(orjson.dumps(x) for x in lines))
    assert [(r["event_id"], r["label"], r["source"]) for r in batch.records] == [
        ("sm-1", 1, "sagemaker"),
        ("sm-2", 0.25, "sagemaker"),
        ("sm-3", "spam", "sagemaker"),
    ]
    assert batch.errors == [
        {"index": 3, "error": "groundTruthData.encoding 'PROTOBUF' (CSV or JSON expected)"}
    ]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ({"label": 1}, "event_id missing"),
        ({"event_id": "", "label": 1}, "event_id missing"),
        ({"event_id": ["x"], "label": 1}, "event_id must be a string"),
        ({"event_id": "e" * 300, "label": 1}, "event_id longer than 256 characters"),
        ({"event_id": "e"}, "label is null"),
        ({"event_id": "e", "label": None}, "label is null"),
        ({"event_id": "e", "label": [1, 0]}, "label must be a boolean, number or string, not list"),
        (
            {"event_id": "e", "label": {"y": 1}},
            "label must be a boolean, number or string, not dict",
        ),
        ({"event_id": "e", "label": "x" * 2000}, "label longer than 1024 characters"),
        ({"event_id": "e", "label": 1, "time": "yesterday"}, "time is not ISO 8601"),
        ({"event_id": "e", "label": 1, "time": -5}, "time out of range (epoch seconds expected)"),
        ({"event_id": "e", "label": 1, "model": "../etc"}, "model must be a simple name"),
        ({"event_id": "e", "label": 1, "model": 7}, "model must be a simple name"),
        ("just a string", "a JSON str, not an object"),
    ],
)
def test_invalid_entries_are_refused_with_the_reason(entry, problem):
    batch = parse([{"event_id": "ok", "label": 0}, entry])
    assert [r["event_id"] for r in batch.records] == ["ok"]
    assert batch.rejected == 1
    assert batch.errors[0]["index"] == 1
    assert batch.errors[0]["error"].startswith(problem)


def test_bad_lines_of_jsonl_are_counted_and_the_rest_kept():
    body = b'{"event_id": "a", "label": 1}\n{"event_id": "b", "lab\n{"event_id": "c", "label": 0}\n'
    batch = parse(body)
    assert [r["event_id"] for r in batch.records] == ["a", "c"]
    assert batch.rejected == 1
    assert batch.errors[0]["index"] == 1
    assert batch.errors[0]["error"].startswith("line 2: invalid JSON")


@pytest.mark.parametrize(
    "body", [b"", b"   \n", b"\xff\xfe\x00garbage", b"[1, 2", b"null", b"[]", b'{"labels": []}']
)
def test_unusable_bodies_accept_nothing_and_say_why(body):
    batch = parse(body)
    assert batch.records == []
    assert batch.rejected >= 1
    assert batch.errors and batch.errors[0]["error"]


def test_error_list_is_capped_but_the_count_is_not():
    batch = parse([{"event_id": "e"}] * 100)
    assert batch.rejected == 100
    assert len(batch.errors) == MAX_ERRORS


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False)
            | st.text(max_size=20),
            lambda children: (
                st.lists(children, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        ["event_id", "label", "item_id", "time", "model", "labels", "x"]
                    ),
                    children,
                    max_size=5,
                )
            ),
            max_leaves=12,
        ).map(lambda doc: json.dumps(doc).encode()),
    )
)
def test_parse_never_raises_and_accounts_for_every_entry(body):
    batch = parse(body)
    assert batch.rejected >= len(batch.errors) and len(batch.errors) <= MAX_ERRORS
    if not body.strip():
        assert batch.rejected == 1  # an empty body is refused, not silently accepted
    for r in batch.records:
        assert isinstance(r["event_id"], str) and r["event_id"]
        assert r["label"] is not None and not isinstance(r["label"], (list, dict))
        orjson.dumps(r)  # always encodable


def test_labels_reach_the_sink_under_their_own_prefix(tmp_path):
    with Capturer(sink=str(tmp_path), model="churn", profile_all=True) as cap:
        for i in range(3):
            assert cap.submit(ex(i))
        batch = cap.ingest_labels(
            b'{"event_id": "ev-0", "label": 1}\n{"event_id": "ev-1", "label": 0}\n{"label": 2}\n'
            b'{"event_id": "ev-2", "label": 1, "model": "other"}\n'
        )
        assert batch.summary()["accepted"] == 3 and batch.rejected == 1
    objects = read_objects(tmp_path)
    by_prefix: dict[str, list] = {}
    for key, lines in objects.items():
        by_prefix.setdefault(key.split("/dt=")[0], []).extend(lines)
    records = {k: v for k, v in by_prefix.items() if not k.endswith(".profile.json")}
    assert sorted(records) == ["churn", "ground_truth/churn", "ground_truth/other"]
    assert sorted(r["event_id"] for r in records["ground_truth/churn"]) == ["ev-0", "ev-1"]
    assert all("kind" not in r for r in records["churn"])
    for key, lines in objects.items():  # partitioned by the hour they were received
        if key.startswith("ground_truth/"):
            received = time.strptime(lines[0]["received"][:13], "%Y-%m-%dT%H")
            assert time.strftime("/dt=%Y-%m-%d/hour=%H/", received) in key
    # labels are not traffic: the full-traffic profile counts the 3 exchanges only
    assert cap.stats.get("profiled") == 3
    s = cap.stats.snapshot()
    assert (s["labels_accepted"], s["labels_rejected"]) == (3, 1)
    assert s["offered"] == s["kept"] == s["records_written"] == 6


def test_labels_dropped_when_the_buffer_is_closed(tmp_path):
    cap = Capturer(sink=str(tmp_path), model="churn")
    cap.close()
    batch = cap.ingest_labels(b'{"event_id": "e", "label": 1}')
    assert batch.summary()["accepted"] == 0 and batch.dropped == 1
    assert cap.stats.dropped("shutdown") == 1
