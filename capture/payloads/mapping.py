"""Any other JSON, through a configured mapping of paths.

Paths are dotted, with list indices as numbers: ``data.instances``,
``outputs.0.scores``. A leading ``$.`` is allowed. Settings
(``MODELTAP_MAP_*``):

- ``rows``: the list of instances in the request;
- ``context``: request-level fields, comma-separated (named by their last segment);
- ``predictions``: the list of predictions in the response;
- ``items``, ``item_id``, ``scores``: a ranking (items in the request, the id
  field inside each item, scores in the response).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from capture.payloads.base import Extraction, Notes, attach_predictions, rows_from_instances
from capture.payloads.ranking import ranking_rows
from capture.types import Exchange

_MISSING = object()


def get_path(obj: Any, path: str) -> Any:
    """The value at a dotted path, or ``_MISSING``."""
    parts = path.removeprefix("$").strip(".").split(".") if path.strip("$.") else []
    for part in parts:
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif (
            isinstance(obj, list)
            and part.lstrip("-").isdigit()
            and -len(obj) <= int(part) < len(obj)
        ):
            obj = obj[int(part)]
        else:
            return _MISSING
    return obj


@dataclass(frozen=True)
class MappingConfig:
    rows: str | None = None
    context: tuple[str, ...] = ()
    predictions: str | None = None
    items: str | None = None
    item_id: str | None = None
    scores: str | None = None

    @property
    def configured(self) -> bool:
        return bool(self.rows or self.items or self.context)


class MappingAdapter:
    name = "mapping"

    def __init__(self, config: MappingConfig) -> None:
        self.config = config

    def detect(self, request: Any, response: Any, exchange: Exchange) -> bool:
        cfg = self.config
        if not cfg.configured or request is None:
            return False
        probe = cfg.items or cfg.rows
        return probe is None or get_path(request, probe) is not _MISSING

    def _get(self, obj: Any, path: str | None, what: str, notes: Notes) -> Any:
        if path is None:
            return None
        value = get_path(obj, path)
        if value is _MISSING:
            notes.add(f"{what} path {path!r} not found")
            return None
        return value

    def extract(self, request: Any, response: Any, exchange: Exchange) -> Extraction:
        cfg, notes = self.config, Notes()
        context: dict[str, Any] = {}
        for path in cfg.context:
            value = self._get(request, path, "context", notes)
            if value is not None:
                context[path.rsplit(".", 1)[-1]] = value
        rows: list[dict[str, Any]] = []
        if cfg.items:
            items = self._get(request, cfg.items, "items", notes)
            scores = (
                self._get(response, cfg.scores, "scores", notes) if response is not None else None
            )
            if isinstance(items, list):
                rows, aggregates = ranking_rows(items, scores, notes, cfg.item_id)
                context.update(aggregates)
            elif items is not None:
                notes.add(f"items path {cfg.items!r} is not a list")
        elif cfg.rows:
            instances = self._get(request, cfg.rows, "rows", notes)
            if instances is not None:
                rows = rows_from_instances(instances, None, notes)
                preds = self._get(response, cfg.predictions, "predictions", notes)
                attach_predictions(rows, preds, notes)
        return Extraction(self.name, rows=rows, context=context, error=notes.text())
