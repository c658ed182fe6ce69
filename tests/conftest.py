"""Session-wide real servers: one SeaweedFS for S3 (stopped at the end)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from tests.faults import TcpProxy
from tests.seaweed import ACCESS_KEY, SECRET_KEY, SeaweedServer

_buckets = itertools.count()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    # The capture finds credentials the way production does: boto3's chain.
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION="us-east-1",
    )
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(seaweed: SeaweedServer) -> str:
    return seaweed.create_bucket(f"test-{os.getpid()}-{next(_buckets)}")


@pytest.fixture
def s3_proxy(seaweed: SeaweedServer) -> Iterator[TcpProxy]:
    """A cuttable TCP path to the session's S3 server (``.down()``/``.up()``)."""
    proxy = TcpProxy(seaweed.ports["s3"])
    try:
        yield proxy
    finally:
        proxy.close()
