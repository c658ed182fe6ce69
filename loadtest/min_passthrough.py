"""The floor for the proxy's design: the least a raw ASGI hop does (no
capture, no metrics, no header rules). Benchmark references only.

- ``app``: the upstream hop through aiohttp.
- ``app_httptools``: the same hop through ``server.upstream`` (httptools).

Both forward the same request (method, path, the ``Content-Type`` header,
the body) and answer with the same headers, so the comparison is the
client's alone.

    MIN_UPSTREAM=http://127.0.0.1:9000 uvicorn loadtest.min_passthrough:app --port 8081
    MIN_UPSTREAM=http://127.0.0.1:9000 uvicorn loadtest.min_passthrough:app_httptools --port 8082
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp

from server.upstream import UpstreamPool

_session: aiohttp.ClientSession | None = None
_pool: UpstreamPool | None = None
_CTYPE = [(b"content-type", b"application/json")]


async def _lifespan(receive: Any, send: Any, start: Any, stop: Any) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            start()
        else:
            await stop()
        await send({"type": msg["type"] + ".complete"})
        if msg["type"] == "lifespan.shutdown":
            return


async def _body(receive: Any) -> bytes:
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            return body


async def _answer(send: Any, status: int, data: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _session
    if scope["type"] == "lifespan":

        def start() -> None:
            global _session
            _session = aiohttp.ClientSession(
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )

        async def stop() -> None:
            if _session is not None:
                await _session.close()

        await _lifespan(receive, send, start, stop)
        return
    body = await _body(receive)
    assert _session is not None
    url = os.environ["MIN_UPSTREAM"] + scope["path"]
    async with _session.request(
        scope["method"], url, data=body, headers={"content-type": "application/json"}
    ) as resp:
        await _answer(send, resp.status, await resp.read())


async def app_httptools(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":

        def start() -> None:
            global _pool
            _pool = UpstreamPool(os.environ["MIN_UPSTREAM"])

        async def stop() -> None:
            if _pool is not None:
                await _pool.aclose()

        await _lifespan(receive, send, start, stop)
        return
    body = await _body(receive)
    assert _pool is not None
    resp = await _pool.request(scope["method"], scope["raw_path"], _CTYPE, body)
    try:
        await _answer(send, resp.status, await resp.read())
    finally:
        resp.close()
