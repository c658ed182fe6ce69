"""What every payload adapter shares: the ``PayloadAdapter`` protocol, the
``Extraction`` it returns, and the helpers that turn instances and
predictions into rows.

Rows are ``{"features": {...}, "prediction": ...}``; ranking rows add
``item_id``, ``position``, ``score`` and ``rank``. Unnamed columns are named
``f0``, ``f1``, ... Adapters never raise on bad input: what they cannot read
becomes an ``error`` note, and the rows they can trust are kept.

Limits (a record is evidence, not a copy of a pathological payload): at most
``MAX_ROWS`` rows per exchange and ``MAX_FEATURES`` features per row, with a
note saying what was cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from capture.types import Exchange

MAX_ROWS = 10_000
MAX_FEATURES = 2_000
_UNNAMED = tuple(f"f{i}" for i in range(256))  # names of unnamed columns, built once


@dataclass(slots=True)  # not frozen: half the cost to build, one per exchange
class Extraction:
    """The tabular part of one exchange, as an adapter read it. Its dicts
    and lists are new for each extraction: the record takes them as they are."""

    adapter: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    lookups: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class PayloadAdapter(Protocol):
    """Reads one protocol. ``detect`` is cheap and never raises."""

    name: str

    def detect(self, request: Any, response: Any, exchange: Exchange) -> bool: ...

    def extract(self, request: Any, response: Any, exchange: Exchange) -> Extraction: ...


class Notes:
    """Collects error notes while an adapter works; joined into one string."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, note: str) -> None:
        self.items.append(note)

    def text(self) -> str | None:
        return "; ".join(self.items) if self.items else None


def feature_dict(value: Any, names: Sequence[str] | None, notes: Notes) -> dict[str, Any]:
    """One instance as named features: a dict stays, a list gets names, a scalar is ``f0``."""
    if isinstance(value, dict):
        if len(value) > MAX_FEATURES:
            notes.add(f"instance with {len(value)} features cut to {MAX_FEATURES}")
            return dict(list(value.items())[:MAX_FEATURES])
        return value
    if isinstance(value, (list, tuple)):
        if len(value) > MAX_FEATURES:
            notes.add(f"instance with {len(value)} features cut to {MAX_FEATURES}")
            value = value[:MAX_FEATURES]
        if names is not None and len(names) == len(value):
            return dict(zip(names, value, strict=True))
        if names is not None:
            notes.add(f"{len(names)} column names for {len(value)} values")
        if len(value) <= len(_UNNAMED):
            return dict(zip(_UNNAMED, value, strict=False))
        return {f"f{i}": v for i, v in enumerate(value)}
    name = names[0] if names else "f0"
    return {name: value}


def cap_rows(values: Sequence[Any], notes: Notes, what: str = "instances") -> Sequence[Any]:
    if len(values) > MAX_ROWS:
        notes.add(f"{len(values)} {what} cut to {MAX_ROWS} rows")
        return values[:MAX_ROWS]
    return values


def rows_from_instances(
    instances: Any, names: Sequence[str] | None, notes: Notes
) -> list[dict[str, Any]]:
    """Rows from a list of instances (lists, dicts or scalars)."""
    if not isinstance(instances, list):
        notes.add(f"instances is a {type(instances).__name__}, not a list")
        return []
    if len(instances) > MAX_ROWS:  # checked here too: saves a call per record
        instances = cap_rows(instances, notes)
    return [{"features": feature_dict(v, names, notes)} for v in instances]


def attach_predictions(
    rows: list[dict[str, Any]], predictions: Any, notes: Notes, total: int | None = None
) -> None:
    """Pair predictions with rows, in order, when the counts agree.

    When they do not, no prediction is attached (the pairing cannot be
    trusted) and a note says how many of each there were.
    """
    if predictions is None:
        return
    if not isinstance(predictions, list):
        predictions = [predictions]
    expected = len(rows) if total is None else total
    if len(predictions) != expected:
        notes.add(f"{expected} instances but {len(predictions)} predictions")
        return
    for row, pred in zip(rows, predictions, strict=False):
        row["prediction"] = pred


def columns_to_rows(columns: dict[str, Any], notes: Notes) -> list[dict[str, Any]]:
    """Columnar input (``{"a": [1, 2], "b": [3, 4]}``) as rows; scalars broadcast."""
    lengths = {len(v) for v in columns.values() if isinstance(v, list)}
    if not lengths:
        return [{"features": dict(columns)}]
    if len(lengths) > 1:
        notes.add(f"columns of unequal lengths {sorted(lengths)}")
    n = min(lengths)
    if n > MAX_ROWS:
        notes.add(f"{n} rows cut to {MAX_ROWS}")
        n = MAX_ROWS
    return [
        {"features": {k: (v[i] if isinstance(v, list) else v) for k, v in columns.items()}}
        for i in range(n)
    ]


def header(exchange: Exchange, name: str, response: bool = False) -> str | None:
    """The value of header ``name`` (any case), or None. Names of another
    length are passed over without lowercasing them (most of them)."""
    lower = name.lower()
    size = len(lower)
    for k, v in exchange.response_headers if response else exchange.request_headers:
        if len(k) == size and k.lower() == lower:
            return v
    return None
