"""The proxy's hot path: a raw ASGI app that forwards every request to the
model server and hands a copy of the exchange to the capture.

Per request it does only: read the body, forward it (``server.upstream``, an
httptools client measured at twice aiohttp's throughput on this path; the
facts file measured ``httpx.AsyncClient`` collapsing under concurrency),
return the response, and append an ``Exchange`` tuple to the capture buffer.
Parsing, record building and uploads happen in the capture's background
threads.

Transparency rules:

- method, path (raw, as sent), query string, body bytes and status pass
  unchanged; headers too, byte for byte, minus hop-by-hop ones, plus
  ``X-Forwarded-For``, ``-Proto`` and ``-Host`` upstream; the client adds
  nothing of its own but ``Host`` and ``Content-Length`` (no ``User-Agent``,
  ``Accept-Encoding`` or default ``Content-Type``) and never decompresses.
- the client sees two changes only: ``X-Request-ID`` (the event id: the
  caller's own when it sent a usable one) and the removal of the lookups
  header and ``_modeltap`` field (``capture.payloads.lookups.strip_for_client``).
- a response whose size is unknown or larger than the capture limit is
  streamed as it arrives (chunked, server-sent events); the capture keeps its
  first ``max_body_bytes``. Known-size responses within the limit are read
  whole, so the lookups field can be stripped.
- upstream connection failure answers 502, a timeout 504, each with a short
  JSON error carrying the event id; both are captured.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from capture.capturer import Capturer
from capture.payloads.lookups import strip_for_client
from capture.record import event_id_from_headers, new_event_id
from capture.types import Exchange
from server.metrics import ProxyMetrics
from server.upstream import UpstreamError, UpstreamPool, UpstreamResponse, UpstreamTimeout

log = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Any
Send = Any

#: Hop-by-hop headers (RFC 9110 7.6.1) and those the client library sets itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
    }
)
_REQUEST_ID = b"x-request-id"
_FORWARDED = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")
#: Request headers not passed upstream as they came: replaced or hop-by-hop.
_NOT_FORWARDED = HOP_BY_HOP | {_REQUEST_ID, *_FORWARDED}
#: Response headers not passed to the client as they came.
_NOT_RETURNED = (HOP_BY_HOP - {b"content-length"}) | {_REQUEST_ID}
_LOOKUPS = b"x-modeltap-lookups"


def _decode(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]


class Forwarder:
    """Forwards one exchange through ``upstream``; owned by the app, shared by all requests."""

    def __init__(
        self,
        upstream: UpstreamPool,
        capturer: Capturer,
        metrics: ProxyMetrics,
        *,
        timeout_s: float,
        stream_capture: bool = True,
    ) -> None:
        self.upstream = upstream
        self.capturer = capturer
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.limit = capturer.settings.max_body_bytes
        self.stream_capture = stream_capture

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        start = time.time()
        body = await _read_body(receive)
        raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
        str_headers = _decode(raw_headers)
        event_id = event_id_from_headers(str_headers) or new_event_id()
        method = scope["method"]
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        target = path + b"?" + query if query else path

        # One pass: keep what passes as it came, note what gets replaced.
        upstream_headers = []
        host = forwarded_for = None
        for k, v in raw_headers:
            lk = k.lower()
            if lk not in _NOT_FORWARDED:
                upstream_headers.append((k, v))
            elif lk == b"host":
                host = host or v
            elif lk == b"x-forwarded-for":
                forwarded_for = forwarded_for or v
        client = scope.get("client")
        peer = (client[0] if client else "").encode()
        upstream_headers += [
            (_REQUEST_ID, event_id.encode()),
            (b"x-forwarded-for", forwarded_for + b", " + peer if forwarded_for else peer),
            (b"x-forwarded-proto", scope.get("scheme", "http").encode()),
        ]
        if host:
            upstream_headers.append((b"x-forwarded-host", host))

        status, captured, size = 502, b"", 0
        resp_headers: list[tuple[bytes, bytes]] = []
        error: str | None = None
        upstream_s: float | None = None
        try:
            status, resp_headers, captured, size, upstream_s = await self._forward(
                method, target, upstream_headers, body, event_id, send
            )
        except UpstreamTimeout:
            error, status = "upstream timeout", 504
        except UpstreamError as exc:
            error, status = f"upstream unreachable: {type(exc).__name__}", 502
        except _AfterStart as exc:  # the response had started: nothing more to tell the client
            status, resp_headers, captured, size, upstream_s, error = exc.args
        if error is not None and upstream_s is None:
            payload = orjson.dumps({"error": error, "event_id": event_id})
            resp_headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ]
            await _send_whole(send, status, resp_headers, payload, event_id)
            captured, size = payload, len(payload)
        total = time.perf_counter() - t0
        self.metrics.observe(method, status, total, upstream_s)
        self.capturer.submit(
            Exchange(
                event_id,
                start,
                total,
                method,
                path.decode("latin-1"),
                query.decode("latin-1"),
                str_headers,
                body[: self.limit + 1],
                len(body),
                status,
                _decode(resp_headers),
                captured,
                size,
                error,
            )
        )

    async def _forward(
        self,
        method: str,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        event_id: str,
        send: Send,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, int, float]:
        t_up = time.perf_counter()
        resp = await self.upstream.request(method, target, headers, body)
        try:
            return await self._relay(resp, t_up, event_id, send)
        finally:
            resp.close()

    async def _relay(
        self, resp: UpstreamResponse, t_up: float, event_id: str, send: Send
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, int, float]:
        resp_headers = [(k, v) for k, v in resp.headers if k.lower() not in _NOT_RETURNED]
        length = resp.content_length
        if length is not None and length <= self.limit:
            data = await resp.read()
            upstream_s = time.perf_counter() - t_up
            client_headers, client_body = strip_for_client(resp_headers, data)
            await _send_whole(send, resp.status, client_headers, client_body, event_id)
            return resp.status, resp_headers, data, len(data), upstream_s
        # Unknown or large size: stream as it arrives, keep a capped copy.
        client_headers = [(k, v) for k, v in resp_headers if k.lower() != _LOOKUPS]
        await send(
            {
                "type": "http.response.start",
                "status": resp.status,
                "headers": [*client_headers, (_REQUEST_ID, event_id.encode())],
            }
        )
        kept: list[bytes] = []
        kept_len = size = 0
        try:
            async for chunk in resp.iter_chunks():
                size += len(chunk)
                if self.stream_capture and kept_len <= self.limit:
                    kept.append(chunk)
                    kept_len += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except UpstreamError as exc:
            raise _AfterStart(
                resp.status,
                resp_headers,
                b"".join(kept),
                size,
                time.perf_counter() - t_up,
                f"upstream failed mid-stream: {exc!r}",
            ) from exc
        return resp.status, resp_headers, b"".join(kept), size, time.perf_counter() - t_up


class _AfterStart(Exception):
    """The upstream failed after the response had started streaming."""


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _send_whole(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, event_id: str
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (_REQUEST_ID, event_id.encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
