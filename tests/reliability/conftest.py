"""Real processes for the reliability tests: the toy model as its own
process (so the proxy, the model and the load generator do not share a GIL),
and a factory for proxies (``python -m server``) that are stopped at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtest.harness import ServerProcess

ProxyFactory = Callable[..., ServerProcess]


@pytest.fixture(scope="module")
def toy_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("toy") / "model.log"
    with ServerProcess.toy_model(log) as model:
        yield model


@pytest.fixture
def start_proxy(tmp_path: Path) -> Iterator[ProxyFactory]:
    """``start_proxy(env, **kw)``: a started proxy process; all are stopped at the end."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str], **kw: Any) -> ServerProcess:
        log = tmp_path / f"proxy-{len(started)}.log"
        proxy = ServerProcess.proxy(env, log, **kw)
        started.append(proxy)
        return proxy.start()

    try:
        yield start
    finally:
        for proxy in started:
            if proxy.proc is not None and proxy.proc.poll() is None:
                proxy.kill()
