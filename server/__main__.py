"""``modeltap-proxy`` / ``python -m server``: run the proxy with uvicorn.

    MODELTAP_UPSTREAM_URL=http://127.0.0.1:9000 modeltap-proxy --port 8080 [--workers 4]

Settings come from ``MODELTAP_*`` variables and the same-named flags
(``--help`` lists them). SIGTERM: uvicorn stops accepting, finishes in-flight
requests, then the lifespan flushes (or spools) the capture within
``MODELTAP_SHUTDOWN_TIMEOUT_S`` and the process exits 0. With
``MODELTAP_WORKERS`` > 1 the same happens in every worker process
(``server.workers``), and the parent exits 0 once they all did.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from capture.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    from server.settings import ProxySettings, cli_environ
    from server.workers import (
        LOG_FORMAT,
        UVICORN_OPTIONS,
        serve_workers,
        tune_gc,
        tune_interpreter,
    )

    tune_interpreter()
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    try:
        env = cli_environ(argv)
        settings = ProxySettings.from_env(env)
        if settings.workers > 1:
            return serve_workers(settings, env)
    except ConfigError as exc:
        print(f"modeltap-proxy: {exc}", file=sys.stderr)
        return 2
    if os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None):
        # One process has nothing to sum; per-process values are also faster.
        logging.getLogger(__name__).info("one worker: PROMETHEUS_MULTIPROC_DIR ignored")

    import uvicorn

    from server.app import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
        **UVICORN_OPTIONS,
    )
    server = uvicorn.Server(config)
    tune_gc()
    # uvicorn re-raises the SIGTERM/SIGINT it caught once its graceful shutdown
    # is over, into the handler that was there before it: make that a no-op, so
    # a drained, flushed proxy exits 0 rather than dying of the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    sys.exit(main())
