"""SageMaker Data Capture, read as modeltap records.

Data Capture writes ``{endpoint}/{variant}/yyyy/mm/dd/hh/*.jsonl``, one line
per invocation::

    {"captureData": {
        "endpointInput":  {"observedContentType": "text/csv", "mode": "INPUT",
                           "data": "5.1,3.5", "encoding": "CSV"},
        "endpointOutput": {"observedContentType": "text/csv", "mode": "OUTPUT",
                           "data": "0.93", "encoding": "CSV"}},
     "eventMetadata": {"eventId": "…", "inferenceId": "…",
                       "inferenceTime": "2026-11-20T10:00:01Z"},
     "eventVersion": "0"}

Each line is decoded (``CSV``/``JSON`` data is text, ``BASE64`` is bytes)
into a ``capture.types.Exchange`` and goes through the capture's own code
path: ``capture.record.build_record`` and ``capture.payloads.PayloadExtractor``
(with ``csv_columns`` naming headerless CSV columns), exactly as
``Capturer._process`` does, so rows and predictions come out as they would
from our own capture.

Decisions:

- ``event_id`` is ``inferenceId`` when the caller sent one (SageMaker's join
  key for ground truth), else ``eventId``; both are kept under
  ``extra.sagemaker``.
- ``time`` is ``inferenceTime``; a line without a readable one is a bad line.
- Model name and variant come from the key (endpoint, variant); outside that
  layout the model is ``sagemaker``.
- Data Capture records neither status nor latency: both are ``null`` in the
  record rather than invented. Bodies are not copied into the record (the
  monitor needs rows, not payloads).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Any

import orjson

from capture.payloads import PayloadExtractor
from capture.record import RecordConfig, build_record, parse_time
from capture.types import Exchange

#: ``…/{endpoint}/{variant}/yyyy/mm/dd/hh/{file}``
_LAYOUT = re.compile(r"(?:^|/)([^/]+)/([^/]+)/\d{4}/\d{2}/\d{2}/\d{2}/[^/]+$")

#: SageMaker real-time payloads are at most 6 MB (async 1 GB, but not captured
#: inline); a body above this is noted as cut rather than parsed.
MAX_BODY_BYTES = 32 * 1024 * 1024

DEFAULT_MODEL = "sagemaker"


class LineProblem(ValueError):
    """A Data Capture line that cannot be read; the message is the problem."""


def is_capture_line(obj: dict[str, Any]) -> bool:
    return "captureData" in obj


def endpoint_variant(name: str) -> tuple[str | None, str | None]:
    """(endpoint, variant) from an object's name in the Data Capture layout."""
    match = _LAYOUT.search(name)
    return (match.group(1), match.group(2)) if match else (None, None)


def _body(part: Any, what: str) -> tuple[bytes, str | None]:
    """Decoded bytes and content type of ``endpointInput``/``endpointOutput``."""
    if part is None:
        return b"", None
    if not isinstance(part, dict):
        raise LineProblem(f"captureData.{what} is not an object")
    ctype = part.get("observedContentType")
    ctype = ctype if isinstance(ctype, str) else None
    data = part.get("data")
    encoding = str(part.get("encoding") or "").upper()
    if data is None:
        return b"", ctype
    if not isinstance(data, str):
        if encoding == "JSON" and isinstance(data, (dict, list)):
            return orjson.dumps(data), ctype  # some writers inline the JSON value
        raise LineProblem(f"captureData.{what}.data is a {type(data).__name__}, not a string")
    if encoding == "BASE64":
        try:
            return base64.b64decode(data, validate=True), ctype
        except (binascii.Error, ValueError):
            raise LineProblem(f"captureData.{what}.data is not valid BASE64") from None
    if encoding in ("CSV", "JSON", ""):
        return data.encode("utf-8", "surrogatepass"), ctype
    raise LineProblem(f"captureData.{what}: unknown encoding {encoding!r}")


class DataCaptureReader:
    """Turns the Data Capture lines of one object into modeltap v1 records.

    >>> reader = DataCaptureReader("ep/AllTraffic/2026/11/20/10/x.jsonl", ["a", "b"])
    >>> csv = "text/csv"
    >>> rec = reader.record({"captureData": {
    ...     "endpointInput": {"observedContentType": csv, "data": "1,2", "encoding": "CSV"},
    ...     "endpointOutput": {"observedContentType": csv, "data": "0.5", "encoding": "CSV"}},
    ...     "eventMetadata": {"eventId": "e1", "inferenceTime": "2026-11-20T10:00:00Z"}})
    >>> rec["rows"], rec["model"]["name"]
    ([{'features': {'a': 1, 'b': 2}, 'prediction': 0.5}], 'ep')
    """

    def __init__(self, name: str, csv_columns: Sequence[str] | None = None) -> None:
        endpoint, variant = endpoint_variant(name)
        self.config = RecordConfig(
            model=endpoint or DEFAULT_MODEL,
            model_variant=variant,
            capture_bodies=False,
            max_body_bytes=MAX_BODY_BYTES,
        )
        self.extract = PayloadExtractor(
            csv_columns=list(csv_columns) if csv_columns else None,
            max_parse_bytes=MAX_BODY_BYTES,
        )

    def record(self, line: dict[str, Any]) -> dict[str, Any]:
        """The v1 record of one line; ``LineProblem`` when it cannot be read."""
        data = line.get("captureData")
        if not isinstance(data, dict):
            raise LineProblem("captureData is not an object")
        meta = line.get("eventMetadata")
        if not isinstance(meta, dict):
            raise LineProblem("eventMetadata missing")
        start = parse_time(meta.get("inferenceTime"))
        if start is None:
            raise LineProblem("eventMetadata.inferenceTime missing or not ISO-8601")
        event_id = next(
            (str(v) for v in (meta.get("inferenceId"), meta.get("eventId")) if v not in (None, "")),
            None,
        )
        if event_id is None:
            raise LineProblem("eventMetadata has neither inferenceId nor eventId")
        req, req_type = _body(data.get("endpointInput"), "endpointInput")
        resp, resp_type = _body(data.get("endpointOutput"), "endpointOutput")
        exchange = Exchange(
            event_id=event_id,
            start=start,
            latency_s=0.0,
            method="POST",
            path="/invocations",
            query="",
            request_headers=[("content-type", req_type)] if req_type else [],
            request_body=req,
            request_size=len(req),
            status=200,
            response_headers=[("content-type", resp_type)] if resp_type else [],
            response_body=resp,
            response_size=len(resp),
            extra={
                "sagemaker": {
                    "eventId": meta.get("eventId"),
                    "inferenceId": meta.get("inferenceId"),
                }
            },
        )
        # The same two steps as capture.capturer.Capturer._process.
        record, req_json, resp_json = build_record(exchange, self.config, reason="sagemaker")
        try:
            self.extract(record, req_json, resp_json, exchange)
        except Exception as exc:  # keep the record, say why it has no rows
            record["parse"] = {"adapter": None, "error": f"extractor failed: {exc!r}"[:500]}
        record["status"] = record["response"]["status"] = None
        record["latency_ms"] = None
        record["source"] = "sagemaker"
        return record
