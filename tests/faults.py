"""Network faults for tests: a real TCP forwarder on loopback that can be cut.

``TcpProxy(target_port)`` listens on its own loopback port and forwards bytes
to the target. ``down()`` closes the listener (new connections are refused)
and resets every open connection; ``up()`` listens again on the same port.
``stall()`` is a blackhole (a network partition rather than a dead server):
open connections are reset, new ones are accepted and then never answered;
``up()`` resets those and forwards again.
Tests point a client at the proxy to give a real server a real outage
without restarting it (a SeaweedFS restart takes 20-60 s here).
"""

from __future__ import annotations

import contextlib
import socket
import threading


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._held: set[socket.socket] = set()
        self._stalled = False
        self._listener: socket.socket | None = None
        self.port = 0
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        with self._lock:
            self._stalled, held, self._held = False, self._held, set()
        _reset_all(held)
        with self._lock:
            if self._listener is not None:
                return
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            sock.listen(128)
            self.port = sock.getsockname()[1]
            self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
            held, self._held = self._held, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        _reset_all(conns | held)

    close = down

    def stall(self) -> None:
        """Accept but never answer (until ``up()``); open connections are reset."""
        with self._lock:
            self._stalled = True
            conns, self._conns = self._conns, set()
        _reset_all(conns)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with self._lock:
                if self._stalled:
                    self._held.add(client)  # read nothing, answer nothing
                    continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            with self._lock:
                self._conns.discard(src)
                self._conns.discard(dst)


def _reset_all(conns: set[socket.socket]) -> None:
    for conn in conns:
        with contextlib.suppress(OSError):
            conn.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            conn.close()  # linger 0: the peer sees a reset
