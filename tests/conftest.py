"""Real servers for the tests: SeaweedFS for S3 (no mocks in this project).

- ``seaweed``: one server for the whole session (stopped at the end).
- ``s3_bucket``: a fresh, uniquely named bucket in it, per test.
- ``seaweed_own``: a test's own server, which it may ``stop()``/``start()``
  (a real S3 outage); always stopped at teardown.
- ``s3_proxy``: a cuttable TCP path to the session server (faster outages).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import TcpProxy
from tests.seaweed import ACCESS_KEY, REGION, SECRET_KEY, SeaweedServer

_buckets = itertools.count()
_ROOT = Path(__file__).resolve().parent.parent


def stale_sources(root: Path = _ROOT) -> list[str]:
    """Sources of ``capture`` and ``server`` newer than the mypyc build beside
    them (``setup.py``; empty when nothing is compiled). Python imports a
    module's ``.so`` in preference to its ``.py``, so after such an edit the
    tests would run the old code."""
    built = [p.stat().st_mtime for p in root.glob("*__mypyc.*")]  # mypyc's shared module
    if not built:
        return []
    oldest = min(built)
    return sorted(
        str(p.relative_to(root))
        for package in ("capture", "server")
        for p in (root / package).rglob("*.py")
        if p.stat().st_mtime > oldest
    )


def pytest_configure(config: pytest.Config) -> None:
    stale = stale_sources()
    if stale:
        raise pytest.UsageError(
            f"the compiled modules are older than {', '.join(stale[:5])}: ./dev test rebuilds "
            "them (or MODELTAP_PURE_PYTHON=1 ./dev test runs without them)"
        )


@pytest.fixture(scope="session")
def aws_test_env() -> Iterator[None]:
    """Point boto3's credential chain at the test servers' keys for the session.

    The capture finds credentials the way production does (``AWS_*``
    variables), and the servers check them, so these are set even when the
    environment has others; the previous values come back afterwards.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        mp.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        mp.setenv("AWS_DEFAULT_REGION", REGION)
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        mp.delenv("AWS_PROFILE", raising=False)
        yield


@pytest.fixture(scope="session")
def seaweed(
    tmp_path_factory: pytest.TempPathFactory, aws_test_env: None
) -> Iterator[SeaweedServer]:
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(seaweed: SeaweedServer) -> str:
    return seaweed.create_bucket(f"test-{os.getpid()}-{next(_buckets)}")


@pytest.fixture
def seaweed_own(
    tmp_path_factory: pytest.TempPathFactory, aws_test_env: None
) -> Iterator[SeaweedServer]:
    """A started server of the test's own, to stop and start at will."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed-own"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_proxy(seaweed: SeaweedServer) -> Iterator[TcpProxy]:
    """A cuttable TCP path to the session's S3 server (``.down()``/``.up()``)."""
    proxy = TcpProxy(seaweed.ports["s3"])
    try:
        yield proxy
    finally:
        proxy.close()
