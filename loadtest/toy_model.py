"""A toy model server (raw ASGI) for tests, benchmarks and the demo stack.

Routes:
- ``POST /v1/models/{name}:predict``: KServe v1; a score per instance
  (logistic of the first feature) and ``X-Model-Version: 1``.
- ``POST /rank``: ``{"user_id", "items": [...]}`` -> ``{"scores": [...]}``, with
  the user's online-store features reported in ``_modeltap`` and per-item
  stock in the ``X-Modeltap-Lookups`` header.
- ``POST /echo``: returns the request body as is, and the headers it saw as
  JSON in ``X-Echo-Headers``.
- ``GET /gzip``: a gzip-encoded JSON body (``Content-Encoding: gzip``).
- ``GET /stream``: server-sent events, ``n`` chunks ``delay`` seconds apart.
- ``GET /status/{code}``: that status; ``GET /slow?s=``: sleeps first.

    uvicorn loadtest.toy_model:app --port 9000
"""

from __future__ import annotations

import asyncio
import gzip
import math
from typing import Any
from urllib.parse import parse_qs

import orjson

STORE = {
    f"u{i}": {"ltv": round(i * 1.5, 2), "segment": "gold" if i % 3 == 0 else "basic"}
    for i in range(1000)
}


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            return b"".join(chunks)


async def _send(
    send: Any,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    ctype: bytes = b"application/json",
) -> None:
    hdrs = [
        (b"content-type", ctype),
        (b"content-length", str(len(body)).encode()),
        *(headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": hdrs})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            await send({"type": msg["type"] + ".complete"})
            if msg["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    path, method = scope["path"], scope["method"]
    query = parse_qs(scope.get("query_string", b"").decode())
    body = await _body(receive)
    if path.endswith(":predict") and method == "POST":
        try:
            instances = orjson.loads(body)["instances"]
            preds = [
                round(
                    1
                    / (
                        1
                        + math.exp(-float(x[0] if isinstance(x, list) else next(iter(x.values()))))
                    ),
                    6,
                )
                for x in instances
            ]
        except Exception:
            await _send(send, 400, b'{"error": "bad request"}')
            return
        await _send(send, 200, orjson.dumps({"predictions": preds}), [(b"x-model-version", b"1")])
    elif path == "/rank" and method == "POST":
        req = orjson.loads(body)
        user = STORE.get(req.get("user_id"), {})
        items = req.get("items", [])
        scores = [
            round(((i * 37) % 100) / 100 + user.get("ltv", 0) / 10000, 6) for i in range(len(items))
        ]
        stock = {
            str(it.get("id")): {"stock": i % 4}
            for i, it in enumerate(items)
            if isinstance(it, dict)
        }
        out = orjson.dumps({"scores": scores, "_modeltap": {"lookups": user}})
        await _send(send, 200, out, [(b"x-modeltap-lookups", orjson.dumps({"items": stock}))])
    elif path == "/echo":
        seen = orjson.dumps({k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]})
        ctype = next(
            (v for k, v in scope["headers"] if k == b"content-type"), b"application/octet-stream"
        )
        await _send(send, 200, body, [(b"x-echo-headers", seen)], ctype=ctype)
    elif path == "/gzip":
        raw = gzip.compress(orjson.dumps({"predictions": [0.5] * 50}))
        await _send(send, 200, raw, [(b"content-encoding", b"gzip")])
    elif path == "/stream":
        n, delay = int(query.get("n", ["5"])[0]), float(query.get("delay", ["0.05"])[0])
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for i in range(n):
            await send(
                {
                    "type": "http.response.body",
                    "body": f"data: token-{i}\n\n".encode(),
                    "more_body": True,
                }
            )
            await asyncio.sleep(delay)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
        if code in (204, 304):  # no body allowed
            await send({"type": "http.response.start", "status": code, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        else:
            await _send(send, code, b'{"error": "as asked"}')
    elif path == "/slow":
        await asyncio.sleep(float(query.get("s", ["1"])[0]))
        await _send(send, 200, b'{"ok": true}')
    else:
        await _send(send, 404, b'{"error": "not found"}')
