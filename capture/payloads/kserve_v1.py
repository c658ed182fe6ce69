"""KServe v1 / TF Serving row format: ``{"instances": [...]}`` ->
``{"predictions": [...]}`` (``:predict`` paths). Instances may be lists
(``f0``...), dicts (named features) or scalars. TF Serving's row format is
the same shape; its columnar ``inputs`` lives in ``tfserving``.
"""

from __future__ import annotations

from typing import Any

from capture.payloads.base import Extraction, Notes, attach_predictions, rows_from_instances
from capture.types import Exchange


class KServeV1Adapter:
    name = "kserve_v1"

    def detect(self, request: Any, response: Any, exchange: Exchange) -> bool:
        return isinstance(request, dict) and "instances" in request

    def extract(self, request: Any, response: Any, exchange: Exchange) -> Extraction:
        notes = Notes()
        instances = request.get("instances")
        rows = rows_from_instances(instances, None, notes)
        total = len(instances) if isinstance(instances, list) else None
        if isinstance(response, dict):
            preds = response.get("predictions", response.get("outputs"))
            attach_predictions(rows, preds, notes, total=total)
        elif exchange.status < 400 and response is not None:
            notes.add("response is not a JSON object with predictions")
        return Extraction(self.name, rows=rows, error=notes.text())
