"""TF Serving REST: the columnar format, ``{"inputs": {"name": [...]}}`` or
``{"inputs": [...]}``, answered by ``{"outputs": ...}`` (a list, or a dict
of named output columns). The row format (``instances``) is KServe v1's.
"""

from __future__ import annotations

from typing import Any

from capture.payloads.base import (
    Extraction,
    Notes,
    attach_predictions,
    columns_to_rows,
    rows_from_instances,
)
from capture.types import Exchange


def _is_oip_tensor(value: Any) -> bool:
    return isinstance(value, dict) and "datatype" in value and "name" in value


class TFServingAdapter:
    name = "tfserving"

    def detect(self, request: Any, response: Any, exchange: Exchange) -> bool:
        if not isinstance(request, dict) or "inputs" not in request:
            return False
        inputs = request["inputs"]
        if isinstance(inputs, list) and inputs and _is_oip_tensor(inputs[0]):
            return False
        return ":predict" in exchange.path or isinstance(inputs, (dict, list))

    def extract(self, request: Any, response: Any, exchange: Exchange) -> Extraction:
        notes = Notes()
        inputs = request["inputs"]
        if isinstance(inputs, dict):
            rows = columns_to_rows(inputs, notes)
        else:
            rows = rows_from_instances(inputs, None, notes)
        outputs = response.get("outputs") if isinstance(response, dict) else None
        if isinstance(outputs, dict):
            out_rows = columns_to_rows(outputs, notes)
            attach_predictions(rows, [r["features"] for r in out_rows], notes)
        else:
            attach_predictions(rows, outputs, notes)
        return Extraction(self.name, rows=rows, error=notes.text())
