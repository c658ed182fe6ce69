"""The model misbehaving at the TCP level, seen through a real proxy (uvicorn
on loopback): resets before, during and after the request, headers or a body
cut short. The client gets 502 with the event id (what a client talking to
the model directly would see as a failed connection), every case is
captured with its error, and the proxy keeps serving. Upstream down, slow
beyond the timeout and 5xx answers are in tests/server/test_forwarding.py;
the upstream client's own handling in tests/server/test_upstream.py."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.server.conftest import run_proxy
from tests.server.test_forwarding import records

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def _reset(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def _read_request(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk


BEHAVIOURS: dict[str, Callable[[socket.socket], None]] = {
    "reset on accept": _reset,
    "reset after the request": lambda c: (_read_request(c), _reset(c)),
    "closed without answering": lambda c: (_read_request(c), c.close()),
    "headers cut short": lambda c: (
        _read_request(c),
        c.sendall(b"HTTP/1.1 200 OK\r\nCont"),
        _reset(c),
    ),
    "body cut short": lambda c: (
        _read_request(c),
        c.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"partial'),
        _reset(c),
    ),
    "garbage instead of HTTP": lambda c: (
        _read_request(c),
        c.sendall(b"\x00\xffSSH-2.0\r\n\r\n"),
        c.close(),
    ),
}


@contextlib.contextmanager
def bad_upstream(behaviour: Callable[[socket.socket], None]) -> Iterator[dict[str, object]]:
    """A loopback server applying ``behaviour`` to every connection until
    ``state["healthy"]`` is set, then answering 200 ``{}``."""
    state: dict[str, object] = {"healthy": False}
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    state["url"] = f"http://127.0.0.1:{listener.getsockname()[1]}"

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                if state["healthy"]:
                    _read_request(conn)
                    conn.sendall(OK)
                    conn.close()
                else:
                    behaviour(conn)
            except OSError:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        with contextlib.suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        listener.close()
        thread.join(5)


@pytest.mark.parametrize("name", list(BEHAVIOURS))
def test_upstream_faults_answer_502_are_captured_and_the_proxy_recovers(tmp_path, name):
    with (
        bad_upstream(BEHAVIOURS[name]) as upstream,
        run_proxy(str(upstream["url"]), tmp_path / "c") as proxy,
    ):
        with httpx.Client(timeout=10) as c:
            failed = [
                c.post(proxy.url + "/v1/models/m:predict", json={"instances": [[i]]})
                for i in range(5)
            ]
            failed.append(c.get(proxy.url + "/idempotent"))  # GET may be retried once: still 502
            upstream["healthy"] = True
            fine = c.post(proxy.url + "/v1/models/m:predict", json={"instances": [[9]]})
            health = c.get(proxy.url + "/_modeltap/healthz")
        recs = records(proxy, expected=7)
    for r in failed:
        assert r.status_code == 502, (name, r.status_code, r.text)
        assert r.json()["event_id"] == r.headers["x-request-id"]
    assert fine.status_code == 200 and fine.content == b"{}" and health.status_code == 200
    by_id = {rec["event_id"]: rec for rec in recs}
    for r in failed:
        rec = by_id[r.headers["x-request-id"]]
        assert rec["status"] == 502 and rec["error"].startswith("upstream unreachable"), rec
    assert by_id[fine.headers["x-request-id"]]["status"] == 200
