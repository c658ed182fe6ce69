"""Capture records as flat rows for profiling (``flatten``), and the dict
spreading shared with training data so both sides name nested fields alike.

Invariant: ``flatten`` never raises on a record's shape; what it cannot read
(rows that are not a list, features that are not a dict, ...) is skipped.
"""

from __future__ import annotations

from typing import Any

MAX_PREDICTION_LIST = 16  # longer prediction lists (embeddings) stay one value
MAX_NESTING = 8  # dict levels spread into dotted columns; deeper stays a value


def spread(out: dict[str, Any], name: str, value: Any, depth: int = 1) -> None:
    """``out[name] = value``, a non-empty dict spread into ``name.key`` columns."""
    if isinstance(value, dict) and value and depth < MAX_NESTING:
        for k, v in value.items():
            spread(out, f"{name}.{k}", v, depth + 1)
    else:
        out[name] = value


#: Feature names that would collide with the row's own columns get "features." in front.
_RESERVED = frozenset(
    {"prediction", "score", "rank", "position", "item_id", "context", "lookups", "model"}
)
_RESERVED_PREFIXES = ("prediction.", "context.", "lookups.", "model.", "features.")
_ROW_FIELDS = ("score", "rank", "position", "item_id")


def _prediction(out: dict[str, Any], value: Any) -> None:
    if isinstance(value, dict) and value:
        spread(out, "prediction", value, 0)
    elif isinstance(value, list) and 0 < len(value) <= MAX_PREDICTION_LIST:
        for i, v in enumerate(value):
            spread(out, f"prediction.{i}", v, 1)
    else:
        out["prediction"] = value


def flatten(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat row per entry of ``record["rows"]``, for profiling.

    Columns: features under their own names (nested dicts as ``a.b``; a
    name that collides with the columns below as ``features.<name>``),
    ``prediction`` (a dict as ``prediction.<k>``, a list of at most
    ``MAX_PREDICTION_LIST`` as ``prediction.<i>``), ``score``, ``rank``,
    ``position``, ``item_id``, the item's lookups and the record's as
    ``lookups.<k>`` (the item's win), ``context.<k>`` and ``model.version``.
    A record without usable rows gives one row of its context and lookups,
    or nothing when it has neither. Odd shapes are skipped, never raised on.

    >>> flatten({"model": {"version": "3"}, "context": {"user": "u1"},
    ...          "rows": [{"features": {"x": 1}, "prediction": {"p": 0.2}}]})
    [{'context.user': 'u1', 'model.version': '3', 'x': 1, 'prediction.p': 0.2}]
    """
    if not isinstance(record, dict):
        return []
    base: dict[str, Any] = {}
    for origin in ("context", "lookups"):
        level = record.get(origin)
        if isinstance(level, dict):
            for k, v in level.items():
                spread(base, f"{origin}.{k}", v, 1)
    has_level = bool(base)
    model = record.get("model")
    if isinstance(model, dict) and model.get("version") is not None:
        base["model.version"] = model["version"]
    out: list[dict[str, Any]] = []
    rows = record.get("rows")
    for row in rows if isinstance(rows, list) else ():
        if not isinstance(row, dict):
            continue
        flat = dict(base)
        features = row.get("features")
        if isinstance(features, dict):
            for k, v in features.items():
                key = k if type(k) is str else str(k)
                if key in _RESERVED or ("." in key and key.startswith(_RESERVED_PREFIXES)):
                    key = f"features.{key}"
                if type(v) is dict:  # the common scalar case skips the call
                    spread(flat, key, v, 1)
                else:
                    flat[key] = v
        if "prediction" in row:
            pred = row["prediction"]
            if isinstance(pred, (dict, list)):
                _prediction(flat, pred)
            else:
                flat["prediction"] = pred
        for name in _ROW_FIELDS:
            if name in row:
                flat[name] = row[name]
        item_lookups = row.get("lookups")
        if isinstance(item_lookups, dict):
            for k, v in item_lookups.items():
                spread(flat, f"lookups.{k}", v, 1)
        out.append(flat)
    if not out and has_level:
        out.append(base)
    return out
