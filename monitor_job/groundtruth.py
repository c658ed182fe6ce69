"""Ground truth for the monitor: labels received in a window, joined to the
captured predictions they are about.

Labels lag predictions (a churn label is known a month later, a click in
minutes), so a run evaluates **the labels received in its window** against
the predictions captured up to ``lookback`` before it (default 7 days): each
label is counted once, in the run whose window it arrived in, and the quality
series (``monitor_job.quality``) is laid out by prediction time, so a model
that went bad on Tuesday shows it on Tuesday's point.

Where labels are: ``capture.labels`` writes them beside the captures, under
``{captures}/ground_truth/{model}/dt=…/hour=…/`` (the default ``--labels``);
a directory or prefix of SageMaker ground-truth files
(``…/yyyy/mm/dd/hh/*.jsonl``) or of plain ``{event_id, label}`` JSONL files
works too. SageMaker and plain files have no received time: the object's
write time stands in for it.

The join, by event id (the ``X-Request-ID`` the proxy returned), and for
ranking by item id:

- a label without ``item_id`` matches a record of one row; for a record of
  several rows it needs the row's ``item_id``, or the row's index ("0", "1",
  ...) when the rows have none; otherwise it counts as ``ambiguous``;
- a ranking label (with ``item_id``) brings in every row of its request: the
  items without a label get ``label=None`` (relevance 0, the usual reading of
  implicit feedback such as clicks);
- repeated labels for one (event, item): the last received wins, and the
  repeats are counted as ``duplicates``;
- a label whose event belongs to another model is ``wrong_model`` and not
  used; one whose event no capture in the lookback holds is ``unmatched``
  (labels of other models that match nothing are not this run's business
  when ``--model`` is given);
- ``predictions`` / ``labelled_predictions``: captured rows in the whole
  span read (lookback + window) and how many of them have a label received
  by the window's end, so the report can say what share of predictions is
  labelled so far.

Labels of the wrong type for the task (a string for a regression) are not
the join's business: ``monitor_job.quality`` counts them as ``invalid``.
Bad label lines are counted and skipped like bad capture lines.

Memory: the labels of the span (small) are held; captures are streamed and
only the rows of labelled events are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from capture.labels import LabelError, label_record
from capture.record import parse_time
from monitor_job.locations import InputError, ObjectRef, open_location
from monitor_job.partitions import GROUND_TRUTH_DIR, find
from monitor_job.quality import Pair
from monitor_job.readers import ReadStats, list_captures, read_records
from monitor_job.sagemaker import LineProblem

log = logging.getLogger(__name__)

DEFAULT_LOOKBACK_S = 7 * 86400.0
PREDICTION_KEYS = ("label", "class", "predicted_label", "prediction", "value")
SCORE_KEYS = ("probability", "score", "proba", "positive_probability")

Key = tuple[str, str | None]  # (event_id, item_id)


@dataclass
class JoinCounts:
    """What the join found.

    Each distinct (event, item) label received in the window is exactly one
    of matched, unmatched, wrong_model or ambiguous (``labels`` is their
    sum); ``duplicates`` counts repeats over the whole span read and
    ``invalid`` the label lines that could not be read.
    """

    labels: int = 0  # valid labels received in the window (repeats included)
    matched: int = 0
    unmatched: int = 0
    wrong_model: int = 0
    ambiguous: int = 0
    duplicates: int = 0
    invalid: int = 0  # label lines that could not be read (bad JSON, no event id...)
    predictions: int = 0  # captured rows in the span read
    labelled_predictions: int = 0
    label_objects: int = 0
    lookback_s: float = DEFAULT_LOOKBACK_S
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["labelled_share"] = (
            self.labelled_predictions / self.predictions if self.predictions else None
        )
        return out


def label_location(captures: str) -> str:
    """Where the capture writes labels for a capture location."""
    return captures.rstrip("/") + "/" + GROUND_TRUTH_DIR


def list_labels(location: str, lo: float, hi: float) -> list[ObjectRef]:
    """Label objects under ``location`` that may hold labels received in ``[lo, hi)``.

    An absent location is no labels (labels are optional), not an error.
    """
    try:
        loc = open_location(location)
        return find(loc, lo, hi)
    except InputError as exc:
        log.info("no labels at %s (%s)", location, exc)
        return []


def _converter(ref: ObjectRef, default_model: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def convert(obj: dict[str, Any]) -> dict[str, Any]:
        try:
            return label_record(obj, model=default_model, now=ref.mtime, source="file")
        except LabelError as exc:
            raise LineProblem(str(exc)) from None

    return convert


def read_labels(
    refs: list[ObjectRef], lo: float, hi: float, counts: JoinCounts, default_model: str
) -> dict[Key, dict[str, Any]]:
    """The labels received in ``[lo, hi)``, last received per (event, item)."""
    latest: dict[Key, dict[str, Any]] = {}
    stats = ReadStats()
    lo_dt, hi_dt = _utc(lo), _utc(hi)
    for ref in refs:
        try:
            for label in read_records(
                ref,
                lo_dt,
                hi_dt,
                stats=stats,
                convert=_converter(ref, default_model),
                time_field="received",
            ):
                label["_received"] = parse_time(label["received"])
                key = (label["event_id"], label["item_id"])
                old = latest.get(key)
                if old is not None:
                    counts.duplicates += 1
                    if old["_received"] > label["_received"]:
                        continue
                latest[key] = label
        except InputError as exc:  # a whole object unreadable: say so, go on
            counts.problems.append(str(exc))
            log.warning("%s", exc)
    counts.label_objects += len(refs)
    counts.invalid += stats.bad_lines
    counts.problems.extend(stats.problems)
    return latest


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def prediction_of(
    row: dict[str, Any], prediction_field: str | None = None, score_field: str | None = None
) -> tuple[Any, float | None]:
    """The (prediction, score) of a captured row.

    A dict prediction gives its ``prediction_field`` (else the first of
    ``PREDICTION_KEYS``) as the prediction and ``score_field`` (else the first
    of ``SCORE_KEYS``) as the score unless the row has a score; a list of
    numbers (class probabilities) gives the arg-max index, and for two
    classes the second probability as the score.
    """
    pred = row.get("prediction")
    score = _number(row.get("score"))
    if isinstance(pred, dict):
        keys = (prediction_field,) if prediction_field else PREDICTION_KEYS
        value = next((pred[k] for k in keys if k in pred), None)
        if score is None:
            skeys = (score_field,) if score_field else SCORE_KEYS
            score = next((s for k in skeys if (s := _number(pred.get(k))) is not None), None)
        pred = value
    elif isinstance(pred, list) and pred and all(_number(p) is not None for p in pred):
        probs = [float(p) for p in pred]
        if score is None and len(probs) == 2:
            score = probs[1]
        pred = max(range(len(probs)), key=probs.__getitem__)
    return pred, score


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, timezone.utc)


class _Joiner:
    """Matches streamed capture records against the labels of the span."""

    def __init__(
        self,
        latest: dict[Key, dict[str, Any]],
        lo: float,
        counts: JoinCounts,
        prediction_field: str | None,
        score_field: str | None,
    ) -> None:
        self.by_event: dict[str, dict[str | None, dict[str, Any]]] = {}
        for (event_id, item_id), label in latest.items():
            self.by_event.setdefault(event_id, {})[item_id] = label
        self.in_window = {k for k, v in latest.items() if v["_received"] >= lo}
        self.counts = counts
        self.fields = (prediction_field, score_field)
        self.seen: set[Key] = set()
        self.wrong: set[Key] = set()
        self.ambiguous: set[Key] = set()
        self.events: set[str] = set()  # joined once: a record read twice adds nothing
        self.pairs: list[Pair] = []

    def record(self, record: dict[str, Any]) -> None:
        rows = record.get("rows")
        raw_id = record.get("event_id")
        event_id = raw_id if type(raw_id) is str else str(raw_id)
        mine = self.by_event.get(event_id)
        if mine is None:  # the common case: a prediction nobody has labelled (yet)
            self.counts.predictions += len(rows) if isinstance(rows, list) else 0
            return
        if event_id in self.events:
            return
        rows = [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []
        self.counts.predictions += len(rows)
        if not rows:
            return
        self.events.add(event_id)
        meta = record.get("model")
        rec_model = meta.get("name") if isinstance(meta, dict) else None
        version = meta.get("version") if isinstance(meta, dict) else None
        t = parse_time(record.get("time")) or 0.0

        def wrong_model(label: dict[str, Any]) -> bool:
            return rec_model is not None and label["model"]["name"] != rec_model

        def pair(row: dict[str, Any], label: dict[str, Any] | None) -> Pair:
            prediction, score = prediction_of(row, *self.fields)
            return Pair(
                event_id=event_id,
                item_id=None if row.get("item_id") is None else str(row.get("item_id")),
                label=None if label is None else label["label"],
                prediction=prediction,
                score=score,
                rank=_int(row.get("rank")),
                position=_int(row.get("position")),
                version=None if version is None else str(version),
                time=t,
                label_time=0.0 if label is None else parse_time(label["time"]) or 0.0,
            )

        whole = mine.get(None)
        if whole is not None:
            key = (event_id, None)
            if wrong_model(whole):
                self.wrong.add(key)
            elif len(rows) == 1:
                self.seen.add(key)
                self.counts.labelled_predictions += 1
                if key in self.in_window:
                    self.pairs.append(pair(rows[0], whole))
            else:
                self.ambiguous.add(key)
        items = {k: v for k, v in mine.items() if k is not None}
        if not items:
            return
        for k, label in items.items():
            if wrong_model(label):
                self.wrong.add((event_id, k))
        usable = {k: v for k, v in items.items() if (event_id, k) not in self.wrong}
        row_keys = [
            str(r["item_id"]) if r.get("item_id") is not None else str(i)
            for i, r in enumerate(rows)
        ]
        hits = [k for k in row_keys if k in usable]
        self.seen.update((event_id, k) for k in hits)
        self.counts.labelled_predictions += len(hits)
        if any((event_id, k) in self.in_window for k in hits):
            # the whole request: unlabelled items are relevance 0 (see the docstring)
            self.pairs.extend(pair(r, usable.get(k)) for k, r in zip(row_keys, rows, strict=True))

    def finish(self, latest: dict[Key, dict[str, Any]], model: str | None) -> None:
        c, window = self.counts, self.in_window
        c.matched = len(self.seen & window)
        c.wrong_model = len((self.wrong - self.seen) & window)
        c.ambiguous = len((self.ambiguous - self.seen) & window)
        left = window - self.seen - self.wrong - self.ambiguous
        c.unmatched = sum(1 for k in left if model is None or latest[k]["model"]["name"] == model)
        c.labels = c.matched + c.wrong_model + c.ambiguous + c.unmatched


def join(
    captures: str,
    labels: str | None,
    start: datetime,
    end: datetime,
    *,
    model: str | None = None,
    lookback_s: float = DEFAULT_LOOKBACK_S,
    prediction_field: str | None = None,
    score_field: str | None = None,
) -> tuple[list[Pair], JoinCounts]:
    """Pairs of (label received in ``[start, end)``, captured row) and the counts.

    ``labels`` defaults to ``{captures}/ground_truth``. No labels there is
    not an error: the pairs are empty and the counts zero.
    """
    counts = JoinCounts(lookback_s=lookback_s)
    lo, hi = start.timestamp(), end.timestamp()
    span_lo = lo - lookback_s
    refs = list_labels(labels or label_location(captures), span_lo, hi)
    if not refs:
        return [], counts
    latest = read_labels(refs, span_lo, hi, counts, model or "model")
    joiner = _Joiner(latest, lo, counts, prediction_field, score_field)
    stats = ReadStats()
    for ref in list_captures(captures, _utc(span_lo), end, model):
        if ref.kind != "records":
            continue
        try:
            for record in read_records(ref, _utc(span_lo), end, stats=stats):
                joiner.record(record)
        except InputError as exc:  # the profiling pass reports it too; the join goes on
            counts.problems.append(str(exc))
    joiner.finish(latest, model)
    return joiner.pairs, counts
