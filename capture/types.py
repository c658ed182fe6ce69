"""Shared vocabulary: the seams (``Sink``, ``Clock``) and the raw exchange.

``Exchange`` is what the request path hands to the buffer: a tuple of what
was already in hand (bytes, headers, timings). Everything costly (parsing,
record building, redaction, encoding) happens later, in the background.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

Headers = "list[tuple[str, str]]"


@runtime_checkable
class Sink(Protocol):
    """Where encoded batches go. One method does the work.

    ``put`` stores ``data`` under ``key`` (relative to the sink's root/prefix)
    and raises ``SinkError`` when it cannot. Storing the same key twice must
    overwrite, so a retried or replayed upload never creates a duplicate.
    """

    def put(self, key: str, data: bytes) -> None: ...

    def check(self) -> None:
        """Raise ``SinkError`` unless the sink is writable now (for readiness)."""

    def describe(self) -> str:
        """A short, credential-free description for logs (``s3://b/p``)."""

    def close(self) -> None: ...


class Clock(Protocol):
    """Time source, injected so age-based flushing is tested without sleeping."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (record times, partition keys)."""

    def monotonic(self) -> float:
        """Monotonic seconds (ages, deadlines, latencies)."""


class Exchange(NamedTuple):
    """One request/response pair, as the proxy saw it. Built on the request path.

    Bodies are the bytes as forwarded (already cut to the capture limit by the
    caller when it streams); ``request_size``/``response_size`` are the full
    sizes. ``start`` is wall-clock epoch seconds; ``latency_s`` is the total
    time the exchange took; ``error`` names a transport failure (``upstream
    unreachable``, ``upstream timeout``) or an exception in model code.
    """

    event_id: str
    start: float
    latency_s: float
    method: str
    path: str
    query: str
    request_headers: list[tuple[str, str]]
    request_body: bytes
    request_size: int
    status: int
    response_headers: list[tuple[str, str]]
    response_body: bytes
    response_size: int
    error: str | None = None
    model: str | None = None
    extra: dict[str, Any] | None = None

    @classmethod
    def of(
        cls,
        request_body: bytes,
        response_body: bytes,
        *,
        path: str = "/",
        method: str = "POST",
        status: int = 200,
        content_type: str = "application/json",
        event_id: str | None = None,
        latency_s: float = 0.0,
        start: float | None = None,
    ) -> Exchange:
        """A complete exchange with both bodies of one content type (tools, tests, demos)."""
        import time

        from capture.record import new_event_id

        headers = [("content-type", content_type)]
        return cls(
            event_id or new_event_id(),
            time.time() if start is None else start,
            latency_s,
            method,
            path,
            "",
            headers,
            request_body,
            len(request_body),
            status,
            list(headers),
            response_body,
            len(response_body),
        )

    def size_hint(self) -> int:
        """Bytes this exchange holds in memory, approximately (O(1))."""
        return len(self.request_body) + len(self.response_body) + 512


class Kept(NamedTuple):
    """An exchange kept for a reason other than the sample (error, slow)."""

    exchange: Exchange
    reason: str
