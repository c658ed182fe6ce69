"""Where the monitor reads capture objects: a local directory or an S3 prefix.

A ``Location`` answers two questions, the way S3's ListObjectsV2 with
``Delimiter="/"`` does: what is directly under this relative directory
(``children``), and give me this object as a byte stream (``open``). The
partition walk in ``monitor_job.readers`` lists one level at a time through
it, so pruning by ``dt=``/``hour=`` happens before anything deeper is listed.

Invariants:

- Every failure is an ``InputError`` whose message names the location or
  object and the problem; library errors (``OSError``, botocore) are
  translated at this edge with ``raise ... from exc``. Credentials never
  appear in messages.
- Object streams are read incrementally (an S3 body is never read whole).
- S3: the endpoint comes from ``MODELTAP_S3_ENDPOINT_URL`` (path-style
  addressing then, as the capture's S3 sink does), credentials from boto3's
  chain. One client per endpoint and process, created on first use: a Dask
  worker reading a thousand objects pays for one client, not a thousand.
"""

from __future__ import annotations

import functools
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

from capture.errors import ConfigError
from capture.sinks import local_path

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

log = logging.getLogger(__name__)

ENDPOINT_ENV = "MODELTAP_S3_ENDPOINT_URL"


class InputError(Exception):
    """An input the monitor cannot read; the message names it and the problem."""


@dataclass(frozen=True)
class ObjectRef:
    """One capture object: ``key`` relative to ``location``; kind "records" or "profile"."""

    location: str
    key: str
    size: int
    kind: str
    mtime: float = 0.0  # when it was last written (epoch s), from the listing

    @property
    def name(self) -> str:
        return f"{self.location.rstrip('/')}/{self.key}"


@dataclass(frozen=True)
class Entry:
    """A file directly under a listed directory."""

    name: str
    size: int
    mtime: float  # epoch seconds: file mtime, or the S3 object's LastModified


class Location(Protocol):
    """A root that can be listed one level at a time and read object by object."""

    url: str  # normalised: an absolute directory path, or s3://bucket[/prefix]

    def children(self, rel: str) -> tuple[list[str], list[Entry]]:
        """(sub-directory names, files) directly under ``rel`` ('' = the root)."""

    def open(self, key: str) -> IO[bytes]:
        """The object ``key`` (relative to the root) as a readable byte stream."""


def join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


class LocalLocation:
    """A directory tree on disk. Hidden entries (the sink's ``.tmp`` files) are skipped."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)

    def children(self, rel: str) -> tuple[list[str], list[Entry]]:
        where = self.root / rel if rel else self.root
        log.debug("listing %s", where)
        dirs: list[str] = []
        files: list[Entry] = []
        try:
            with os.scandir(where) as it:
                for entry in it:
                    if entry.name.startswith("."):
                        continue
                    if entry.is_dir():
                        dirs.append(entry.name)
                    elif entry.is_file():
                        st = entry.stat()
                        files.append(Entry(entry.name, st.st_size, st.st_mtime))
        except FileNotFoundError:
            raise InputError(f"{where}: no such directory") from None
        except NotADirectoryError:
            raise InputError(f"{where}: not a directory") from None
        except OSError as exc:
            raise InputError(f"{where}: cannot list: {exc.strerror or exc}") from exc
        return dirs, files

    def open(self, key: str) -> IO[bytes]:
        path = self.root / key
        try:
            return open(path, "rb")  # the caller owns and closes the stream
        except FileNotFoundError:
            raise InputError(f"{path}: no such file") from None
        except OSError as exc:
            raise InputError(f"{path}: cannot open: {exc.strerror or exc}") from exc


@functools.lru_cache(maxsize=8)
def s3_client(endpoint_url: str | None) -> S3Client:
    """The process's boto3 S3 client for ``endpoint_url`` (None = AWS).

    Quick retries only (3 tries, standard mode) and a short connect
    timeout, so an unreachable endpoint fails the run in seconds, not minutes.
    """
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"total_max_attempts": 3, "mode": "standard"},
        connect_timeout=5.0,
        read_timeout=60.0,
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    client: S3Client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, config=config
    )
    return client


os.register_at_fork(after_in_child=s3_client.cache_clear)


def s3_problem(exc: Exception) -> str:
    """A short, credential-free description of a boto error."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        code = str(error.get("Code") or status or "error")
        if code == "NoSuchBucket":
            return "no such bucket"
        if code in ("NoSuchKey", "404", "NotFound"):
            return "no such object"
        if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"access denied ({code})"
        message = str(error.get("Message") or "")[:200]
        return f"{code} (HTTP {status})" + (f": {message}" if message else "")
    return f"cannot reach S3: {type(exc).__name__}: {exc}"


class _S3Stream(io.RawIOBase):
    """An S3 object body as a raw stream; read errors become ``InputError``."""

    def __init__(self, body: Any, name: str) -> None:
        self._body = body
        self._name = name

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        from botocore.exceptions import BotoCoreError
        from urllib3.exceptions import HTTPError

        try:
            data = self._body.read(len(buffer))
        except (BotoCoreError, HTTPError, OSError) as exc:
            raise InputError(f"{self._name}: read failed: {type(exc).__name__}: {exc}") from exc
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3Location:
    """Objects under ``s3://bucket/prefix``; "directories" are ``/``-delimited prefixes."""

    def __init__(self, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = os.environ.get(ENDPOINT_ENV) or None
        self.client = s3_client(self.endpoint_url)

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}".rstrip("/")

    def children(self, rel: str) -> tuple[list[str], list[Entry]]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = join(self.prefix, rel)
        prefix = f"{full}/" if full else ""
        log.debug("listing %s", self._where(prefix))
        dirs: list[str] = []
        files: list[Entry] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/"
            )
            for page in pages:
                for common in page.get("CommonPrefixes", []):
                    name = common.get("Prefix", "")[len(prefix) :].strip("/")
                    if name and not name.startswith("."):
                        dirs.append(name)
                for obj in page.get("Contents", []):
                    name = obj.get("Key", "")[len(prefix) :]
                    if name and "/" not in name and not name.startswith("."):
                        modified = obj.get("LastModified")
                        mtime = modified.timestamp() if modified is not None else 0.0
                        files.append(Entry(name, int(obj.get("Size", 0)), mtime))
        except (ClientError, BotoCoreError) as exc:
            raise InputError(f"{self._where(prefix)}: {s3_problem(exc)}") from exc
        return dirs, files

    def open(self, key: str) -> IO[bytes]:
        from botocore.exceptions import BotoCoreError, ClientError

        full = join(self.prefix, key)
        where = self._where(full)
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=full)["Body"]
        except (ClientError, BotoCoreError) as exc:
            raise InputError(f"{where}: {s3_problem(exc)}") from exc
        return io.BufferedReader(_S3Stream(body, where), buffer_size=256 * 1024)


def open_location(location: str) -> Location:
    """The ``Location`` a string names: a path, ``file:///abs/dir`` or ``s3://bucket/prefix``.

    Nothing is read here; a missing directory or bucket is reported by the
    first listing, which names it.
    """
    if not location or not location.strip():
        raise InputError("capture location is empty")
    parsed = urlparse(location)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise InputError(f"{location}: no bucket in the S3 URL")
        return S3Location(parsed.netloc, parsed.path)
    try:
        path = local_path(location)
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    if path is None:
        raise InputError(f"{location}: unsupported scheme {parsed.scheme!r} (use a path or s3://)")
    return LocalLocation(Path(path).expanduser().absolute())


class LineSource(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


def iter_lines(stream: LineSource, limit: int) -> Iterator[tuple[bytes, bool]]:
    """Lines of ``stream`` as (bytes, complete); an over-long line is cut at
    ``limit`` bytes (``complete`` False) and the rest of it skipped, so memory
    stays bounded whatever the input."""
    readline = stream.readline
    while True:
        line = readline(limit)
        if not line:
            return
        if len(line) >= limit and not line.endswith(b"\n"):
            rest = line
            while rest and not rest.endswith(b"\n"):
                rest = readline(limit)
            yield line, False
        else:
            yield line, True
