"""The capture library's errors, in one small hierarchy.

- ``CaptureError``: base of everything this library raises on purpose.
  - ``ConfigError``: a setting is invalid (raised at construction, never later).
  - ``KeyError_``-free naming: ``UnsafeNameError`` for a model name, prefix or key
    that could escape its directory or bucket prefix.
  - ``SinkError``: a sink could not take a batch. ``retryable`` says whether the
    same call may succeed later (network, throttling) or never will (bad bucket,
    access denied). Library errors (botocore, OSError) are translated into it at
    the sink's edge with ``raise ... from exc``.
  - ``SpoolError``: the disk spool could not write (disk full, unwritable dir).

Nothing here is ever raised into the request path: the buffer and the proxy
catch, count and log.
"""

from __future__ import annotations


class CaptureError(Exception):
    """Base class for errors raised by the capture library."""


class ConfigError(CaptureError, ValueError):
    """A setting is invalid; the message names the setting and the value."""


class UnsafeNameError(ConfigError):
    """A model name, prefix or key would escape its directory or prefix."""


class SinkError(CaptureError):
    """A sink failed to store a batch."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class SpoolError(CaptureError):
    """The disk spool could not store a batch (full, unwritable, corrupt)."""
