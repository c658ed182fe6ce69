"""A real toy model and a real proxy, each uvicorn on a free loopback port."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from capture.settings import CaptureSettings
from loadtest.toy_model import app as toy_app
from server.app import ProxyApp, create_app
from server.settings import ProxySettings
from tests.servers import uvicorn_server


@pytest.fixture(scope="module")
def model_url() -> Iterator[str]:
    with uvicorn_server(toy_app) as url:
        yield url


@dataclass
class Proxy:
    url: str
    app: ProxyApp
    sink: Path


@contextlib.contextmanager
def run_proxy(upstream: str, sink: Path, **capture: object) -> Iterator[Proxy]:
    proxy_kw = {k: capture.pop(k) for k in list(capture) if k in ProxySettings.__dataclass_fields__}
    settings = ProxySettings(
        upstream_url=upstream,
        capture=CaptureSettings(sink=str(sink), model="toy", **capture),  # type: ignore[arg-type]
        **proxy_kw,  # type: ignore[arg-type]
    )
    app = create_app(settings, registry=CollectorRegistry())
    with uvicorn_server(app, lifespan="on") as url:
        yield Proxy(url, app, sink)


@pytest.fixture
def proxy(model_url: str, tmp_path: Path) -> Iterator[Proxy]:
    with run_proxy(model_url, tmp_path / "captures", admin_token="s3cret-token") as p:
        yield p
