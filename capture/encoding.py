"""JSON encoding that never raises: every record becomes one valid JSON line.

orjson does the work (numpy arrays and scalars, datetimes, dataclasses, non-string
keys). What it refuses is rewritten by ``sanitize`` and encoded again:

- ``NaN``/``Infinity`` become ``null`` (orjson already does this for floats);
- ``bytes`` become base64 text; sets and tuples become lists;
- integers beyond 64 bits, ``Decimal`` and unknown objects become strings;
- strings with lone surrogates (undecodable input) have them replaced;
- nesting deeper than ``MAX_DEPTH`` is cut and replaced by a marker string
  (orjson's own limit is 254 levels).

The fast path costs one ``orjson.dumps``; a dict with non-string keys costs
a second, and ``sanitize`` runs only when that fails too.
"""

from __future__ import annotations

import base64
import datetime as _dt
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson

OPTIONS = (
    orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC
)
#: The first attempt: without ``OPT_NON_STR_KEYS``, which makes every dict
#: cost more (~1 µs more on a 930-byte record); a dict with a non-string key
#: raises ``TypeError`` there and is encoded again with it.
_FAST_OPTIONS = OPTIONS & ~orjson.OPT_NON_STR_KEYS
MAX_DEPTH = 200
DEPTH_MARKER = "<nesting too deep: cut by modeltap>"


def _default(obj: Any) -> Any:
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, (set, frozenset)):
        return list(obj)
    if isinstance(obj, Decimal):
        return float(obj) if obj.is_finite() else None
    if hasattr(obj, "tolist"):  # numpy types orjson declines (float16, object arrays)
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` as compact JSON bytes; never raises for any input."""
    try:
        return orjson.dumps(obj, default=_default, option=_FAST_OPTIONS)
    except (TypeError, ValueError):
        pass
    try:
        return orjson.dumps(obj, default=_default, option=OPTIONS)
    except (TypeError, ValueError):
        return orjson.dumps(sanitize(obj), option=OPTIONS)


def _key(k: Any) -> str:
    if isinstance(k, str):
        return _text(k)
    if isinstance(k, (bytes, bytearray)):
        return bytes(k).decode("utf-8", "replace")
    return str(sanitize(k))


def _text(s: str) -> str:
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")


def sanitize(obj: Any, depth: int = 0) -> Any:
    """Return a copy of ``obj`` made only of JSON-safe Python values."""
    if depth > MAX_DEPTH:
        return DEPTH_MARKER
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        return obj if -(2**63) <= obj < 2**64 else str(obj)
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, str):
        return _text(obj)
    if isinstance(obj, Mapping):
        return {_key(k): sanitize(v, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [sanitize(v, depth + 1) for v in obj]
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj  # orjson encodes these itself, with the UTC options
    try:
        converted = _default(obj)
    except Exception:
        converted = repr(obj)
    if converted is obj or isinstance(converted, str):
        return _text(converted) if isinstance(converted, str) else None
    return sanitize(converted, depth + 1)
