"""Redaction: configured fields are dropped or replaced by a keyed hash
before a record is encoded, so they never reach a sink or the spool.

Fields are matched by name, case-insensitively, at any depth, in the JSON
request and response bodies, the query string, ``context``, ``lookups`` and
every row's ``features``. ``mode="hash"`` replaces a value with
``"hmac:" + HMAC-SHA256(key, value)[:16 bytes hex]``, so the same value maps
to the same token (joins and distinct counts still work) without being
reversible; it needs a secret ``key`` shared by all processes that must
agree. ``mode="drop"`` removes the field.

Bodies that are not JSON (CSV, text, binary) cannot be searched field by
field; when any field is configured, such bodies are replaced by
``{"encoding": "omitted", "reason": "redaction"}`` unless
``keep_unparsed_bodies=True`` (a deliberate choice not to leak by default).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode

from capture.encoding import dumps
from capture.errors import ConfigError

MODES = ("drop", "hash")


class Redactor:
    """Applies the redaction policy to records in place.

    >>> r = Redactor(["email"], mode="hash", key=b"k")
    >>> rec = {"context": {"Email": "a@b.c", "age": 3}}
    >>> r.apply(rec), rec["context"]["age"], rec["context"]["Email"].startswith("hmac:")
    (1, 3, True)
    """

    def __init__(
        self,
        fields: Iterable[str],
        *,
        mode: str = "drop",
        key: bytes | None = None,
        keep_unparsed_bodies: bool = False,
    ) -> None:
        self.fields = frozenset(f.strip().lower() for f in fields if f.strip())
        if mode not in MODES:
            raise ConfigError(f"redaction mode must be one of {MODES}, got {mode!r}")
        if mode == "hash" and not key:
            raise ConfigError("redaction mode 'hash' needs a secret key (MODELTAP_REDACT_KEY)")
        self.mode = mode
        self._key = key or b""
        self.keep_unparsed_bodies = keep_unparsed_bodies

    @property
    def active(self) -> bool:
        return bool(self.fields)

    def token(self, value: Any) -> str:
        """The keyed hash that stands for ``value``."""
        raw = value.encode() if isinstance(value, str) else dumps(value)
        return "hmac:" + hmac.new(self._key, raw, hashlib.sha256).hexdigest()[:32]

    def _walk(self, obj: Any) -> int:
        count = 0
        stack = [obj]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                for k in list(node):
                    if isinstance(k, str) and k.lower() in self.fields:
                        count += 1
                        if self.mode == "drop":
                            del node[k]
                        else:
                            node[k] = self.token(node[k])
                    elif isinstance(node[k], (dict, list)):
                        stack.append(node[k])
            elif isinstance(node, list):
                stack.extend(v for v in node if isinstance(v, (dict, list)))
        return count

    def _query(self, query: str) -> tuple[str, int]:
        pairs = parse_qsl(query, keep_blank_values=True)
        hits = sum(1 for k, _ in pairs if k.lower() in self.fields)
        if not hits:
            return query, 0
        if self.mode == "drop":
            kept = [(k, v) for k, v in pairs if k.lower() not in self.fields]
        else:
            kept = [(k, self.token(v) if k.lower() in self.fields else v) for k, v in pairs]
        return urlencode(kept), hits

    def apply(self, record: dict[str, Any]) -> int:
        """Redact ``record`` in place; return how many values were redacted."""
        if not self.fields:
            return 0
        count = 0
        for side in ("request", "response"):
            part = record.get(side)
            if not isinstance(part, dict):
                continue
            if side == "request" and isinstance(part.get("query"), str):
                part["query"], n = self._query(part["query"])
                count += n
            body = part.get("body")
            if not isinstance(body, dict):
                continue
            if body.get("encoding") == "json":
                count += self._walk(body.get("data"))
            elif not self.keep_unparsed_bodies and "data" in body:
                part["body"] = {
                    "encoding": "omitted",
                    "reason": "redaction",
                    "size": body.get("size"),
                }
        for name in ("context", "lookups", "rows", "extra"):
            if name in record:
                count += self._walk(record[name])
        return count
