"""Object keys: Hive-partitioned, unique across hosts, processes and restarts.

    {prefix}/{model}/dt=YYYY-MM-DD/hour=HH/{host}-{pid}-{seq}.jsonl.gz

``seq`` is ``{process start, ms since epoch}_{batch counter, 6 digits}``: pid 1
in every container restart would otherwise reuse ``host-1-000001`` and
overwrite the previous run's objects in the same hour. A key is chosen once
per batch and kept through retries, the spool and replays, so a batch that is
uploaded twice overwrites itself rather than duplicating records.

Model names and prefix segments are checked here (``safe_segment``) so no
sink can be steered outside its root by ``../`` or absolute paths.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import threading
import time
from datetime import datetime, timezone

from capture.errors import UnsafeNameError

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,127}$")
_HOST_CLEAN = re.compile(r"[^A-Za-z0-9.]+")


def safe_segment(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a single safe path segment, else raise.

    Allowed: letters, digits, ``.``, ``_``, ``-``, ``=`` (Hive partitions),
    starting with a letter or digit, at most 128 characters, never ``..``.
    """
    if not isinstance(value, str) or not _SEGMENT.match(value) or ".." in value:
        raise UnsafeNameError(f"unsafe {what} {value!r}: use letters, digits, '.', '_', '-'")
    return value


def safe_prefix(prefix: str) -> str:
    """Normalise a ``/``-separated prefix, rejecting traversal; '' stays ''."""
    parts = [p for p in prefix.strip("/").split("/") if p]
    for part in parts:
        safe_segment(part, "prefix segment")
    return "/".join(parts)


def safe_key(key: str) -> str:
    """Check a full relative key (every segment safe, no leading ``/``)."""
    if not key or key.startswith("/") or "\\" in key:
        raise UnsafeNameError(f"unsafe key {key!r}")
    for part in key.split("/"):
        safe_segment(part, "key segment")
    return key


def _host() -> str:
    host = _HOST_CLEAN.sub("_", socket.gethostname()).strip("._") or "host"
    return host[:63]


class KeyNamer:
    """Makes batch keys; one per process (reset in a forked child).

    >>> namer = KeyNamer(prefix="captures", model="ranker")
    >>> namer.key(0.0).startswith("captures/ranker/dt=1970-01-01/hour=00/")
    True
    """

    def __init__(self, prefix: str, model: str, *, suffix: str = ".jsonl.gz") -> None:
        self.prefix = safe_prefix(prefix)
        self.model = safe_segment(model, "model name")
        self.suffix = suffix
        self._lock = threading.Lock()
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._host = _host()
        self._pid = os.getpid()
        self._start_ms = int(time.time() * 1000)
        self._counter = itertools.count(1)

    def key(self, when: float, *, model: str | None = None, kind: str | None = None) -> str:
        """Key for a batch whose first record happened at ``when`` (epoch s)."""
        model_seg = self.model if model is None else safe_segment(model, "model name")
        t = datetime.fromtimestamp(when, tz=timezone.utc)
        with self._lock:
            n = next(self._counter)
        name = f"{self._host}-{self._pid}-{self._start_ms}_{n:06d}{self.suffix}"
        parts = [self.prefix] if self.prefix else []
        if kind:
            parts.append(safe_segment(kind, "kind"))
        parts += [model_seg, f"dt={t:%Y-%m-%d}", f"hour={t:%H}", name]
        return "/".join(parts)
