"""The SeaweedFS launcher the tests use: ``loadtest.seaweed`` (one piece of code
for the tests, the benchmarks and ``./dev stack --s3``)."""

from loadtest.seaweed import (
    ACCESS_KEY,
    READY_BUCKET,
    REGION,
    SECRET_KEY,
    SeaweedServer,
    weed_binary,
)
from loadtest.sysinfo import free_ports

__all__ = [
    "ACCESS_KEY",
    "READY_BUCKET",
    "REGION",
    "SECRET_KEY",
    "SeaweedServer",
    "free_ports",
    "weed_binary",
]
