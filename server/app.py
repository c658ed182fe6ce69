"""``create_app(settings)``: the proxy as one ASGI app.

Requests under ``/_modeltap/`` go to a small FastAPI app (``healthz``,
``readyz``, ``metrics``, ``flush``, ``ground-truth``); everything else goes to the forwarder.
The lifespan owns the upstream pool (``server.upstream``), the capturer and its threads: it
checks the sink is writable before the first request (a clear startup error
otherwise), and on shutdown (uvicorn finishes in-flight requests first)
flushes or spools the buffer within ``MODELTAP_SHUTDOWN_TIMEOUT_S``.

With ``MODELTAP_WORKERS`` > 1 each worker process runs one ``ProxyApp``; its
``WorkerRuntime`` claims the worker's spool slot and serves ``/metrics`` summed
over all workers (``server.workers``, ``server.metrics``). ``flush`` acts on
the worker that receives the request.

Nothing is created at import time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import logging
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from capture import compiled_modules
from capture.capturer import Capturer
from capture.errors import CaptureError
from capture.settings import CaptureSettings
from server.metrics import PredictionMetrics, ProxyMetrics
from server.proxy import Forwarder, Receive, Scope, Send
from server.settings import ProxySettings
from server.upstream import UpstreamError, UpstreamPool
from server.workers import WorkerRuntime

log = logging.getLogger(__name__)

ADMIN_PREFIX = "/_modeltap/"
MAX_HEADER_BYTES = 1 << 20
MAX_LABEL_BODY_BYTES = 16 << 20  # one posted label batch (~150k labels)
#: How long readyz waits for each capture check (sink, spool).
CHECK_TIMEOUT_S = 0.5
#: How long readyz waits for the upstream's answer to ``GET /``.
UPSTREAM_CHECK_TIMEOUT_S = 2.0
#: The longest readyz takes: a probe's timeout must be longer than this
#: (Kubernetes' default of 1 s is not; deploy/k8s sets 4 s).
READYZ_MAX_S = UPSTREAM_CHECK_TIMEOUT_S + 2 * CHECK_TIMEOUT_S


class ProxyApp:
    """The ASGI entry point; state lives here, created in the lifespan."""

    def __init__(
        self, settings: ProxySettings, *, registry: CollectorRegistry | None = None
    ) -> None:
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.exposition = self.registry  # what /metrics serves (all workers' sum with N > 1)
        self.runtime: WorkerRuntime | None = None
        self.capturer: Capturer | None = None
        self.pool: UpstreamPool | None = None
        self.forwarder: Forwarder | None = None
        self.admin = _admin_app(self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http" and scope["path"].startswith(ADMIN_PREFIX):
            await self.admin(scope, receive, send)
        elif kind == "http" and self.forwarder is not None:
            await self.forwarder(scope, receive, send)
        elif kind == "http":
            await _plain(send, 503, b'{"error": "proxy starting"}')

    async def startup(self) -> None:
        s = self.settings
        self.runtime = WorkerRuntime(s)
        predictions = PredictionMetrics(self.registry, s.buckets("prediction"), s.buckets("score"))
        self.capturer = await asyncio.to_thread(
            Capturer,
            proxy_capture_settings(self.runtime.capture_settings()),
            tally=predictions.tally(),
            on_tally=predictions.apply,
        )
        await asyncio.to_thread(self.capturer.check)  # fail at start on an unwritable sink
        self.exposition = self.runtime.attach(self.capturer, self.registry)
        metrics = ProxyMetrics(self.registry, s.capture.model)
        self.pool = UpstreamPool(
            s.upstream_url,
            max_connections=s.upstream_max_connections,
            connect_timeout_s=s.upstream_connect_timeout_s,
            timeout_s=s.upstream_timeout_s,
            # A transparent proxy passes whatever header sizes the model sends.
            max_header_bytes=MAX_HEADER_BYTES,
        )
        self.forwarder = Forwarder(
            self.pool,
            self.capturer,
            metrics,
            timeout_s=s.upstream_timeout_s,
            stream_capture=s.stream_capture,
        )
        native = compiled_modules()
        log.info(
            "proxying to %s, capturing to %s (%s)",
            s.upstream_url,
            self.capturer.sink.describe(),
            f"{len(native)} modules compiled" if native else "interpreted",
        )

    async def shutdown(self) -> None:
        self.forwarder = None
        if self.pool is not None:
            await self.pool.aclose()
        if self.runtime is not None:
            await asyncio.to_thread(self.runtime.stop_background)
        if self.capturer is not None:
            await asyncio.to_thread(self.capturer.close, self.settings.shutdown_timeout_s)
            _log_final_counts(self.capturer.stats.snapshot())
        if self.runtime is not None:
            await asyncio.to_thread(self.runtime.close)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except (CaptureError, OSError) as exc:
                    log.error("cannot start: %s", exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def proxy_capture_settings(cap: CaptureSettings) -> CaptureSettings:
    """``MODELTAP_ENCODER=auto`` in the proxy: records are built in a helper
    process (``capture.offload``), so the event loop keeps the interpreter,
    except with full-traffic profiles, which are built on threads here."""
    if cap.encoder != "auto":
        return cap
    return dataclasses.replace(cap, encoder="thread" if cap.profile_all else "process")


def _log_final_counts(snap: dict[str, Any]) -> None:
    """One line at exit with what this process captured, so a restart's
    accounting survives in the log (the counters start again at zero)."""
    dropped = ",".join(f"{k}={v}" for k, v in sorted(snap.get("dropped", {}).items()) if v)
    log.info(
        "capture closed: offered=%d kept=%d sampled_out=%d written=%d spooled=%d "
        "replayed=%d spool_pending=%d dropped={%s}",
        snap.get("offered", 0),
        snap.get("kept", 0),
        snap.get("sampled_out", 0),
        snap.get("records_written", 0),
        snap.get("spooled_records", 0),
        snap.get("replayed_records", 0),
        snap.get("spool_records", 0),
        dropped,
    )


def create_app(settings: ProxySettings, *, registry: CollectorRegistry | None = None) -> ProxyApp:
    """The proxy app for ``settings`` (serve it with uvicorn, lifespan on)."""
    return ProxyApp(settings, registry=registry)


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


#: OpenAPI documentation of the admin routes' answers (served at
#: ``/_modeltap/openapi.json``; the fuzz test checks responses against it).
_ERROR_DOC: dict[str, Any] = {
    "description": "refused or failed: a JSON object saying why",
    "content": {"application/json": {"schema": {"type": "object"}}},
}
_WRITE_DOCS: dict[int | str, dict[str, Any]] = {
    401: _ERROR_DOC,  # bad or missing bearer token
    403: _ERROR_DOC,  # admin writes disabled: no MODELTAP_ADMIN_TOKEN
    503: _ERROR_DOC,  # not started, or (ground truth) the buffer was full: resend
    504: _ERROR_DOC,  # flush: not done within the shutdown timeout
}
_LABEL: dict[str, Any] = {
    "type": "object",
    "required": ["event_id", "label"],
    "properties": {
        "event_id": {"type": "string"},
        "label": {"type": ["boolean", "number", "string"]},
        "item_id": {"type": "string"},
        "time": {"type": ["string", "number"]},
        "model": {"type": "string"},
    },
}
_LABELS_DOC: dict[str, Any] = {
    "required": True,
    "description": 'A label, an array of labels, {"labels": [...]}, or JSONL of labels; '
    "each entry is validated on its own (see capture.labels).",
    "content": {
        "application/json": {
            "schema": {
                "anyOf": [
                    _LABEL,
                    {"type": "array", "items": _LABEL},
                    {
                        "type": "object",
                        "required": ["labels"],
                        "properties": {"labels": {"type": "array", "items": _LABEL}},
                    },
                ]
            }
        },
        "application/x-ndjson": {"schema": {"type": "string"}},
    },
}


def _admin_app(proxy: ProxyApp) -> FastAPI:
    app = FastAPI(
        title="modeltap admin",
        docs_url=None,
        redoc_url=None,
        openapi_url=ADMIN_PREFIX + "openapi.json",
    )

    @app.get(ADMIN_PREFIX + "healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get(ADMIN_PREFIX + "readyz", responses={503: _ERROR_DOC})
    async def readyz(strict: bool = False) -> JSONResponse:
        """Ready for traffic: the upstream answers (any HTTP status).

        The capture's own checks (sink writable; spool, when configured,
        writable and not full) are reported beside it, with ``"capture":
        "ok"`` or ``"degraded"``, but do not make the proxy unready: a load
        balancer that pulled every replica during an S3 outage would turn a
        capture outage into a model outage, while the spool or the buffer
        absorbs it (and drops are counted). ``?strict=true`` counts them too,
        for a check that must know capture works. The upstream gets
        ``UPSTREAM_CHECK_TIMEOUT_S`` and each capture check
        ``CHECK_TIMEOUT_S``, so neither a hung model nor a hung sink can
        stall the probe past ``READYZ_MAX_S``.
        """
        checks: dict[str, Any] = {}
        pool, capturer = proxy.pool, proxy.capturer
        if pool is None or capturer is None:
            return JSONResponse({"ready": False, "checks": {"startup": "not done"}}, 503)
        try:
            async with await pool.request(
                "GET", b"/", [], timeout_s=UPSTREAM_CHECK_TIMEOUT_S
            ) as resp:
                checks["upstream"] = f"HTTP {resp.status}"
        except UpstreamError as exc:
            checks["upstream"] = f"unreachable: {type(exc).__name__}"
        checks["sink"] = await _capture_check(capturer.check, "writable")
        if capturer.spool is not None:
            pending = capturer.spool.pending_records()
            checks["spool"] = await _capture_check(
                capturer.spool.check, f"writable, {pending} records waiting"
            )
        capture_ok = all(v.startswith("writable") for k, v in checks.items() if k != "upstream")
        ready = checks["upstream"].startswith("HTTP") and (capture_ok or not strict)
        body = {"ready": ready, "capture": "ok" if capture_ok else "degraded", "checks": checks}
        return JSONResponse(body, 200 if ready else 503)

    @app.get(
        ADMIN_PREFIX + "metrics",
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {}}}},
    )
    async def metrics() -> Response:
        """Prometheus text exposition (summed over workers when there are several)."""
        runtime = proxy.runtime
        if runtime is None or runtime.metrics_dir is None:
            return Response(generate_latest(proxy.exposition), media_type=CONTENT_TYPE_LATEST)

        def collect() -> bytes:  # reads every worker's files: off the event loop
            runtime.before_scrape()
            return generate_latest(proxy.exposition)

        return Response(await asyncio.to_thread(collect), media_type=CONTENT_TYPE_LATEST)

    @app.post(ADMIN_PREFIX + "flush", responses=_WRITE_DOCS)
    async def flush(request: Request) -> JSONResponse:
        """Flush the capture buffer now (bearer token ``MODELTAP_ADMIN_TOKEN``)."""
        capturer, refused = _admin_write(proxy, request)
        if refused is not None:
            return refused
        done = await asyncio.to_thread(capturer.flush, proxy.settings.shutdown_timeout_s)
        return JSONResponse({"flushed": done}, 200 if done else 504)

    @app.post(
        ADMIN_PREFIX + "ground-truth",
        responses={**_WRITE_DOCS, 400: _ERROR_DOC, 413: _ERROR_DOC},
        openapi_extra={"requestBody": _LABELS_DOC},
    )
    async def ground_truth(request: Request, model: str | None = None) -> JSONResponse:
        """Post ground-truth labels (bearer token ``MODELTAP_ADMIN_TOKEN``).

        Body: JSON (an object, an array or ``{"labels": [...]}``) or JSONL of
        ``{"event_id", "label", ["item_id"], ["time"], ["model"]}``, or
        SageMaker ground-truth lines; ``?model=`` names the model for entries
        without one (default ``MODELTAP_MODEL``). 200 with the counts when
        any label was accepted, 400 when none was, 413 over
        ``MAX_LABEL_BODY_BYTES``, 503 when the capture buffer could not take
        them all (resend the batch: a repeated label replaces the first).
        """
        capturer, refused = _admin_write(proxy, request)
        if refused is not None:
            return refused
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_LABEL_BODY_BYTES:
                return JSONResponse(
                    {"error": f"body over {MAX_LABEL_BODY_BYTES} bytes: split the batch"}, 413
                )
            chunks.append(chunk)
        body = b"".join(chunks)
        batch = await asyncio.to_thread(capturer.ingest_labels, body, model=model)
        summary = batch.summary()
        if batch.dropped:
            return JSONResponse(summary, 503, headers={"Retry-After": "1"})
        return JSONResponse(summary, 200 if batch.records else 400)

    return app


async def _capture_check(check: Any, ok: str) -> str:
    """``ok``, or ``"not writable: why"`` when ``check`` raised or overran."""
    try:
        await asyncio.wait_for(asyncio.to_thread(check), CHECK_TIMEOUT_S)
    except CaptureError as exc:
        return f"not writable: {exc}"
    except asyncio.TimeoutError:
        return f"not writable: no answer within {CHECK_TIMEOUT_S} s"
    return ok


def _admin_write(proxy: ProxyApp, request: Request) -> tuple[Any, JSONResponse | None]:
    """The capturer for an admin write, or the response refusing it (token, not started)."""
    denied = _authorize(proxy.settings.admin_token, request.headers.get("authorization"))
    if denied is not None:
        return None, denied
    if proxy.capturer is None:
        return None, JSONResponse({"error": "not started"}, 503)
    return proxy.capturer, None


def _authorize(token: str | None, header: str | None) -> JSONResponse | None:
    """None when allowed; admin writes are refused when no token is configured."""
    if not token:
        return JSONResponse({"error": "admin writes are disabled: set MODELTAP_ADMIN_TOKEN"}, 403)
    given = (header or "").removeprefix("Bearer ").strip()
    if not hmac.compare_digest(given.encode(), token.encode()):
        return JSONResponse(
            {"error": "bad or missing bearer token"}, 401, headers={"WWW-Authenticate": "Bearer"}
        )
    return None
