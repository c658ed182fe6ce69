"""Sinks: where encoded batches go. ``sink_from_url`` picks one from a URL.

- ``s3://bucket/prefix``: ``S3Sink`` (boto3; any S3-compatible endpoint).
- ``file:///abs/dir`` or a plain path: ``LocalSink``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlparse

from capture.errors import ConfigError
from capture.sinks.local import LocalSink
from capture.types import Sink

__all__ = ["LocalSink", "Sink", "local_path", "sink_from_url"]


def sink_from_url(url: str, **s3_options: Any) -> Sink:
    """Build the sink a URL names; ``s3_options`` go to ``S3Sink``.

    >>> sink_from_url("/tmp/captures").describe()
    'file:///tmp/captures'
    """
    if not url or not url.strip():
        raise ConfigError("sink URL is empty")
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        from capture.sinks.s3 import S3Sink  # boto3 is imported only when used

        if not parsed.netloc:
            raise ConfigError(f"sink URL {url!r} has no bucket")
        sink: Sink = S3Sink(parsed.netloc, parsed.path.strip("/"), **s3_options)
        return sink
    path = local_path(url)
    if path is None:
        raise ConfigError(f"unsupported sink URL scheme {parsed.scheme!r} in {url!r}")
    return LocalSink(path)


def local_path(url: str) -> str | None:
    """The local path a plain path or ``file:///abs/path`` URL names; None for
    another scheme (``s3://``...). ``ConfigError`` for a ``file://`` URL with a host.

    >>> local_path("file:///tmp/a%20b"), local_path("C:/data"), local_path("s3://b/p")
    ('/tmp/a b', 'C:/data', None)
    """
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"{url!r}: a file URL must be file:///absolute/path")
        return unquote(parsed.path)
    if parsed.scheme and len(parsed.scheme) > 1:  # a Windows drive letter is not a scheme
        return None
    return url
