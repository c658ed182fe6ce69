"""Where the monitor reads its baseline and writes its outputs: a local
directory or an S3 prefix, named the way capture sinks are (a plain path,
``file:///abs/dir`` or ``s3://bucket/prefix``).

Writes go through the capture sinks (``capture.sinks.sink_from_url``), so an
output file appears whole or not at all (temp file + rename; one S3 PUT).
S3 uses ``MODELTAP_S3_ENDPOINT_URL`` when set and boto3's credential chain.
Every failure is an ``OutputError``/``InputError`` naming the location and
the problem.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from capture.errors import CaptureError
from capture.sinks import sink_from_url
from monitor_job.locations import ENDPOINT_ENV, s3_client, s3_problem


class StoreError(Exception):
    """A monitor input or output that cannot be read or written (names it)."""


def _s3_parts(location: str) -> tuple[str, str]:
    parts = urlsplit(location)
    return parts.netloc, parts.path.strip("/")


def local_path(location: str) -> Path | None:
    """The directory a local location names, or None for S3."""
    if location.startswith("s3://"):
        return None
    return Path(location.removeprefix("file://"))


def join(location: str, name: str) -> str:
    return f"{location.rstrip('/')}/{name}"


def write_file(location: str, name: str, data: bytes) -> str:
    """Write ``data`` as ``name`` under ``location``; returns where it went."""
    s3 = _s3_options() if location.startswith("s3://") else {}
    try:
        sink = sink_from_url(location, **s3)
        try:
            sink.put(name, data)
        finally:
            sink.close()
    except (CaptureError, OSError) as exc:
        raise StoreError(f"cannot write {join(location, name)}: {exc}") from exc
    return join(location, name)


def read_file(location: str, name: str) -> bytes:
    """The bytes of ``name`` under ``location``."""
    where = join(location, name)
    path = local_path(location)
    if path is not None:
        try:
            return (path / name).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{where}: no such file") from None
        except OSError as exc:
            raise StoreError(f"{where}: {exc.strerror or exc}") from exc
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = _s3_parts(location)
    key = f"{prefix}/{name}" if prefix else name
    try:
        body = s3_client(os.environ.get(ENDPOINT_ENV) or None).get_object(Bucket=bucket, Key=key)
        return bytes(body["Body"].read())
    except (ClientError, BotoCoreError) as exc:
        raise StoreError(f"{where}: {s3_problem(exc)}") from exc


def _s3_options() -> dict[str, object]:
    endpoint = os.environ.get(ENDPOINT_ENV)
    return {"endpoint_url": endpoint} if endpoint else {}
