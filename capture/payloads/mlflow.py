"""MLflow scoring server (``/invocations``): ``dataframe_split``
(``columns`` + ``data``), ``dataframe_records``, ``instances`` and
``inputs`` (a dict of columns or a list of rows). Responses are
``{"predictions": [...]}`` (MLflow 2) or a bare list (MLflow 1).
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

KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


class MLflowAdapter:
    name = "mlflow"

    def detect(self, request: Any, response: Any, exchange: Exchange) -> bool:
        if not isinstance(request, dict):
            return False
        if "dataframe_split" in request or "dataframe_records" in request:
            return True
        return exchange.path.rstrip("/").endswith("/invocations") and any(
            k in request for k in KEYS
        )

    def extract(self, request: Any, response: Any, exchange: Exchange) -> Extraction:
        notes = Notes()
        rows: list[dict[str, Any]] = []
        if "dataframe_split" in request:
            split = request["dataframe_split"]
            if isinstance(split, dict):
                cols = split.get("columns")
                names = [str(c) for c in cols] if isinstance(cols, list) else None
                rows = rows_from_instances(split.get("data"), names, notes)
            else:
                notes.add("dataframe_split is not an object")
        elif "dataframe_records" in request:
            rows = rows_from_instances(request["dataframe_records"], None, notes)
        elif "instances" in request:
            rows = rows_from_instances(request["instances"], None, notes)
        else:
            inputs = request.get("inputs")
            if isinstance(inputs, dict):
                rows = columns_to_rows(inputs, notes)
            else:
                rows = rows_from_instances(inputs, None, notes)
        preds = response.get("predictions") if isinstance(response, dict) else response
        attach_predictions(rows, preds, notes)
        return Extraction(self.name, rows=rows, error=notes.text())
