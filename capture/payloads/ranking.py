"""Ranking: a request with a list of items (plus request-level context such
as the user) and a response with a list of scores becomes one row per item.

Each row has ``item_id``, ``position`` (as sent, from 0), ``score`` and
``rank`` (1 = highest score; ties keep the order sent), plus the item's own
features. The request's other top-level fields become ``context``, with
per-request aggregates: ``list_length``, ``top1_score`` and ``top1_margin``
(top-1 minus top-2 score). When the lists differ in length, every item is
kept without a score and a note says so: a score cannot be paired with an
item by guessing.

Auto-detected shapes: items under ``items``/``candidates``/``documents``/
``products``, scores under ``scores``/``predictions``/``ranking_scores``;
anything else through the mapping adapter (``items``, ``item_id``, ``scores``).
"""

from __future__ import annotations

import math
from typing import Any

from capture.payloads.base import MAX_ROWS, Extraction, Notes
from capture.types import Exchange

ITEM_KEYS = ("items", "candidates", "documents", "products")
SCORE_KEYS = ("scores", "predictions", "ranking_scores")
ID_FIELDS = ("item_id", "id", "doc_id", "product_id")


def ranking_rows(
    items: list[Any], scores: Any, notes: Notes, item_id: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows for ranked items and the per-request aggregates."""
    if len(items) > MAX_ROWS:
        notes.add(f"{len(items)} items cut to {MAX_ROWS} rows")
    first = next((i for i in items if isinstance(i, dict)), None)
    field = item_id or (next((f for f in ID_FIELDS if f in first), None) if first else None)
    rows: list[dict[str, Any]] = []
    append = rows.append
    for pos, item in enumerate(items[:MAX_ROWS]):
        if isinstance(item, dict):
            features = dict(item)
            append(
                {
                    "position": pos,
                    "item_id": features.pop(field, None) if field else None,
                    "features": features,
                }
            )
        else:
            append({"position": pos, "item_id": item, "features": {}})
    aggregates: dict[str, Any] = {"list_length": len(items)}
    if not isinstance(scores, list):
        if scores is not None:
            notes.add(f"scores is a {type(scores).__name__}, not a list")
        return rows, aggregates
    if len(scores) != len(items):
        notes.add(f"{len(items)} items but {len(scores)} scores; scores not attached")
        return rows, aggregates
    ranked: list[int] = []
    negated: dict[int, float] = {}
    isfinite = math.isfinite
    for i, (row, raw) in enumerate(zip(rows, scores, strict=False)):
        row["score"] = raw
        if type(raw) in (int, float) and isfinite(raw):
            ranked.append(i)
            negated[i] = -raw
    ranked.sort(key=negated.__getitem__)  # stable: ties keep the order sent
    if len(ranked) < len(rows):
        notes.add(f"{len(rows) - len(ranked)} scores are not finite numbers; left unranked")
    for rank, i in enumerate(ranked, start=1):
        rows[i]["rank"] = rank
    if ranked:
        top1 = -negated[ranked[0]]
        aggregates["top1_score"] = float(top1)
        aggregates["top1_margin"] = top1 + negated[ranked[1]] if len(ranked) > 1 else None
    return rows, aggregates


def _first_list(obj: Any, keys: tuple[str, ...]) -> tuple[str | None, Any]:
    if isinstance(obj, dict):
        for key in keys:
            if isinstance(obj.get(key), list):
                return key, obj[key]
    return None, None


class RankingAdapter:
    name = "ranking"

    def detect(self, request: Any, response: Any, exchange: Exchange) -> bool:
        return _first_list(request, ITEM_KEYS)[0] is not None

    def extract(self, request: Any, response: Any, exchange: Exchange) -> Extraction:
        notes = Notes()
        key, items = _first_list(request, ITEM_KEYS)
        _, scores = _first_list(response, SCORE_KEYS)
        if scores is None and exchange.status < 400:
            notes.add("response has no list of scores")
            scores = None
        rows, aggregates = ranking_rows(items, scores, notes)
        context = {k: v for k, v in request.items() if k != key}
        context.update(aggregates)
        return Extraction(self.name, rows=rows, context=context, error=notes.text())
