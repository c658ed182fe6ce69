"""Capture record schema v1: one JSON object per exchange, one per line.

Built in the background from an ``Exchange`` (``build_record``); never on the
request path. Fields readers rely on (see the README for the full table)::

    {"schema": 1, "event_id": "0193...", "time": "2026-11-22T23:08:42.123Z",
     "model": {"name": "ranker", "version": "7", "variant": null},
     "request":  {"method", "path", "query", "headers", "content_type", "size", "body"},
     "response": {"status", "headers", "content_type", "size", "body"},
     "status": 200, "latency_ms": 3.2, "error": null,
     "context": {}, "lookups": {}, "rows": [],
     "parse": {"adapter": null, "error": null},
     "sampling": {"rate": 1.0, "reason": "sampled"}}

Decisions:

- ``event_id`` is the caller's ``X-Request-ID`` (or an inference-id header, or
  the trace id of ``traceparent``) when it is a safe token of at most 128
  characters; otherwise a UUIDv7 (time-ordered, ms resolution) is generated.
- Bodies: ``{"encoding": "json", "data": <parsed>}`` when the body parses as
  JSON, ``"text"`` for other UTF-8 text, ``"base64"`` for the rest (SageMaker
  knows JSON/CSV/BASE64; keeping CSV and other text readable costs nothing).
  A body longer than ``max_body_bytes`` is cut there and marked
  ``"truncated": true`` with its full ``size``; a cut body is never parsed as
  JSON. ``capture_bodies=False`` keeps only the sizes.
- Headers: only names in the allowlist are kept, and a name that looks like a
  credential (authorization, cookie, token, secret, api key, ...) is refused
  even if someone allowlists it.
"""

from __future__ import annotations

import base64
import functools
import os
import random
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from capture.errors import ConfigError
from capture.types import Exchange

SCHEMA_VERSION = 1

#: Substrings that mark a header as a credential; never captured.
CREDENTIAL_MARKERS = (
    "authorization",
    "cookie",
    "token",
    "secret",
    "password",
    "passwd",
    "api-key",
    "apikey",
    "api_key",
    "x-amz-security",
    "session",
    "credential",
    "signature",
    "auth",
)

DEFAULT_HEADER_ALLOWLIST = frozenset(
    {
        "accept",
        "content-encoding",
        "content-length",
        "content-type",
        "inference-header-content-length",
        "traceparent",
        "user-agent",
        "x-model-variant",
        "x-model-version",
        "x-request-id",
    }
)

#: Headers whose value becomes the event id, in order of preference.
EVENT_ID_HEADERS = ("x-request-id", "x-inference-id", "inference-id", "x-amzn-inference-id")
VERSION_HEADERS = ("x-model-version", "model-version")
VARIANT_HEADERS = ("x-model-variant", "model-variant")

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+=-]{0,127}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
_TEXT_TYPES = ("text/", "json", "csv", "xml", "ndjson", "x-www-form-urlencoded", "yaml")

_MAX_HEADER_RULES = 1024
_rng = random.Random()
os.register_at_fork(after_in_child=_rng.seed)


def header_allowed(name: str, allowlist: frozenset[str]) -> bool:
    """True when ``name`` is allowlisted and does not look like a credential."""
    return _header_allowed(name.lower(), allowlist)


def _header_allowed(lower: str, allowlist: frozenset[str]) -> bool:
    return lower in allowlist and not any(marker in lower for marker in CREDENTIAL_MARKERS)


def new_event_id(now_ns: int | None = None) -> str:
    """A UUIDv7: 48-bit ms timestamp, version 7, variant 10, 74 random bits."""
    ms = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    rand = _rng.getrandbits(74)
    value = (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | (rand >> 62) << 64
        | 0b10 << 62
        | (rand & ((1 << 62) - 1))
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def event_id_from_headers(headers: Iterable[tuple[str, str]]) -> str | None:
    """The caller's id (request id, inference id, trace id), if one is usable."""
    found: dict[str, str] = {}
    for name, value in headers:
        lower = name.lower()
        if lower in EVENT_ID_HEADERS or lower == "traceparent":
            found.setdefault(lower, value.strip())
    for name in EVENT_ID_HEADERS:
        candidate = found.get(name)
        if candidate and _SAFE_ID.match(candidate):
            return candidate
    match = _TRACEPARENT.match(found.get("traceparent", ""))
    return match.group(1) if match else None


def format_time(epoch_s: float) -> str:
    """UTC ISO-8601 with milliseconds and a ``Z``: ``2026-11-22T23:08:42.123Z``."""
    ms: int = round(epoch_s * 1000)
    secs = ms // 1000  # floor, as divmod: times before 1970 too
    second = _SECONDS.get(secs)
    if second is None:
        if len(_SECONDS) >= _SECONDS_KEPT:
            _SECONDS.clear()
        second = _SECONDS[secs] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return second + _MILLIS[ms - secs * 1000]


#: Formatted seconds, looked up rather than formatted: the records of one
#: batch share a few seconds (a plain dict: ~3x cheaper than ``lru_cache``
#: called from compiled code). Cleared when full, so bounded.
_SECONDS: dict[int, str] = {}
_SECONDS_KEPT = 64
_MILLIS = tuple(f".{i:03d}Z" for i in range(1000))


def parse_time(value: Any) -> float | None:
    """Epoch seconds of an ISO-8601 time (``Z`` or an offset; naive = UTC), else None.

    >>> parse_time("2026-11-22T23:08:42.123Z"), parse_time("yesterday")
    (1795388922.123, None)
    """
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.timestamp()


@dataclass(frozen=True)
class RecordConfig:
    """How exchanges become records. Validated at construction."""

    model: str = "model"
    model_version: str | None = None
    model_variant: str | None = None
    capture_bodies: bool = True
    max_body_bytes: int = 256 * 1024
    header_allowlist: frozenset[str] = field(default=DEFAULT_HEADER_ALLOWLIST)
    # Header name as sent -> (lowercased, kept?): the same few names come on
    # every exchange, so each is looked at once (bounded: names are the
    # client's choice).
    _header_rules: dict[str, tuple[str, bool]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        if self.max_body_bytes < 0:
            raise ConfigError(f"max_body_bytes must be >= 0, got {self.max_body_bytes}")
        lowered = frozenset(h.strip().lower() for h in self.header_allowlist if h.strip())
        object.__setattr__(self, "header_allowlist", lowered)

    def headers(self, headers: Iterable[tuple[str, str]]) -> tuple[dict[str, str], dict[str, str]]:
        """``headers`` by lowercased name (the last value of a repeated name),
        and the part of that the record keeps (allowlisted, not a credential)."""
        rules = self._header_rules
        lowered: dict[str, str] = {}
        kept: dict[str, str] = {}
        for name, value in headers:
            rule = rules.get(name)
            if rule is None:
                lower = name.lower()
                rule = (lower, _header_allowed(lower, self.header_allowlist))
                if len(rules) < _MAX_HEADER_RULES:
                    rules[name] = rule
            lowered[rule[0]] = value
            if rule[1]:
                kept[rule[0]] = value
        return lowered, kept


@functools.lru_cache(maxsize=256)
def _text_type(content_type: str) -> bool:
    return any(t in content_type.lower() for t in _TEXT_TYPES)


def _decode_prefix(data: bytes, cut: bool) -> str | None:
    """Decode UTF-8; when the body was cut, drop a partial character at the end."""
    for trim in range(4 if cut else 1):
        try:
            return data[: len(data) - trim].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def encode_body(
    body: bytes, full_size: int, content_type: str | None, config: RecordConfig
) -> tuple[dict[str, Any] | None, Any]:
    """Return (the body's record field, the parsed JSON or None).

    The parsed JSON is handed on to the payload adapters so the body is
    parsed once.
    """
    if full_size == 0 and not body:
        return None, None
    limit = config.max_body_bytes
    size = len(body)
    truncated = full_size > size or size > limit
    data = body[:limit]
    is_text = content_type is None or _text_type(content_type)
    parsed: Any = None
    if not truncated and is_text and data.lstrip()[:1] in (b"{", b"["):
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = None
    if not config.capture_bodies:
        return None, parsed
    if parsed is not None:  # only whole bodies are parsed
        return {"size": full_size, "encoding": "json", "data": parsed}, parsed
    out: dict[str, Any] = {"size": full_size}
    if truncated:
        out["truncated"] = True
    text = _decode_prefix(data, truncated) if is_text else None
    if text is not None:
        out.update(encoding="text", data=text)
    else:
        out.update(encoding="base64", data=base64.b64encode(data).decode("ascii"))
    return out, None


def _first(headers: dict[str, str], names: Iterable[str]) -> str | None:
    for name in names:
        if name in headers:
            return headers[name]
    return None


def build_record(
    exchange: Exchange, config: RecordConfig, *, sample_rate: float = 1.0, reason: str = "sampled"
) -> tuple[dict[str, Any], Any, Any]:
    """Build the v1 record for ``exchange``.

    Returns ``(record, parsed_request_json, parsed_response_json)``; the
    parsed bodies (or None) are for the payload adapters.
    """
    req_h, req_kept = config.headers(exchange.request_headers)
    resp_h, resp_kept = config.headers(exchange.response_headers)
    req_ct = req_h.get("content-type")
    resp_ct = resp_h.get("content-type")
    req_body, req_json = encode_body(exchange.request_body, exchange.request_size, req_ct, config)
    resp_body, resp_json = encode_body(
        exchange.response_body, exchange.response_size, resp_ct, config
    )
    record: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "event_id": exchange.event_id,
        "time": format_time(exchange.start),
        "model": {
            "name": exchange.model or config.model,
            "version": config.model_version or _first(resp_h, VERSION_HEADERS),
            "variant": config.model_variant or _first(resp_h, VARIANT_HEADERS),
        },
        "request": {
            "method": exchange.method,
            "path": exchange.path,
            "query": exchange.query,
            "headers": req_kept,
            "content_type": req_ct,
            "size": exchange.request_size,
            "body": req_body,
        },
        "response": {
            "status": exchange.status,
            "headers": resp_kept,
            "content_type": resp_ct,
            "size": exchange.response_size,
            "body": resp_body,
        },
        "status": exchange.status,
        "latency_ms": round(exchange.latency_s * 1000.0, 3),
        "error": exchange.error,
        "context": {},
        "lookups": {},
        "rows": [],
        "parse": {"adapter": None, "error": None},
        "sampling": {"rate": sample_rate, "reason": reason},
    }
    if exchange.extra:
        record["extra"] = exchange.extra
    return record, req_json, resp_json
