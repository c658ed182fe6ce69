"""The floor for the proxy's design: the least a raw ASGI + aiohttp hop does
(no capture, no metrics, no header rules). A benchmark reference only.

    MIN_UPSTREAM=http://127.0.0.1:9000 uvicorn loadtest.min_passthrough:app --port 8081
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp

_session: aiohttp.ClientSession | None = None


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _session
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                _session = aiohttp.ClientSession(
                    auto_decompress=False,
                    skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
                )
            elif _session is not None:
                await _session.close()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    assert _session is not None
    url = os.environ["MIN_UPSTREAM"] + scope["path"]
    async with _session.request(
        scope["method"], url, data=body, headers={"content-type": "application/json"}
    ) as resp:
        data = await resp.read()
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await send({"type": "http.response.body", "body": data})
