"""The proxy's upstream HTTP/1.1 client: httptools' C parser (llhttp, the one
uvicorn uses) over asyncio Protocols, with a keep-alive pool per upstream.

It exists because a general-purpose client's per-request machinery was the
largest share of the proxy's CPU (BENCHMARKS.md, "Proxy"). Per request this
one writes the request in one ``transport.write``, creates one future and one
timer, and when the whole response arrives in one read (the usual case for a
model's JSON answer) hands it over without another wake-up.

    pool = UpstreamPool("http://127.0.0.1:9000", max_connections=256)
    resp = await pool.request("POST", b"/v1/models/m:predict", headers, body)
    try:
        data = await resp.read()  # or: async for chunk in resp.iter_chunks()
    finally:
        resp.close()
    await pool.aclose()

Invariants:

- Bytes pass as given and as received: the request target, header names and
  values, the body. The client adds only ``Host`` and, when there is a body
  or the method defines one (POST, PUT, PATCH), ``Content-Length``: no
  ``User-Agent``, ``Accept-Encoding`` or ``Content-Type``; it never
  decompresses. Response headers come back raw, in order, duplicates kept;
  the trailers of a chunked body are dropped.
- Framing: ``Content-Length``, chunked and read-until-close bodies; no body
  for HEAD, 204 and 304. Interim responses (100, 102, 103) are skipped; a 101
  (protocol switch) is an error, the proxy never asks for one.
- Body bytes reach the caller as they arrive (``iter_chunks``); the socket is
  not read while more than 1 MiB waits for the caller.
- A connection returns to the pool once its response has fully arrived and
  both sides allow keep-alive; any other end closes it. At most
  ``max_connections`` are open or opening; further requests wait, within
  their total timeout. Idle connections are reused newest first and closed
  after ``idle_timeout_s`` (1.5 s by default: shorter than the keep-alive of
  common model servers, 2 s for gunicorn, 5 s for uvicorn, so the server
  rarely closes one just as it is reused).
- Timeouts: ``connect_timeout_s`` to open a connection; ``timeout_s`` for the
  whole exchange (waiting for a free connection, connecting, sending, and
  receiving the whole body, streamed or not).
- Retry: once, on a newly opened connection, only when all of these hold:
  the method is idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE; RFC 9110
  9.2.2), the request went out on a reused keep-alive connection, and that
  connection closed or reset before one byte of the response arrived (the
  server closed it while idle, as we reused it). Never a POST or PATCH,
  never after any response byte, after a timeout or a failed connect.

Errors, all ``UpstreamError``: ``UpstreamConnectError`` (no connection:
refused, unreachable, name not found), ``UpstreamClosedError`` (the
connection dropped, or the server broke HTTP/1.1, before the response ended),
``UpstreamTimeout`` (connect or total timeout).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from collections.abc import AsyncIterator
from types import TracebackType
from typing import cast
from urllib.parse import urlsplit

import httptools

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: Buffered body bytes above which the socket is not read until the caller catches up.
_PAUSE_AT = 1 << 20
#: Bodies at least this large are written after the head rather than copied into it.
_BIG_BODY = 1 << 16


class UpstreamError(Exception):
    """The upstream exchange failed."""


class UpstreamConnectError(UpstreamError):
    """No connection could be opened (refused, unreachable, name not found)."""


class UpstreamClosedError(UpstreamError):
    """The connection dropped, or the server broke HTTP/1.1, before the response ended."""


class UpstreamTimeout(UpstreamError):
    """The connect timeout or the exchange's total timeout ran out."""


class UpstreamPool:
    """Keep-alive HTTP/1.1 connections to one upstream (``http`` or ``https``).

    Create and use it on one event loop; ``aclose`` when done.
    """

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 256,
        connect_timeout_s: float = 5.0,
        timeout_s: float = 60.0,
        idle_timeout_s: float = 1.5,
        max_header_bytes: int = 1 << 20,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"upstream URL {url!r} must be http(s)://host[:port][/base]")
        if max_connections < 1:
            raise ValueError(f"max_connections={max_connections} must be >= 1")
        for name, value in (
            ("connect_timeout_s", connect_timeout_s),
            ("timeout_s", timeout_s),
            ("idle_timeout_s", idle_timeout_s),
        ):
            if not value > 0:
                raise ValueError(f"{name}={value} must be > 0")
        tls = parts.scheme == "https"
        default_port = 443 if tls else 80
        self.host: str = parts.hostname
        self.port: int = parts.port or default_port
        host = f"[{self.host}]" if ":" in self.host else self.host
        authority = host if self.port == default_port else f"{host}:{self.port}"
        self.authority = authority
        self.base_path = parts.path.rstrip("/").encode("latin-1")
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self.idle_timeout_s = idle_timeout_s
        self.max_header_bytes = max_header_bytes
        self._ssl = (ssl_context or ssl.create_default_context()) if tls else None
        self._host_line = b"\r\nHost: " + authority.encode("idna") + b"\r\n"
        self._idle: collections.deque[_Connection] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()
        self._open = 0  # slots held: connections open or opening, or handed to a waiter
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def idle_connections(self) -> int:
        return len(self._idle)

    async def request(
        self,
        method: str,
        target: bytes,
        headers: Headers,
        body: bytes = b"",
        *,
        timeout_s: float | None = None,
    ) -> UpstreamResponse:
        """Send one request; returns once the response's status and headers are in.

        ``target`` is the raw path and query (``b"/a?b=1"``), appended to the
        URL's base path. Header names and values must not contain CR or LF
        (true of any header a server has parsed). The caller must ``close``
        the response (or use it as an async context manager).
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if self._closed:
            raise UpstreamError("the upstream pool is closed")
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        deadline = loop.time() + timeout_s
        head = self._head(method, target, headers, body)
        is_head = method == "HEAD"
        conn = await self._acquire(loop, deadline, fresh=False)
        resp = conn.send(UpstreamResponse(conn, is_head, loop, deadline, timeout_s), head, body)
        try:
            await resp._wait_headers()
        except UpstreamClosedError:
            if resp._got_bytes or not conn.reused or method not in IDEMPOTENT:
                raise
            log.debug("upstream closed a reused connection unanswered: retrying %s once", method)
            conn = await self._acquire(loop, deadline, fresh=True)
            resp = conn.send(UpstreamResponse(conn, is_head, loop, deadline, timeout_s), head, body)
            await resp._wait_headers()
        return resp

    async def aclose(self) -> None:
        """Close idle connections now, busy ones when their response ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().drop()
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(UpstreamError("the upstream pool is closed"))
        await asyncio.sleep(0)  # let the transports finish closing

    def _head(self, method: str, target: bytes, headers: Headers, body: bytes) -> bytes:
        """The request line and headers, and the body too when it is small."""
        parts = [
            method.encode("ascii"),
            b" ",
            self.base_path,
            target,
            b" HTTP/1.1",
            self._host_line,
        ]
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        lines = len(headers) + 3
        if body or method in _BODY_METHODS:
            parts.append(b"Content-Length: %d\r\n" % len(body))
            lines += 1
        parts.append(b"\r\n")
        head = b"".join(parts)
        # Every CR and LF must be one this method wrote: no header can start another.
        if head.count(b"\n") != lines or head.count(b"\r") != lines:
            raise ValueError("CR or LF inside the method, target or a header")
        return head + body if body and len(body) < _BIG_BODY else head

    async def _acquire(
        self, loop: asyncio.AbstractEventLoop, deadline: float, *, fresh: bool
    ) -> _Connection:
        """A pooled connection (newest first) or a new one; ``fresh``: always a new one."""
        idle = self._idle
        if not fresh:
            now = loop.time()
            while idle:
                conn = idle.pop()
                if conn.usable(now, self.idle_timeout_s):
                    return conn
                conn.drop()
        if self._open < self.max_connections:
            self._open += 1
        elif fresh and idle:
            idle.popleft().retire()  # its slot becomes ours
        else:
            conn_or_slot = await self._wait_turn(loop, deadline)
            if conn_or_slot is not None:
                if not fresh and conn_or_slot.usable(loop.time(), self.idle_timeout_s):
                    return conn_or_slot
                conn_or_slot.retire()
        try:
            return await self._connect(loop, deadline)
        except BaseException:
            self._free_slot()
            raise

    async def _wait_turn(
        self, loop: asyncio.AbstractEventLoop, deadline: float
    ) -> _Connection | None:
        """Wait for a released connection, or (None) a freed slot, until the deadline."""
        fut: asyncio.Future[_Connection | None] = loop.create_future()
        self._waiters.append(fut)
        try:
            return await asyncio.wait_for(fut, deadline - loop.time())
        except asyncio.TimeoutError:
            self._give_back(fut)
            raise UpstreamTimeout(
                f"no upstream connection free within the timeout ({self.max_connections} busy)"
            ) from None
        except BaseException:
            self._give_back(fut)
            raise

    def _give_back(self, fut: asyncio.Future[_Connection | None]) -> None:
        """A waiter gave up: pass on what it was handed meanwhile, if anything."""
        if fut.done() and not fut.cancelled() and fut.exception() is None:
            conn = fut.result()
            if conn is None:
                self._free_slot()
            else:
                self.release(conn)

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        if self._closed:
            raise UpstreamError("the upstream pool is closed")
        timeout = min(self.connect_timeout_s, deadline - loop.time())
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self.host if self._ssl else None,
                ),
                timeout,
            )
        except asyncio.TimeoutError:
            raise UpstreamTimeout(
                f"connecting to {self.authority} took over {timeout:.3g}s"
            ) from None
        except OSError as exc:
            raise UpstreamConnectError(f"cannot connect to {self.authority}: {exc}") from exc
        conn.counted = True
        return conn

    def _next_waiter(self) -> asyncio.Future[_Connection | None] | None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                return fut
        return None

    def _free_slot(self) -> None:
        fut = self._next_waiter()
        if fut is not None:
            fut.set_result(None)  # the slot passes to the waiter
        else:
            self._open -= 1

    def release(self, conn: _Connection) -> None:
        """A connection whose response ended cleanly: to a waiter or to the pool."""
        if self._closed:
            conn.drop()
            return
        assert self._loop is not None
        now = conn.idle_since = self._loop.time()
        fut = self._next_waiter()
        if fut is not None:
            fut.set_result(conn)
            return
        idle = self._idle
        while idle and now - idle[0].idle_since > self.idle_timeout_s:
            idle.popleft().drop()
        idle.append(conn)

    def forget(self, conn: _Connection) -> None:
        """A connection is closing: free its slot (once) and drop it from the pool."""
        if conn.counted:
            conn.counted = False
            self._free_slot()
        if conn.idle_since and conn in self._idle:
            self._idle.remove(conn)


class _Connection(asyncio.Protocol):
    """One upstream connection; feeds the current response's parser."""

    __slots__ = (
        "counted",
        "idle_since",
        "lost",
        "parser",
        "paused",
        "pool",
        "response",
        "reused",
        "transport",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.response: UpstreamResponse | None = None
        self.parser: httptools.HttpResponseParser | None = None
        self.counted = False  # holds one of the pool's slots
        self.reused = False
        self.idle_since = 0.0
        self.paused = False
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def usable(self, now: float, idle_timeout_s: float) -> bool:
        transport = self.transport
        return (
            not self.lost
            and transport is not None
            and not transport.is_closing()
            and now - self.idle_since <= idle_timeout_s
        )

    def send(self, resp: UpstreamResponse, head: bytes, body: bytes) -> UpstreamResponse:
        self.response = resp
        self.parser = httptools.HttpResponseParser(resp)
        transport = self.transport
        if self.lost or transport is None or transport.is_closing():
            resp.fail(UpstreamClosedError("the connection closed before the request was sent"))
            self.drop()
            return resp
        transport.write(head)
        if len(body) >= _BIG_BODY:  # not copied into the head
            transport.write(body)
        return resp

    def data_received(self, data: bytes) -> None:
        resp = self.response
        if resp is None:  # bytes nobody asked for: this connection's framing is lost
            self.drop()
            return
        resp._got_bytes = True
        try:
            self.parser.feed_data(data)  # type: ignore[union-attr]
        except httptools.HttpParserUpgrade:
            resp.fail(UpstreamClosedError("the upstream switched protocols (101)"))
        except httptools.HttpParserError as exc:
            resp.fail(UpstreamClosedError(f"malformed HTTP response from upstream: {exc}"))
        if resp._error is not None:
            self.drop()
        elif resp._done:
            self.finish(resp)
        else:
            resp._wake()

    def finish(self, resp: UpstreamResponse) -> None:
        """The response has fully arrived: reuse the connection if both sides allow."""
        keep = resp._reusable
        self.response = self.parser = None
        resp._complete()
        if not keep:
            self.drop(abort=False)
            return
        if self.paused:
            self.resume()
        self.reused = True
        self.pool.release(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pool.forget(self)
        resp, self.response, self.parser = self.response, None, None
        if resp is None:
            return
        if resp._headers_done and resp._until_eof and exc is None:
            resp._complete()  # a body without length or chunks ends with the connection
        else:
            why = f"reset ({exc})" if exc else "closed"
            resp.fail(
                UpstreamClosedError(f"the upstream connection {why} before the response ended")
            )

    def drop(self, *, abort: bool = True) -> None:
        """Close and forget; a response still in flight must have been failed or ended."""
        self.response = self.parser = None
        self.pool.forget(self)
        if self.transport is not None and not self.transport.is_closing():
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def retire(self) -> None:
        """Close without freeing the slot: the caller takes it over."""
        self.counted = False
        self.drop()

    def pause(self) -> None:
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume(self) -> None:
        self.paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


class UpstreamResponse:
    """One response: ``status`` and raw ``headers`` once returned; the body by
    ``read`` (whole) or ``iter_chunks`` (as it arrives), once. Also the
    parser's callback object for its connection.

    ``content_length`` is the ``Content-Length`` header's value (None when the
    body is chunked or delimited by the connection's end); for HEAD, 204 and
    304 it may be set while the body is empty.
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_done",
        "_error",
        "_got_bytes",
        "_header_bytes",
        "_headers_done",
        "_interim",
        "_is_head",
        "_loop",
        "_max_header_bytes",
        "_reusable",
        "_timeout_s",
        "_timer",
        "_until_eof",
        "_waiter",
        "content_length",
        "headers",
        "status",
    )

    def __init__(
        self,
        conn: _Connection,
        is_head: bool,
        loop: asyncio.AbstractEventLoop,
        deadline: float,
        timeout_s: float,
    ) -> None:
        self.status = 0
        self.headers: Headers = []
        self.content_length: int | None = None
        self._conn: _Connection | None = conn
        self._is_head = is_head
        self._loop = loop
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._header_bytes = 0
        self._max_header_bytes = conn.pool.max_header_bytes
        self._headers_done = False
        self._done = False
        self._interim = False
        self._until_eof = False
        self._reusable = True
        self._got_bytes = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timeout_s = timeout_s
        # uvloop's clock counts whole milliseconds: without the extra one the
        # timer could fire a little before ``timeout_s`` has passed.
        self._timer: asyncio.TimerHandle | None = loop.call_at(deadline + 0.001, self._on_timeout)

    async def read(self) -> bytes:
        """The whole body (what is left of it)."""
        if self._done:
            return self._take()
        parts = []
        while True:
            if self._chunks:
                parts.append(self._take())
            if self._error is not None:
                raise self._error
            if self._done:
                return b"".join(parts)
            await self._wait()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive: each item is all that arrived since the last."""
        while True:
            if self._chunks:
                yield self._take()
            elif self._error is not None:
                raise self._error
            elif self._done:
                return
            else:
                await self._wait()

    def close(self) -> None:
        """Done with the response. A connection whose response ended is already
        back in the pool; one still receiving is closed (its framing is lost)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        conn, self._conn = self._conn, None
        if conn is not None and not self._done and conn.response is self:
            conn.drop()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- parser callbacks (httptools calls these from ``feed_data``) --

    def on_message_begin(self) -> None:
        if self._done:  # a second response nobody asked for
            self._reusable = False
        elif self.headers:  # the final response after an interim one
            self.headers = []
            self._header_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._headers_done:  # a chunked body's trailers
            return
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > self._max_header_bytes:
            self.fail(UpstreamClosedError(f"response headers over {self._max_header_bytes} bytes"))
            raise OverflowError  # stops the parser; the error above is what the caller sees
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._conn.parser  # type: ignore[union-attr]
        status = parser.get_status_code()  # type: ignore[union-attr]
        if status < 200:
            self._interim = True
            return
        self.status = status
        self._headers_done = True
        # Asked now: llhttp clears what it knows once the message is complete.
        self._reusable = parser.should_keep_alive()  # type: ignore[union-attr]
        length: int | None = None
        chunked = False
        for name, value in self.headers:
            if len(name) == 14 and name.lower() == b"content-length":
                length = int(value)  # llhttp has checked it is one decimal number
            elif len(name) == 17 and name.lower() == b"transfer-encoding":
                chunked = True
        self.content_length = length
        # llhttp cannot be told the request was HEAD: the response ends here
        # and the connection gets a new parser for its next request.
        if self._is_head:
            self._done = True
        elif length is None and not chunked and status not in (204, 304):
            self._until_eof = True

    def on_body(self, body: bytes) -> None:
        if self._done:  # a body after a HEAD response
            self._reusable = False
            return
        self._chunks.append(body)
        self._buffered += len(body)
        conn = self._conn
        if self._buffered > _PAUSE_AT and conn is not None and not conn.paused:
            conn.pause()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
        else:
            self._done = True

    # -- internals --

    async def _wait_headers(self) -> None:
        try:
            while not self._headers_done:
                if self._error is not None:
                    raise self._error
                await self._wait()
        except BaseException:
            self.close()
            raise

    async def _wait(self) -> None:
        fut = self._loop.create_future()
        self._waiter = fut
        try:
            await fut
        finally:
            self._waiter = None

    def _wake(self) -> None:
        fut = self._waiter
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _take(self) -> bytes:
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self._buffered = 0
        conn = self._conn
        if conn is not None and conn.paused:
            conn.resume()
        return data

    def _complete(self) -> None:
        self._done = True
        self._conn = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()

    def fail(self, error: UpstreamError) -> None:
        if self._error is None and not self._done:
            self._error = error
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._wake()

    def _on_timeout(self) -> None:
        self._timer = None
        if self._done:
            return
        self.fail(UpstreamTimeout(f"no complete response within {self._timeout_s:.3g}s"))
        conn, self._conn = self._conn, None
        if conn is not None and conn.response is self:
            conn.drop()
