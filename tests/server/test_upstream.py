"""``server.upstream`` against real loopback servers: the toy model under
uvicorn, and a raw socket server (below) that writes exactly the bytes each
test scripts, for the HTTP/1.1 framing cases a well-behaved server never
shows. Every test runs on uvloop (the proxy's loop) and on asyncio's own."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import uvloop

from loadtest.toy_model import app as toy_app
from server.upstream import (
    UpstreamClosedError,
    UpstreamConnectError,
    UpstreamPool,
    UpstreamResponse,
    UpstreamTimeout,
)
from tests.servers import free_port, uvicorn_server

# -- a raw HTTP/1.1 server, one thread per connection ------------------------


class Peer:
    """One accepted connection, as the scripted handler sees it."""

    def __init__(self, sock: socket.socket, server: RawServer, index: int) -> None:
        self.sock, self.server, self.index = sock, server, index
        self.buf = b""

    def request(self) -> bytes | None:
        """The next whole request (head and Content-Length body), None at EOF."""
        while b"\r\n\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += self.sock.recv(65536)
        raw, self.buf = head + b"\r\n\r\n" + rest[:length], rest[length:]
        with self.server.lock:
            self.server.requests.append((self.index, raw))
        return raw

    def send(self, *parts: bytes, pause: float = 0.0) -> None:
        for part in parts:
            self.sock.sendall(part)
            if pause:
                time.sleep(pause)

    def wait(self, seconds: float) -> None:
        """Stall (a slow server), ending early when the test is over."""
        self.server.stopping.wait(seconds)


class RawServer:
    def __init__(self, handler: Callable[[Peer], None], backlog: int = 64) -> None:
        self.handler = handler
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[tuple[int, bytes]] = []  # (connection index, raw request)
        self.connections = self.active = self.peak = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.socks: list[socket.socket] = []
        self.threads: list[threading.Thread] = []

    def serve(self) -> None:
        self.listener.settimeout(0.05)
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except OSError:  # timeout, or closed
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                index = self.connections
                self.connections += 1
                self.socks.append(sock)
            thread = threading.Thread(target=self._run, args=(Peer(sock, self, index),))
            self.threads.append(thread)
            thread.start()

    def _run(self, peer: Peer) -> None:
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            self.handler(peer)
        except OSError:
            pass  # the client went away: part of some tests
        finally:
            with self.lock:
                self.active -= 1
            peer.sock.close()

    def requests_on(self, index: int) -> list[bytes]:
        return [raw for i, raw in self.requests if i == index]


@contextlib.contextmanager
def raw_server(handler: Callable[[Peer], None]) -> Iterator[RawServer]:
    server = RawServer(handler)
    acceptor = threading.Thread(target=server.serve)
    acceptor.start()
    try:
        yield server
    finally:
        server.stopping.set()
        acceptor.join(5)
        server.listener.close()
        for sock in server.socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in server.threads:
            thread.join(5)


def replies(*answers: bytes) -> Callable[[Peer], None]:
    """Answer the requests on each connection with ``answers`` in turn, then close."""

    def handler(peer: Peer) -> None:
        for answer in answers:
            if peer.request() is None:
                return
            peer.send(answer)

    return handler


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


# -- running the client ----------------------------------------------------

Run = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=["uvloop", "asyncio"])
def run(request: pytest.FixtureRequest) -> Run:
    if request.param == "uvloop":
        return uvloop.run  # type: ignore[no-any-return]
    return asyncio.run


async def fetch(
    pool: UpstreamPool,
    method: str = "GET",
    target: bytes = b"/",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
) -> tuple[UpstreamResponse, bytes]:
    resp = await pool.request(method, target, headers or [], body)
    async with resp:
        return resp, await resp.read()


@pytest.fixture(scope="module")
def model_url() -> Iterator[str]:
    with uvicorn_server(toy_app) as url:
        yield url


# -- against the toy model -------------------------------------------------


def test_headers_and_body_pass_byte_for_byte_and_nothing_is_added(run: Run, model_url: str) -> None:
    sent = [
        (b"content-type", b"text/csv"),
        (b"x-utf8", "café ✓".encode()),
        (b"x-obs-text", b"\xff\xfe latin"),
        (b"x-dup", b"1"),
        (b"x-dup", b"2"),
    ]
    body = bytes(range(256)) * 40

    async def go() -> tuple[UpstreamResponse, bytes]:
        async with contextlib.aclosing(UpstreamPool(model_url)) as pool:  # type: ignore[type-var]
            return await fetch(pool, "PUT", b"/echo?a=1&b=%2F", sent, body)

    resp, data = run(go())
    assert resp.status == 200 and data == body
    seen = json.loads(dict(resp.headers)[b"x-echo-headers"])
    port = model_url.rsplit(":", 1)[1]
    # uvicorn folds the duplicate into its dict by last value; everything else is exact
    assert seen == {
        "host": f"127.0.0.1:{port}",
        "content-length": str(len(body)),
        "content-type": "text/csv",
        "x-utf8": "café ✓".encode().decode("latin-1"),
        "x-obs-text": "\xff\xfe latin",
        "x-dup": "2",
    }


def test_gzip_body_is_not_decompressed_and_headers_come_back_raw(run: Run, model_url: str) -> None:
    async def go() -> tuple[UpstreamResponse, bytes]:
        pool = UpstreamPool(model_url)
        try:
            return await fetch(pool, "GET", b"/gzip")
        finally:
            await pool.aclose()

    resp, data = run(go())
    assert (b"content-encoding", b"gzip") in resp.headers
    assert resp.content_length == len(data)
    assert json.loads(gzip.decompress(data))["predictions"][0] == 0.5


def test_sse_stream_chunks_arrive_as_sent(run: Run, model_url: str) -> None:
    async def go() -> list[tuple[float, bytes]]:
        pool = UpstreamPool(model_url)
        t0 = time.monotonic()
        resp = await pool.request("GET", b"/stream?n=4&delay=0.2", [])
        got = []
        async with resp:
            async for chunk in resp.iter_chunks():
                got.append((time.monotonic() - t0, chunk))
        await pool.aclose()
        return got

    got = run(go())
    assert b"".join(c for _, c in got) == b"".join(b"data: token-%d\n\n" % i for i in range(4))
    assert got[0][0] < 0.15 and got[-1][0] > 0.5  # the first event came long before the end


def test_keep_alive_reuses_one_connection_and_statuses_pass(run: Run, model_url: str) -> None:
    async def go() -> tuple[list[int], int]:
        pool = UpstreamPool(model_url)
        codes = []
        for code in (200, 201, 204, 304, 404, 500):
            target = b"/v1/models/toy:predict" if code == 200 else b"/status/%d" % code
            body = b'{"instances": [[1]]}' if code == 200 else b""
            resp, _ = await fetch(pool, "POST" if code == 200 else "GET", target, body=body)
            codes.append(resp.status)
        opened = pool.open_connections
        await pool.aclose()
        return codes, opened

    codes, opened = run(go())
    assert codes == [200, 201, 204, 304, 404, 500]
    assert opened == 1


# -- framing, against the raw server --------------------------------------


def test_request_bytes_on_the_wire(run: Run) -> None:
    with raw_server(replies(ok(), ok(), ok())) as srv:

        async def go() -> None:
            pool = UpstreamPool(srv.url + "/base/")
            await fetch(pool, "POST", b"/p?q=1", [(b"X-A", b"b")], b"abc")
            await fetch(pool, "GET", b"/g")
            await fetch(pool, "POST", b"/empty")
            await pool.aclose()

        run(go())
    host = srv.url.removeprefix("http://").encode()
    assert [raw for _, raw in srv.requests] == [
        b"POST /base/p?q=1 HTTP/1.1\r\nHost: %s\r\nX-A: b\r\nContent-Length: 3\r\n\r\nabc" % host,
        b"GET /base/g HTTP/1.1\r\nHost: %s\r\n\r\n" % host,
        b"POST /base/empty HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\n\r\n" % host,
    ]


def test_chunked_with_trailers_then_the_connection_is_reused(run: Run) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: abc\r\n\r\n"
    )
    with raw_server(replies(chunked, ok(b"second"))) as srv:

        async def go() -> list[tuple[UpstreamResponse, bytes]]:
            pool = UpstreamPool(srv.url)
            out = [await fetch(pool), await fetch(pool)]
            await pool.aclose()
            return out

        (first, body1), (_, body2) = run(go())
    assert body1 == b"hello world" and first.content_length is None
    assert [k for k, _ in first.headers] == [b"Transfer-Encoding", b"Trailer"]  # no trailer
    assert body2 == b"second" and srv.connections == 1


def test_content_length_and_headers_split_across_packets(run: Run) -> None:
    def handler(peer: Peer) -> None:
        peer.request()
        peer.send(
            b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 10\r\n\r\nhel", b"lo", b"world", pause=0.1
        )

    with raw_server(handler) as srv:

        async def go() -> list[tuple[float, bytes]]:
            pool = UpstreamPool(srv.url)
            t0 = time.monotonic()
            resp = await pool.request("GET", b"/", [])
            got = [(time.monotonic() - t0, chunk) async for chunk in resp.iter_chunks()]
            resp.close()
            await pool.aclose()
            return got

        got = run(go())
    assert b"".join(c for _, c in got) == b"helloworld"
    assert len(got) == 3 and got[0][0] < got[-1][0] - 0.15  # handed over as they came


def test_interim_no_body_and_head_responses_keep_the_framing(run: Run) -> None:
    answers = [
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        + ok(b"final", b"X-Final: 1\r\n"),
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",  # the answer to HEAD
        ok(b"last"),
    ]
    with raw_server(replies(*answers)) as srv:

        async def go() -> list[tuple[UpstreamResponse, bytes]]:
            pool = UpstreamPool(srv.url)
            out = [await fetch(pool) for _ in range(3)]
            out.append(await fetch(pool, "HEAD"))
            out.append(await fetch(pool))
            await pool.aclose()
            return out

        out = run(go())
    assert [(r.status, body) for r, body in out] == [
        (200, b"final"),
        (204, b""),
        (304, b""),
        (200, b""),
        (200, b"last"),
    ]
    assert out[0][0].headers == [(b"Content-Length", b"5"), (b"X-Final", b"1")]
    assert out[3][0].content_length == 1234
    assert srv.connections == 1  # every response ended where it should


def test_connection_close_and_read_until_close(run: Run) -> None:
    answers = [
        ok(b"closing", b"Connection: close\r\n"),
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nno length, ends at close",
    ]

    def handler(peer: Peer) -> None:
        peer.request()
        peer.send(answers[peer.index])  # then the connection closes

    with raw_server(handler) as srv:

        async def go() -> tuple[list[bytes], int]:
            pool = UpstreamPool(srv.url)
            bodies = [(await fetch(pool))[1], (await fetch(pool))[1]]
            return bodies, pool.open_connections

        bodies, still_open = run(go())
    assert bodies == [b"closing", b"no length, ends at close"]
    assert srv.connections == 2 and still_open == 0


def test_idle_connection_closed_by_the_server_is_not_used(run: Run) -> None:
    def handler(peer: Peer) -> None:
        peer.request()
        peer.send(ok(b"once"))  # keep-alive by default, but the server closes it now

    with raw_server(handler) as srv:

        async def go() -> list[bytes]:
            pool = UpstreamPool(srv.url)
            first = (await fetch(pool, "POST", body=b"1"))[1]
            await asyncio.sleep(0.2)  # the close arrives while the connection is idle
            second = (await fetch(pool, "POST", body=b"2"))[1]
            await pool.aclose()
            return [first, second]

        assert run(go()) == [b"once", b"once"]
    assert srv.connections == 2 and len(srv.requests) == 2  # no retry was needed


def test_idle_connections_expire_and_aclose_closes_them(run: Run) -> None:
    def handler(peer: Peer) -> None:
        while peer.request() is not None:
            peer.send(ok())

    with raw_server(handler) as srv:

        async def go() -> tuple[int, int]:
            pool = UpstreamPool(srv.url, idle_timeout_s=0.1)
            await fetch(pool)
            await asyncio.sleep(0.25)
            await fetch(pool)  # the first connection had been idle too long
            idle = pool.idle_connections
            await pool.aclose()
            return idle, pool.open_connections

        assert run(go()) == (1, 0)
        deadline = time.monotonic() + 2
        while srv.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.connections == 2 and srv.active == 0  # both saw the client close


def _closes_unanswered_on_reuse(peer: Peer) -> None:
    """Connection 0 answers once, then takes the next request and closes
    without a byte (the server's idle close racing our reuse)."""
    while peer.request() is not None:
        if peer.index == 0 and len(peer.server.requests_on(0)) == 2:
            return
        peer.send(ok(b"fresh" if peer.index else b"first"))


def test_idempotent_request_is_retried_once_on_a_fresh_connection(run: Run) -> None:
    with raw_server(_closes_unanswered_on_reuse) as srv:

        async def go() -> list[bytes]:
            pool = UpstreamPool(srv.url)
            out = [(await fetch(pool))[1], (await fetch(pool, "PUT", body=b"x"))[1]]
            await pool.aclose()
            return out

        assert run(go()) == [b"first", b"fresh"]
    assert [i for i, _ in srv.requests] == [0, 0, 1]  # sent twice: once unanswered, once anew


def test_post_is_never_retried(run: Run) -> None:
    with raw_server(_closes_unanswered_on_reuse) as srv:

        async def go() -> None:
            pool = UpstreamPool(srv.url)
            await fetch(pool)
            with pytest.raises(UpstreamClosedError, match="before the response ended"):
                await fetch(pool, "POST", body=b"not twice")
            await pool.aclose()

        run(go())
    assert [i for i, _ in srv.requests] == [0, 0]


def test_no_retry_after_a_response_byte(run: Run) -> None:
    def handler(peer: Peer) -> None:
        while peer.request() is not None:
            if len(peer.server.requests) == 2:
                peer.send(b"HTTP/1.1 200 OK\r\nContent-Len")  # then closes mid-headers
                return
            peer.send(ok())

    with raw_server(handler) as srv:

        async def go() -> None:
            pool = UpstreamPool(srv.url)
            await fetch(pool)
            with pytest.raises(UpstreamClosedError):
                await fetch(pool, "GET")
            await pool.aclose()

        run(go())
    assert len(srv.requests) == 2


def test_body_over_10_mb_streams_with_bounded_buffering(run: Run) -> None:
    big = hashlib.sha256(b"seed").digest() * (11 * 1024 * 1024 // 32)
    chunked = b"".join(
        b"%x\r\n%s\r\n" % (len(big[i : i + 65536]), big[i : i + 65536])
        for i in range(0, len(big), 65536)
    )
    answers = [
        ok(big),
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n",
    ]
    with raw_server(replies(*answers)) as srv:

        async def go() -> list[tuple[bytes, int]]:
            pool = UpstreamPool(srv.url)
            out = []
            for _ in answers:
                resp = await pool.request("GET", b"/", [])
                parts = []
                async with resp:
                    async for chunk in resp.iter_chunks():
                        parts.append(chunk)
                        await asyncio.sleep(0.002)  # a slow client downstream
                out.append((b"".join(parts), max(map(len, parts))))
            await pool.aclose()
            return out

        out = run(go())
    for body, largest in out:
        assert body == big
        assert largest <= (1 << 20) + (512 << 10)  # reading paused at 1 MiB waiting
    assert srv.connections == 1


def test_total_timeout_before_headers_and_mid_body(run: Run) -> None:
    def handler(peer: Peer) -> None:
        peer.request()
        if peer.index == 1:
            peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        peer.wait(5)

    with raw_server(handler) as srv:

        async def go() -> tuple[list[float], int]:
            pool = UpstreamPool(srv.url, timeout_s=0.3)
            took = []
            t0 = time.monotonic()
            with pytest.raises(UpstreamTimeout):
                await pool.request("GET", b"/", [])
            took.append(time.monotonic() - t0)
            t0 = time.monotonic()
            resp = await pool.request("GET", b"/", [])
            with pytest.raises(UpstreamTimeout):
                await resp.read()
            resp.close()
            took.append(time.monotonic() - t0)
            opened = pool.open_connections
            await pool.aclose()
            return took, opened

        took, opened = run(go())
    assert all(0.28 < t < 1.0 for t in took), took
    assert opened == 0  # a timed-out connection is closed, not pooled


def test_connect_timeout_and_refused(run: Run) -> None:
    # A listener that never accepts, its backlog full: the handshake hangs.
    with socket.create_server(("127.0.0.1", 0), backlog=0) as listener:
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)

        async def go() -> tuple[float, int]:
            pool = UpstreamPool(f"http://127.0.0.1:{port}", connect_timeout_s=0.3)
            t0 = time.monotonic()
            with pytest.raises(UpstreamTimeout, match=r"connecting to 127\.0\.0\.1"):
                await pool.request("GET", b"/", [])
            took = time.monotonic() - t0
            refused = UpstreamPool(f"http://127.0.0.1:{free_port()}")
            with pytest.raises(UpstreamConnectError, match="cannot connect"):
                await refused.request("GET", b"/", [])
            return took, pool.open_connections + refused.open_connections

        try:
            took, still_open = run(go())
        finally:
            for filler in fillers:
                filler.close()
    assert 0.28 < took < 1.0 and still_open == 0


def test_pool_is_bounded_and_waiters_time_out(run: Run) -> None:
    def handler(peer: Peer) -> None:
        while peer.request() is not None:
            peer.wait(0.1)
            peer.send(ok())

    with raw_server(handler) as srv:

        async def go() -> list[int]:
            pool = UpstreamPool(srv.url, max_connections=2)
            results = await asyncio.gather(*(fetch(pool, "POST", body=b"x") for _ in range(8)))
            tight = UpstreamPool(srv.url, max_connections=1, timeout_s=0.15)
            outcomes = await asyncio.gather(fetch(tight), fetch(tight), return_exceptions=True)
            await pool.aclose()
            await tight.aclose()
            return [r.status for r, _ in results] + [
                getattr(o[0], "status", 0) if isinstance(o, tuple) else -1 for o in outcomes
            ]

        statuses = run(go())
    assert statuses[:8] == [200] * 8
    assert sorted(statuses[8:]) == [-1, 200]  # the second waited past its timeout
    assert srv.peak <= 2 + 1  # two from the first pool, one from the tight one


def test_malformed_and_oversized_responses_are_errors(run: Run) -> None:
    big_header = b"X-Big: " + b"v" * 4096 + b"\r\n"
    answers = [b"NOT HTTP AT ALL\r\n\r\n", ok(b"x", big_header * 3), ok(b"y", big_header)]

    def handler(peer: Peer) -> None:
        peer.request()
        peer.send(answers[peer.index])

    with raw_server(handler) as srv:

        async def go(url: str) -> bytes:
            pool = UpstreamPool(url, max_header_bytes=10_000)
            with pytest.raises(UpstreamClosedError, match="malformed"):
                await fetch(pool)
            with pytest.raises(UpstreamClosedError, match="over 10000 bytes"):
                await fetch(pool)
            body = (await fetch(pool))[1]  # within the limit
            await pool.aclose()
            return body

        assert run(go(srv.url)) == b"y"


def test_cancelled_caller_closes_the_connection(run: Run) -> None:
    def handler(peer: Peer) -> None:
        while peer.request() is not None:
            if peer.index == 0:
                peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nhalf")
                peer.wait(5)
                return
            peer.send(ok(b"new"))

    with raw_server(handler) as srv:

        async def go() -> tuple[int, bytes]:
            pool = UpstreamPool(srv.url, max_connections=1)
            resp = await pool.request("GET", b"/", [])
            reader = asyncio.ensure_future(resp.read())
            await asyncio.sleep(0.05)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            resp.close()  # mid-body: the connection cannot be reused
            opened = pool.open_connections
            body = (await fetch(pool))[1]  # the freed slot serves the next request
            await pool.aclose()
            return opened, body

        assert run(go()) == (0, b"new")
    assert srv.connections == 2


def test_bad_arguments_are_refused() -> None:
    for url in ("ftp://h/", "http:///nohost", "127.0.0.1:80"):
        with pytest.raises(ValueError, match="must be http"):
            UpstreamPool(url)
    with pytest.raises(ValueError, match="max_connections"):
        UpstreamPool("http://h", max_connections=0)
    with pytest.raises(ValueError, match="timeout_s"):
        UpstreamPool("http://h", timeout_s=0)
    pool = UpstreamPool(f"http://127.0.0.1:{free_port()}")  # refused if it ever connected
    for target, headers in (
        (b"/", [(b"x-a", b"1\r\nx-injected: 1")]),
        (b"/", [(b"x-a\n", b"1")]),
        (b"/ HTTP/1.1\r\nx-injected: 1", []),
    ):
        with pytest.raises(ValueError, match="CR or LF"):
            asyncio.run(pool.request("GET", target, headers))
