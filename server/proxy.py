"""The proxy's hot path: a raw ASGI app that forwards every request to the
model server and hands a copy of the exchange to the capture.

Per request it does only: read the body, forward it (aiohttp; the facts file
measured ``httpx.AsyncClient`` collapsing under concurrency), return the
response, and append an ``Exchange`` tuple to the capture buffer. Parsing,
record building and uploads happen in the capture's background threads.

Transparency rules:

- method, path (raw, as sent), query string, body bytes and status pass
  unchanged; headers too, minus hop-by-hop ones, plus ``X-Forwarded-For``,
  ``-Proto`` and ``-Host`` upstream; the client library adds nothing of its own
  (no ``User-Agent``, ``Accept-Encoding`` or default ``Content-Type``) and never
  decompresses.
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

import asyncio
import logging
import time
from typing import Any

import aiohttp
import orjson
from yarl import URL

from capture.capturer import Capturer
from capture.payloads.lookups import strip_for_client
from capture.record import event_id_from_headers, new_event_id
from capture.types import Exchange
from server.metrics import ProxyMetrics

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


def _header_value(value: bytes) -> str:
    """A header value as aiohttp needs it (it writes str as UTF-8).

    Valid UTF-8 round-trips byte for byte. Other non-ASCII bytes (obs-text)
    cannot be written by aiohttp as they came; they are sent as the UTF-8 of
    their latin-1 reading, the one change a client could see in a header.
    """
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _decode(headers: list[tuple[bytes, bytes]]) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers]


class Forwarder:
    """Forwards one exchange; owned by the app, shared by all requests."""

    def __init__(
        self,
        upstream_url: str,
        session: aiohttp.ClientSession,
        capturer: Capturer,
        metrics: ProxyMetrics,
        *,
        timeout_s: float,
        stream_capture: bool = True,
    ) -> None:
        self.base = upstream_url.rstrip("/")
        self.session = session
        self.capturer = capturer
        self.metrics = metrics
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.limit = capturer.settings.max_body_bytes
        self.stream_capture = stream_capture

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        start = time.time()
        body = await _read_body(receive)
        raw_headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        str_headers = _decode(raw_headers)
        event_id = event_id_from_headers(str_headers) or new_event_id()
        method = scope["method"]
        path = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string", b"")
        url = self.base + path.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")

        upstream_headers = [(k, v) for k, v in raw_headers if k.lower() not in HOP_BY_HOP]
        upstream_headers = [(k, v) for k, v in upstream_headers if k.lower() != _REQUEST_ID]
        upstream_headers.append((_REQUEST_ID, event_id.encode()))
        client = scope.get("client")
        host = next((v for k, v in raw_headers if k.lower() == b"host"), b"")
        forwarded_for = next((v for k, v in raw_headers if k.lower() == b"x-forwarded-for"), b"")
        peer = (client[0] if client else "").encode()
        upstream_headers = [
            (k, v)
            for k, v in upstream_headers
            if k.lower() not in (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host")
        ]
        upstream_headers += [
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
                method, url, upstream_headers, body, event_id, send
            )
        except asyncio.TimeoutError:
            error, status = "upstream timeout", 504
        except aiohttp.ClientError as exc:
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
        url: str,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        event_id: str,
        send: Send,
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, int, float]:
        t_up = time.perf_counter()
        async with self.session.request(
            method,
            URL(url, encoded=True),
            headers=[(k.decode("latin-1"), _header_value(v)) for k, v in headers],
            data=body if body else None,
            allow_redirects=False,
            timeout=self.timeout,
        ) as resp:
            resp_headers = [
                (k, v)
                for k, v in resp.raw_headers
                if k.lower() not in HOP_BY_HOP - {b"content-length"}
            ]
            resp_headers = [(k, v) for k, v in resp_headers if k.lower() != _REQUEST_ID]
            length = resp.content_length
            if length is not None and length <= self.limit:
                data = await resp.read()
                upstream_s = time.perf_counter() - t_up
                client_headers, client_body = strip_for_client(resp_headers, data)
                await _send_whole(send, resp.status, client_headers, client_body, event_id)
                return resp.status, resp_headers, data, len(data), upstream_s
            # Unknown or large size: stream as it arrives, keep a capped copy.
            client_headers = [(k, v) for k, v in resp_headers if k.lower() != b"x-modeltap-lookups"]
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
                async for chunk in resp.content.iter_any():
                    size += len(chunk)
                    if self.stream_capture and kept_len <= self.limit:
                        kept.append(chunk)
                        kept_len += len(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
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
