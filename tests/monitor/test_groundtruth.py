"""The monitor's label join: labels received in a window, matched to captured
predictions up to the lookback before it. Captures and labels are written by
the real ``Capturer`` (local sink, manual clock) so the layout is production's."""

from __future__ import annotations

import gzip
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from capture.capturer import Capturer
from capture.clock import ManualClock
from capture.record import format_time
from monitor_job.groundtruth import join, prediction_of

DAY = datetime(2026, 11, 2, tzinfo=timezone.utc)


def record(event_id: str, t: float, rows: list[dict[str, Any]], model: str = "m", version="1"):
    return {
        "schema": 1,
        "event_id": event_id,
        "time": format_time(t),
        "model": {"name": model, "version": version},
        "rows": rows,
    }


class Store:
    """Writes captures and labels at chosen times through one Capturer per call."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def captures(self, records: list[dict[str, Any]], at: datetime) -> None:
        clock = ManualClock(at.timestamp())
        with Capturer(sink=str(self.root), model="m", clock=clock) as cap:
            for r in records:
                assert cap.offer_record(r, 500)

    def labels(self, body: bytes, at: datetime, model: str = "m") -> dict[str, Any]:
        clock = ManualClock(at.timestamp())
        with Capturer(sink=str(self.root), model=model, clock=clock) as cap:
            batch = cap.ingest_labels(body)
        return batch.summary()


def lines(*entries: dict[str, Any]) -> bytes:
    return b"\n".join(orjson.dumps(e) for e in entries)


def day(n: int, hour: int = 0) -> datetime:
    return DAY + timedelta(days=n, hours=hour)


def binary_day(store: Store, n: int = 100) -> list[str]:
    """n one-row predictions on day 0 at 10:00 (prediction = probability)."""
    t0 = day(0, 10).timestamp()
    ids = [f"ev-{i}" for i in range(n)]
    store.captures(
        [
            record(e, t0 + i, [{"features": {"x": i}, "prediction": round(i / n, 3)}])
            for i, e in enumerate(ids)
        ],
        day(0, 10),
    )
    return ids


def test_labels_received_in_the_window_join_their_predictions(tmp_path):
    store = Store(tmp_path)
    ids = binary_day(store)
    summary = store.labels(
        lines(*({"event_id": e, "label": i % 2} for i, e in enumerate(ids[:80]))), day(1, 9)
    )
    assert summary["accepted"] == 80
    # repeats: the later one wins; unknown events; another model's labels on our events
    store.labels(lines(*({"event_id": e, "label": 7} for e in ids[:3])), day(1, 8))
    store.labels(
        lines(*({"event_id": e, "label": 1 - i % 2} for i, e in enumerate(ids[:3]))), day(1, 11)
    )
    store.labels(
        lines({"event_id": "nobody", "label": 1}, {"event_id": "ghost", "label": 0}), day(1, 12)
    )
    store.labels(
        lines({"event_id": ids[90], "label": 1}, {"event_id": ids[91], "label": 0}),
        day(1, 12),
        model="other",
    )

    pairs, counts = join(str(tmp_path), None, day(1), day(2), model="m", lookback_s=2 * 86400)
    got = {p.event_id: p for p in pairs}
    assert len(pairs) == 80
    assert [got[e].label for e in ids[:3]] == [
        1,
        0,
        1,
    ]  # the 11:00 repeat wins over 09:00 and 08:00
    assert all(got[e].label == i % 2 for i, e in enumerate(ids) if 3 <= i < 80)
    assert got[ids[42]].prediction == 0.42 and got[ids[42]].version == "1"
    assert got[ids[42]].time == day(0, 10).timestamp() + 42
    c = counts.to_dict()
    assert (c["matched"], c["unmatched"], c["wrong_model"], c["duplicates"]) == (80, 2, 2, 6)
    assert c["labels"] == 84 and c["invalid"] == 0
    assert (c["predictions"], c["labelled_predictions"]) == (100, 80)
    assert c["labelled_share"] == 0.8


def test_a_window_before_the_labels_arrive_has_no_pairs_and_no_error(tmp_path):
    store = Store(tmp_path)
    ids = binary_day(store)
    store.labels(lines(*({"event_id": e, "label": 1} for e in ids)), day(1, 9))
    pairs, counts = join(str(tmp_path), None, day(0), day(1), model="m")
    assert pairs == [] and counts.labels == 0
    # and labels older than the lookback's predictions match nothing
    pairs, counts = join(str(tmp_path), None, day(1), day(2), model="m", lookback_s=3600)
    assert pairs == [] and counts.unmatched == 100


def test_no_label_location_is_no_labels(tmp_path):
    store = Store(tmp_path)
    binary_day(store)
    pairs, counts = join(str(tmp_path), str(tmp_path / "nowhere"), day(0), day(1))
    assert pairs == [] and counts.to_dict()["labels"] == 0


def test_ranking_labels_bring_in_the_whole_request(tmp_path):
    store = Store(tmp_path)
    t = day(0, 10).timestamp()
    items = [
        {"item_id": f"sku-{k}", "score": 1 - k / 10, "rank": k + 1, "position": k} for k in range(5)
    ]
    store.captures([record("req-1", t, items), record("req-2", t + 1, items[:2])], day(0, 10))
    store.labels(
        lines(
            {"event_id": "req-1", "item_id": "sku-3", "label": 1},
            {"event_id": "req-1", "item_id": "sku-0", "label": 2},
            {"event_id": "req-1", "item_id": "sku-99", "label": 1},  # not an item of the request
        ),
        day(0, 12),
    )
    pairs, counts = join(str(tmp_path), None, day(0), day(1))
    assert [(p.item_id, p.label, p.rank, p.score) for p in pairs] == [
        ("sku-0", 2, 1, 1.0),
        ("sku-1", None, 2, 0.9),
        ("sku-2", None, 3, 0.8),
        ("sku-3", 1, 4, 0.7),
        ("sku-4", None, 5, 0.6),
    ]
    assert (counts.matched, counts.unmatched, counts.labelled_predictions) == (2, 1, 2)
    assert counts.predictions == 7


def test_batches_of_instances_need_an_item_id_or_row_index(tmp_path):
    store = Store(tmp_path)
    t = day(0, 10).timestamp()
    rows = [{"features": {"x": k}, "prediction": k * 10.0} for k in range(3)]
    store.captures([record("batch", t, rows)], day(0, 10))
    store.labels(lines({"event_id": "batch", "label": 5}), day(0, 11))
    pairs, counts = join(str(tmp_path), None, day(0), day(1))
    assert pairs == [] and counts.ambiguous == 1 and counts.matched == 0
    store.labels(lines({"event_id": "batch", "item_id": "1", "label": 11.5}), day(0, 12))
    pairs, counts = join(str(tmp_path), None, day(0), day(1))
    assert [(p.prediction, p.label) for p in pairs if p.label is not None] == [(10.0, 11.5)]


def test_sagemaker_ground_truth_files_and_bad_objects(tmp_path):
    store = Store(tmp_path / "captures")
    ids = binary_day(store, n=10)
    gt = tmp_path / "groundtruth" / "endpoint" / "2026" / "11" / "03" / "05"
    gt.mkdir(parents=True)
    good = gt / "labels.jsonl"
    good.write_bytes(
        lines(
            *(
                {
                    "groundTruthData": {"data": str(i % 2), "encoding": "CSV"},
                    "eventMetadata": {"eventId": e},
                    "eventVersion": "0",
                }
                for i, e in enumerate(ids)
            )
        )
        + b"\n{torn line\n"
    )
    (gt / "broken.jsonl.gz").write_bytes(gzip.compress(b'{"event_id": "x", "label": 1}\n')[:-12])
    when = (
        day(
            1,
            5,
        ).timestamp()
        + 60
    )
    for f in gt.iterdir():
        os.utime(f, (when, when))
    pairs, counts = join(
        str(tmp_path / "captures"), str(tmp_path / "groundtruth"), day(1), day(2), model="m"
    )
    assert sorted((p.event_id, p.label) for p in pairs) == sorted(
        (e, i % 2) for i, e in enumerate(ids)
    )
    assert counts.invalid == 1 and counts.label_objects == 2
    assert any("broken.jsonl.gz" in p for p in counts.problems)
    assert any("labels.jsonl:11" in p for p in counts.problems)


def test_prediction_of_the_common_shapes():
    assert prediction_of({"prediction": 0.7}) == (0.7, None)
    assert prediction_of({"prediction": 1, "score": 0.8}) == (1, 0.8)
    assert prediction_of({"prediction": {"label": "cat", "probability": 0.9}}) == ("cat", 0.9)
    assert prediction_of({"prediction": {"y": 3, "p": 0.2}}, "y", "p") == (3, 0.2)
    assert prediction_of({"prediction": [0.2, 0.8]}) == (1, 0.8)
    assert prediction_of({"prediction": [0.1, 0.7, 0.2]}) == (1, None)
    assert prediction_of({"prediction": [True, "x"]}) == ([True, "x"], None)
