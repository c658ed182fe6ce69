"""``modeltap-monitor labels --file``: a file of labels written to the sink the
way the proxy's endpoint writes them; exit 0 all kept, 1 some refused, 2 none."""

from __future__ import annotations

import orjson
import pytest

from monitor_job import cli
from monitor_job.cli import main
from tests.support import read_objects


def labels_in(sink):
    return [r for k, rs in read_objects(sink).items() if k.startswith("ground_truth/") for r in rs]


def test_jsonl_file_with_a_bad_line(tmp_path, capsys):
    f = tmp_path / "labels.jsonl"
    f.write_bytes(b'{"event_id": "a", "label": 1}\n\n{"event_id": "b", "label": 0}\n{oops\n')
    sink = tmp_path / "captures"
    assert main(["labels", "--file", str(f), "--sink", str(sink), "--model", "churn"]) == 1
    out = capsys.readouterr().out
    assert "2 accepted, 1 rejected, 0 dropped" in out and "entry 3: line 3: invalid JSON" in out
    got = labels_in(sink)
    assert sorted((r["event_id"], r["label"], r["source"]) for r in got) == [
        ("a", 1, "file"),
        ("b", 0, "file"),
    ]
    assert all(k.startswith("ground_truth/churn/dt=") for k in read_objects(sink))


def test_json_array_and_sagemaker_lines(tmp_path, monkeypatch):
    sink = tmp_path / "captures"
    monkeypatch.setenv("MODELTAP_SINK", str(sink))
    monkeypatch.setenv("MODELTAP_MODEL", "ranker")
    f = tmp_path / "labels.json"
    f.write_bytes(orjson.dumps([{"event_id": "r", "item_id": "x", "label": 2}]))
    assert main(["labels", "--file", str(f)]) == 0
    g = tmp_path / "gt.jsonl"
    g.write_bytes(
        orjson.dumps(
            {"groundTruthData": {"data": "1", "encoding": "CSV"}, "eventMetadata": {"eventId": "s"}}
        )
    )
    assert main(["labels", "--file", str(g)]) == 0
    got = {r["event_id"]: r for r in labels_in(sink)}
    assert (got["r"]["item_id"], got["r"]["model"]) == ("x", {"name": "ranker"})
    assert (got["s"]["label"], got["s"]["source"]) == (1, "sagemaker")


def test_large_files_go_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "LABEL_CHUNK_LINES", 7)
    f = tmp_path / "labels.jsonl"
    f.write_bytes(b"\n".join(orjson.dumps({"event_id": f"e{i}", "label": i}) for i in range(50)))
    sink = tmp_path / "captures"
    assert main(["labels", "--file", str(f), "--sink", str(sink)]) == 0
    assert sorted(r["label"] for r in labels_in(sink)) == list(range(50))
    assert len(read_objects(sink)) == 8  # one object per chunk: flushed as it goes


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), (b"", "0 accepted"), (b'[{"label": 1}]', "event_id missing")],
)
def test_nothing_usable_exits_2(tmp_path, capsys, content, message):
    f = tmp_path / "labels.jsonl"
    if content is not None:
        f.write_bytes(content)
    assert main(["labels", "--file", str(f), "--sink", str(tmp_path / "c")]) == 2
    captured = capsys.readouterr()
    assert message in captured.out + captured.err
