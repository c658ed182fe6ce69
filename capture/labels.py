"""Ground-truth labels: posted batches parsed and validated into label records.

Labels arrive late (hours or weeks after the prediction) and are joined to
captured rows by the monitor, on ``event_id`` (the ``X-Request-ID`` the
proxy returned) and, for ranking, ``item_id``. They are written through the
capture's own buffer, spool and sink, under their own prefix:

    ground_truth/{model}/dt=YYYY-MM-DD/hour=HH/{host}-{pid}-{seq}.jsonl.gz

partitioned by the hour they were received. One line per label:

    {"schema": 1, "kind": "ground_truth", "event_id": "…", "item_id": null,
     "label": 1, "time": "…Z", "received": "…Z", "model": {"name": "churn"},
     "source": "api"}

Accepted input (``parse_labels``), as JSON or JSONL:

- ``{"event_id": "…", "label": 1}`` with optional ``item_id`` (ranking),
  ``time`` (ISO 8601 or epoch seconds; when the outcome happened, default:
  when received) and ``model`` (default: the capture's model);
- a JSON array of those, or ``{"labels": [...]}``, or one per line;
- SageMaker Model Monitor's ground-truth lines:
  ``{"groundTruthData": {"data": "1", "encoding": "CSV"},
  "eventMetadata": {"eventId": "…"}, "eventVersion": "0"}``.

A label is a boolean, a finite number or a string of at most
``MAX_LABEL_CHARS`` (class names, relevance grades, regression targets);
null, lists and objects are refused. Every refused entry is reported with
its index and the reason; the valid ones in the same batch are still kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from capture.errors import UnsafeNameError
from capture.keys import safe_segment
from capture.payloads.csv_body import parse_cell
from capture.record import format_time, parse_time

LABEL_KIND = "ground_truth"
SCHEMA_VERSION = 1
MAX_ID_CHARS = 256
MAX_LABEL_CHARS = 1024
MAX_ERRORS = 20  # rejected entries described in a response


class LabelError(ValueError):
    """A label entry that cannot be kept; the message says why."""


@dataclass
class LabelBatch:
    """The outcome of parsing one posted batch."""

    records: list[dict[str, Any]] = field(default_factory=list)
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)  # first MAX_ERRORS
    dropped: int = 0  # accepted but not queued (capture buffer full or closed)

    def reject(self, index: int, problem: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"index": index, "error": problem})

    def summary(self) -> dict[str, Any]:
        return {
            "accepted": len(self.records) - self.dropped,
            "rejected": self.rejected,
            "dropped": self.dropped,
            "errors": self.errors,
        }


def _entries(body: bytes) -> tuple[list[Any], list[tuple[int, str]]]:
    """The label entries of a JSON or JSONL body, plus lines that are not JSON."""
    text = body.strip()
    if not text:
        return [], [(0, "empty body")]
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        pass  # JSONL, or lines that are not JSON
    else:
        if isinstance(doc, list):
            return doc, []
        if isinstance(doc, dict) and isinstance(doc.get("labels"), list):
            return list(doc["labels"]), []
        return [doc], []
    entries: list[Any] = []
    bad: list[tuple[int, str]] = []
    for i, line in enumerate(text.splitlines()):
        if not line.strip():
            continue
        try:
            entries.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            entries.append(None)
            bad.append((len(entries) - 1, f"line {i + 1}: invalid JSON ({str(exc)[:80]})"))
    return entries, bad


def _label_value(value: Any) -> Any:
    if value is None:
        raise LabelError("label is null")
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise LabelError("label is not a finite number")
        return value
    if isinstance(value, str):
        if len(value) > MAX_LABEL_CHARS:
            raise LabelError(f"label longer than {MAX_LABEL_CHARS} characters")
        return value
    raise LabelError(f"label must be a boolean, number or string, not {type(value).__name__}")


def _id(value: Any, what: str, *, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise LabelError(f"{what} missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise LabelError(f"{what} must be a string")
    text = str(value)
    if len(text) > MAX_ID_CHARS:
        raise LabelError(f"{what} longer than {MAX_ID_CHARS} characters")
    return text


def _time(value: Any, now: float) -> float:
    if value is None:
        return now
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or not 0 <= value < 1e11:
            raise LabelError("time out of range (epoch seconds expected)")
        return float(value)
    if isinstance(value, str):
        t = parse_time(value)
        if t is None:
            raise LabelError("time is not ISO 8601")
        return t
    raise LabelError("time must be ISO 8601 or epoch seconds")


def _source(value: Any, default: str) -> str:
    """Where a label came from ("api", "file", "sagemaker" or the sender's own word)."""
    return value if isinstance(value, str) and 0 < len(value) <= 64 else default


def _sagemaker(entry: dict[str, Any]) -> dict[str, Any]:
    """A SageMaker ground-truth line in our label shape."""
    meta = entry.get("eventMetadata")
    data = entry.get("groundTruthData")
    if not isinstance(meta, dict) or not isinstance(data, dict):
        raise LabelError("groundTruthData and eventMetadata must be objects")
    raw = data.get("data")
    if not isinstance(raw, str):
        raise LabelError("groundTruthData.data must be a string")
    encoding = str(data.get("encoding") or "CSV").upper()
    if encoding == "JSON":
        try:
            label = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise LabelError("groundTruthData.data is not JSON") from None
    elif encoding == "CSV":
        first = raw.strip().split(",")[0].strip()
        label = parse_cell(first) if first else None
    else:
        raise LabelError(f"groundTruthData.encoding {encoding!r} (CSV or JSON expected)")
    return {"event_id": meta.get("eventId"), "label": label, "source": "sagemaker"}


def label_record(entry: Any, *, model: str, now: float, source: str = "api") -> dict[str, Any]:
    """One label record from one entry (ours, a posted one or SageMaker's).

    A record this module wrote (``kind: "ground_truth"``) keeps its own
    ``received`` time and model; otherwise ``now`` is the received time and
    ``model`` the default. Raises ``LabelError`` saying what is wrong.
    """
    if not isinstance(entry, dict):
        raise LabelError(f"a JSON {type(entry).__name__}, not an object")
    received = now
    name: Any = entry.get("model", model)
    if "groundTruthData" in entry:
        entry = _sagemaker(entry)
        name = model
    elif entry.get("kind") == LABEL_KIND:
        name = name.get("name") if isinstance(name, dict) else name
        received = _time(entry.get("received"), now)
    try:
        safe_segment(name, "model")
    except UnsafeNameError:
        raise LabelError("model must be a simple name (letters, digits, . _ -)") from None
    return {
        "schema": SCHEMA_VERSION,
        "kind": LABEL_KIND,
        "event_id": _id(entry.get("event_id"), "event_id", required=True),
        "item_id": _id(entry.get("item_id"), "item_id", required=False),
        "label": _label_value(entry.get("label")),
        "time": format_time(_time(entry.get("time"), now)),
        "received": format_time(received),
        "model": {"name": name},
        "source": _source(entry.get("source"), source),
    }


def parse_labels(body: bytes, *, model: str, now: float, source: str = "api") -> LabelBatch:
    """Label records from a posted body; never raises on the body's content."""
    batch = LabelBatch()
    entries, bad = _entries(body)
    bad_at = dict(bad)
    if not entries:  # an empty array or {"labels": []} is refused with a reason too
        batch.reject(0, bad[0][1] if bad else "no label entries in the batch")
        return batch
    for i, entry in enumerate(entries):
        if i in bad_at:
            batch.reject(i, bad_at[i])
            continue
        try:
            batch.records.append(label_record(entry, model=model, now=now, source=source))
        except LabelError as exc:
            batch.reject(i, str(exc))
    return batch
