"""Local directory sink: the embedded default, zero setup.

Writes go to a hidden temporary file in the target directory, then
``os.replace`` moves it into place, so a reader (or a crash) never sees a
half-written object. Keys are checked segment by segment and the resolved
path must stay inside the root: a model name or prefix cannot escape it.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from capture.errors import SinkError, UnsafeNameError
from capture.keys import safe_key

#: errno values that will not go away by retrying.
_PERMANENT = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR}


class LocalSink:
    """Stores batches as files under ``root``.

    >>> import tempfile; root = tempfile.mkdtemp()
    >>> LocalSink(root).put("m/dt=2026-01-01/hour=00/a.jsonl.gz", b"x")
    >>> (Path(root) / "m/dt=2026-01-01/hour=00/a.jsonl.gz").read_bytes()
    b'x'
    """

    def __init__(self, root: str | Path, *, fsync: bool = False) -> None:
        self.root = Path(root).expanduser().resolve()
        self.fsync = fsync

    def _path(self, key: str) -> Path:
        path = (self.root / safe_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise UnsafeNameError(f"key {key!r} escapes the sink directory")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(data)
                if self.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise SinkError(
                f"cannot write {key} under {self.root}: {exc.strerror or exc}",
                retryable=exc.errno not in _PERMANENT,
            ) from exc

    def check(self) -> None:
        probe = self.root / f".modeltap-probe-{os.getpid()}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise SinkError(f"{self.root} is not writable: {exc.strerror or exc}") from exc

    def describe(self) -> str:
        return f"file://{self.root}"

    def close(self) -> None:
        return None
