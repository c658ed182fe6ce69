"""Online-store lookups reported by the model itself.

In proxy mode the model tells the capture which features it fetched, in a
response header ``X-Modeltap-Lookups`` (JSON, at most ``max_bytes``) or in a
reserved top-level response field ``_modeltap``; the proxy removes both
before the client sees the response. Either holds::

    {"lookups": {"user_ltv": 12.5, "user_country": "NL"},     # request-level
     "items": {"sku-1": {"stock": 3}, "sku-2": {"stock": 0}}}  # per item, by id
    # or "items": [{"stock": 3}, {"stock": 0}]                 # per item, by position

A plain object without ``lookups``/``items`` keys is taken as request-level
lookups. Request-level lookups land in the record's ``lookups``; per-item
ones in each row's ``lookups``, kept apart from the features the caller sent.
"""

from __future__ import annotations

from typing import Any

import orjson

from capture.payloads.base import Notes

HEADER = "x-modeltap-lookups"
FIELD = "_modeltap"
DEFAULT_MAX_BYTES = 64 * 1024


def parse_header(value: str | None, max_bytes: int, notes: Notes) -> dict[str, Any] | None:
    if value is None:
        return None
    if len(value) > max_bytes:
        notes.add(f"{HEADER} header of {len(value)} bytes exceeds {max_bytes}; ignored")
        return None
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        notes.add(f"{HEADER} header is not JSON: {exc}")
        return None
    if not isinstance(parsed, dict):
        notes.add(f"{HEADER} header is not a JSON object")
        return None
    return parsed


def split(report: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """(request-level lookups, per-item lookups) from one report."""
    if "lookups" not in report and "items" not in report:
        return report, None
    level = report.get("lookups")
    return (level if isinstance(level, dict) else {}), report.get("items")


def apply_item_lookups(rows: list[dict[str, Any]], items: Any, notes: Notes) -> None:
    if items is None:
        return
    if isinstance(items, list):
        if len(items) != len(rows):
            notes.add(f"{len(items)} item lookups for {len(rows)} rows; not attached")
            return
        for row, value in zip(rows, items, strict=True):
            if isinstance(value, dict):
                row["lookups"] = value
    elif isinstance(items, dict):
        by_id = {str(r.get("item_id")): r for r in rows if "item_id" in r}
        missing = 0
        for item_id, value in items.items():
            target = by_id.get(str(item_id))
            if target is None:
                missing += 1
            elif isinstance(value, dict):
                target["lookups"] = value
        if missing:
            notes.add(f"{missing} item lookups name items not in the request")
    else:
        notes.add("item lookups are neither a list nor an object")


_HEADER_B = HEADER.encode()
_FIELD_B = b'"' + FIELD.encode() + b'"'


def strip_for_client(
    headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """What the client may see of a response: without the lookups header and
    without a top-level ``_modeltap`` field, ``Content-Length`` fixed.

    For the proxy's request path, so it is cheap when there is nothing to
    strip: a header scan and one bytes search; the body is parsed only when
    it contains ``"_modeltap"``. A body that cannot be parsed, or where the
    name is not a top-level field, is returned unchanged.
    """
    out = [(k, v) for k, v in headers if k.lower() != _HEADER_B]
    if _FIELD_B not in body:
        return out, body
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return out, body
    if not isinstance(parsed, dict) or FIELD not in parsed:
        return out, body
    del parsed[FIELD]
    new_body = orjson.dumps(parsed)
    fixed = [
        (k, str(len(new_body)).encode()) if k.lower() == b"content-length" else (k, v)
        for k, v in out
    ]
    return fixed, new_body
