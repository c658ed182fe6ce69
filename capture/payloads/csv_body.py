"""CSV bodies (``text/csv``): one row per line, named by a header line when
the first line is not numeric, or by configured column names, else ``f0``...
Numeric cells become numbers. A CSV (or one-value-per-line) response gives
one prediction per line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from capture.payloads.base import MAX_ROWS, Extraction, Notes, attach_predictions, header
from capture.types import Exchange


def parse_cell(text: str) -> Any:
    """A CSV cell as int, float or the text itself (shared with the monitor's
    training reader so both sides type a column alike). ``1_000`` stays text:
    Python's ``int()`` accepts the underscore, CSV writers never mean it."""
    if "_" in text:
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _is_numeric(text: str) -> bool:
    return not isinstance(parse_cell(text), str) or text.strip() == ""


def parse_csv(raw: bytes, notes: Notes) -> list[list[str]]:
    text = raw.decode("utf-8", "replace")
    try:
        lines = list(csv.reader(io.StringIO(text)))
    except csv.Error as exc:
        notes.add(f"CSV not readable: {exc}")
        return []
    return [line for line in lines if line]


class CSVAdapter:
    name = "csv"

    def __init__(self, columns: Sequence[str] | None = None) -> None:
        self.columns = list(columns) if columns else None

    def detect(self, request: Any, response: Any, exchange: Exchange) -> bool:
        ctype = (header(exchange, "content-type") or "").lower()
        return "csv" in ctype

    def extract(self, request: Any, response: Any, exchange: Exchange) -> Extraction:
        notes = Notes()
        lines = parse_csv(exchange.request_body, notes)
        names = self.columns
        if lines and names is None and not all(_is_numeric(c) for c in lines[0]):
            names, lines = [c.strip() for c in lines[0]], lines[1:]
        if len(lines) > MAX_ROWS:
            notes.add(f"{len(lines)} CSV lines cut to {MAX_ROWS} rows")
            lines = lines[:MAX_ROWS]
        rows = []
        for line in lines:
            values = [parse_cell(c) for c in line]
            if names is not None and len(names) == len(values):
                rows.append({"features": dict(zip(names, values, strict=True))})
            else:
                if names is not None:
                    notes.add(f"line with {len(values)} cells for {len(names)} columns")
                rows.append({"features": {f"f{i}": v for i, v in enumerate(values)}})
        if isinstance(response, dict):
            attach_predictions(rows, response.get("predictions"), notes)
        elif isinstance(response, list):
            attach_predictions(rows, response, notes)
        elif exchange.response_body:
            preds = [
                parse_cell(c[0]) if len(c) == 1 else [parse_cell(x) for x in c]
                for c in parse_csv(exchange.response_body, notes)
            ]
            attach_predictions(rows, preds, notes)
        return Extraction(self.name, rows=rows, error=notes.text())
