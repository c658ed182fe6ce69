"""Payload understanding: request/response pairs -> ``context``, ``lookups``, ``rows``.

``PayloadExtractor`` runs in the buffer's background work (never on the
request path) and never raises. It picks an adapter by configuration
(``MODELTAP_PAYLOAD=kserve_v1|oip_v2|mlflow|tfserving|csv|ranking|mapping``)
or, by default (``auto``), by detection in this order: a configured mapping,
OIP v2, ranking, MLflow, KServe v1 / TF Serving rows, TF Serving columns,
CSV. Whatever no adapter understands is kept raw, with a ``parse`` note.

JSON that orjson refuses only because of ``NaN``/``Infinity`` literals is
read again leniently (those values become ``null`` in the record: JSON has
no NaN); JSON nested deeper than the parser's limit is noted and kept raw.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from capture.payloads import lookups as lk
from capture.payloads.base import Extraction, Notes, PayloadAdapter, header
from capture.payloads.csv_body import CSVAdapter
from capture.payloads.kserve_v1 import KServeV1Adapter
from capture.payloads.mapping import MappingAdapter, MappingConfig
from capture.payloads.mlflow import MLflowAdapter
from capture.payloads.oip_v2 import HEADER as HEADER_OIP
from capture.payloads.oip_v2 import OIPv2Adapter
from capture.payloads.ranking import RankingAdapter
from capture.payloads.tfserving import TFServingAdapter
from capture.types import Exchange

__all__ = ["Extraction", "MappingConfig", "PayloadAdapter", "PayloadExtractor"]

NAMES = ("auto", "kserve_v1", "oip_v2", "mlflow", "tfserving", "csv", "ranking", "mapping")


def lenient_json(raw: bytes, notes: Notes, what: str) -> Any:
    """Parse JSON that orjson refused (NaN/Infinity literals); None if it is not JSON."""
    text = raw.lstrip()[:1]
    if text not in (b"{", b"["):
        return None
    try:
        return json.loads(raw)
    except RecursionError:
        notes.add(f"{what} JSON nested too deeply to read")
    except (ValueError, UnicodeDecodeError) as exc:
        notes.add(f"{what} is not valid JSON: {str(exc)[:120]}")
    return None


class PayloadExtractor:
    """Callable used by ``Capturer``: fills a record's tabular part in place."""

    def __init__(
        self,
        payload: str = "auto",
        *,
        mapping: MappingConfig | None = None,
        csv_columns: Sequence[str] | None = None,
        lookups_max_bytes: int = lk.DEFAULT_MAX_BYTES,
        max_parse_bytes: int = 256 * 1024,
    ) -> None:
        from capture.errors import ConfigError

        if payload not in NAMES:
            raise ConfigError(f"payload must be one of {', '.join(NAMES)}; got {payload!r}")
        if payload == "mapping" and not (mapping and mapping.configured):
            raise ConfigError("payload 'mapping' needs MODELTAP_MAP_ROWS or MODELTAP_MAP_ITEMS")
        self.payload = payload
        self.lookups_max_bytes = lookups_max_bytes
        self.max_parse_bytes = max_parse_bytes
        adapters: list[PayloadAdapter] = []
        if mapping is not None and mapping.configured:
            adapters.append(MappingAdapter(mapping))
        adapters += [
            OIPv2Adapter(),
            RankingAdapter(),
            MLflowAdapter(),
            KServeV1Adapter(),
            TFServingAdapter(),
            CSVAdapter(csv_columns),
        ]
        self.adapters = adapters
        self.by_name = {a.name: a for a in adapters}

    def _reparse(self, exchange: Exchange, response: bool, notes: Notes) -> Any:
        """Second, lenient look at a body orjson did not parse (or did not try)."""
        raw = exchange.response_body if response else exchange.request_body
        size = exchange.response_size if response else exchange.request_size
        what = "response body" if response else "request body"
        if raw.lstrip()[:1] not in (b"{", b"[") or header(exchange, HEADER_OIP, response):
            return None  # not JSON, or OIP binary (its adapter reads the raw bytes)
        if size > len(raw) or len(raw) > self.max_parse_bytes:
            notes.add(f"{what} of {size} bytes cut at capture; not parsed")
            return None
        return lenient_json(raw, notes, what)

    def choose(self, request: Any, response: Any, exchange: Exchange) -> PayloadAdapter | None:
        if self.payload != "auto":
            return self.by_name.get(self.payload)
        for adapter in self.adapters:
            try:
                if adapter.detect(request, response, exchange):
                    return adapter
            except Exception:
                continue
        return None

    def __call__(
        self, record: dict[str, Any], request: Any, response: Any, exchange: Exchange
    ) -> None:
        notes = Notes()
        if request is None:
            request = self._reparse(exchange, False, notes)
        if response is None:
            response = self._reparse(exchange, True, notes)

        report = None
        if isinstance(response, dict) and lk.FIELD in response:
            report = response.pop(
                lk.FIELD
            )  # the client never sees it; neither does the record body
            if not isinstance(report, dict):
                notes.add(f"{lk.FIELD} field is not an object")
                report = None
        header_value = header(exchange, lk.HEADER, response=True)
        from_header = None
        if header_value is not None:  # else the record's headers cannot hold it either
            from_header = lk.parse_header(header_value, self.lookups_max_bytes, notes)
            record["response"]["headers"].pop(lk.HEADER, None)

        adapter = self.choose(request, response, exchange)
        if adapter is None:
            extraction = Extraction(
                "none",
                error=None if not exchange.request_body else "no adapter understood the payload",
            )
        else:
            try:
                extraction = adapter.extract(request, response, exchange)
            except Exception as exc:  # an adapter bug must not lose the record
                extraction = Extraction(adapter.name, error=f"{adapter.name} failed: {exc!r}"[:300])
        rows = extraction.rows
        lookups = extraction.lookups
        if report or from_header:
            lookups = dict(lookups)
            for rep in (report, from_header):
                if rep:
                    level, items = lk.split(rep)
                    lookups.update(level)
                    lk.apply_item_lookups(rows, items, notes)
        if extraction.error:
            notes.items.insert(0, extraction.error)
        context = extraction.context
        record["rows"] = rows
        record["context"] = _merged(record.get("context"), context)
        record["lookups"] = _merged(record.get("lookups"), lookups)
        record["parse"] = {
            "adapter": None if extraction.adapter == "none" else extraction.adapter,
            "error": notes.text(),
        }
        version = context.get("model_version") if context else None
        if version and not record["model"].get("version"):
            record["model"]["version"] = str(version)


def _merged(before: Any, new: dict[str, Any]) -> dict[str, Any]:
    """``before`` updated with ``new``, as a new dict; ``new`` itself when
    ``before`` is empty (an extraction's dicts are its own, made for the record)."""
    return {**before, **new} if before else new
