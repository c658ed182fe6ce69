"""``modeltap-proxy`` / ``python -m server``: run the proxy with uvicorn.

    MODELTAP_UPSTREAM_URL=http://127.0.0.1:9000 modeltap-proxy --port 8080

Settings come from ``MODELTAP_*`` variables and the same-named flags
(``--help`` lists them). SIGTERM: uvicorn stops accepting, finishes in-flight
requests, then the lifespan flushes (or spools) the capture within
``MODELTAP_SHUTDOWN_TIMEOUT_S`` and the process exits 0.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys

from capture.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from server.app import create_app
    from server.settings import parse_args

    # The capture encodes on a background thread; with the default 5 ms switch
    # interval it can hold the GIL that long while a request waits.
    sys.setswitchinterval(float(os.environ.get("MODELTAP_GIL_SWITCH_S", "0.0005")))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = parse_args(argv)
    except ConfigError as exc:
        print(f"modeltap-proxy: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
    )
    server = uvicorn.Server(config)
    # Records are built in bursts of thousands of small objects; with the
    # default thresholds that triggers frequent full collections, which stop
    # the event loop too. Move what exists now out of the GC's way and collect
    # the young generation less often.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    # uvicorn re-raises the SIGTERM/SIGINT it caught once its graceful shutdown
    # is over, into the handler that was there before it: make that a no-op, so
    # a drained, flushed proxy exits 0 rather than dying of the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
