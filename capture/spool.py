"""Disk spool: a write-ahead log of batches the sink could not take.

Modelled on Vector's disk buffer: entries carry a length prefix, a checksum
and a sequence id, and a segment file is deleted only after the sink has
acknowledged every entry in it. Replaying an entry twice is harmless: its key
is the batch's original key, and a sink overwrites a key (no duplicates).

On disk, in ``directory`` (mode 0700): ``segment-{id:016d}.wal`` files, each a
run of entries::

    magic b"MTS1" | u32 payload length | u32 crc32(payload) | u64 seq | u32 records
    payload = u16 key length | key (utf-8) | data

(little-endian). One segment is active for appends; it rotates at
``segment_bytes`` (a larger entry gets a segment of its own). A new process
never appends to an old segment (its tail may be torn): it starts a new one
and replays the old ones.

Durability: with ``fsync=True`` (the default) ``write`` returns only after the
entry is on disk, so a SIGKILL (or power loss) loses nothing ``write``
returned for. A torn tail entry (killed mid-write) fails its length or
checksum and is skipped and counted as ``spool_corrupt``, as is any corrupt
entry: the reader resynchronises on the next magic. Corruption never raises.

Thread-safety: ``write`` and ``replay`` may run concurrently; the lock is
never held during a sink upload.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from capture.errors import SinkError, SpoolError
from capture.stats import CaptureStats
from capture.types import Sink

log = logging.getLogger(__name__)

MAGIC = b"MTS1"
_HEAD = struct.Struct("<4sIIQI")  # magic, payload length, crc32, seq, records
_KEYLEN = struct.Struct("<H")
_NAME = re.compile(r"^segment-(\d{16})\.wal$")


class SpoolFullError(SpoolError):
    """The spool is at its size cap; the batch was not written."""


@dataclass(frozen=True)
class ReplayResult:
    batches: int
    records: int
    corrupt: int
    remaining_bytes: int
    error: str | None


@dataclass(frozen=True)
class _Entry:
    seq: int
    records: int
    key: str
    data: bytes


def _scan(blob: bytes) -> Iterator[_Entry | int]:
    """Entries in a segment's bytes; an ``int`` is a corrupt stretch's record count."""
    pos, end = 0, len(blob)
    while pos < end:
        if blob[pos : pos + 4] != MAGIC or pos + _HEAD.size > end:
            nxt = blob.find(MAGIC, pos + 1)
            yield 1
            if nxt < 0:
                return
            pos = nxt
            continue
        _, length, crc, seq, records = _HEAD.unpack_from(blob, pos)
        body = pos + _HEAD.size
        payload = blob[body : body + length]
        entry = None
        if len(payload) == length and zlib.crc32(payload) == crc and length >= _KEYLEN.size:
            (klen,) = _KEYLEN.unpack_from(payload)
            try:
                key = payload[_KEYLEN.size : _KEYLEN.size + klen].decode("utf-8")
                entry = _Entry(seq, records, key, payload[_KEYLEN.size + klen :])
            except UnicodeDecodeError:
                entry = None
        if entry is None:
            yield max(records, 1) if len(payload) == length else 1
            nxt = blob.find(MAGIC, pos + 1)
            if nxt < 0:
                return
            pos = nxt
            continue
        yield entry
        pos = body + length


class DiskSpool:
    """A directory of WAL segments holding batches until the sink takes them.

    >>> import tempfile
    >>> spool = DiskSpool(tempfile.mkdtemp(), fsync=False)
    >>> spool.write("m/a.jsonl.gz", b"data", records=3)
    >>> spool.pending_records()
    3
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 64 << 20,
        fsync: bool = True,
        stats: CaptureStats | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.stats = stats or CaptureStats()
        self._lock = threading.Lock()
        self._replay_lock = threading.Lock()
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            probe = self.directory / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise SpoolError(f"spool directory {self.directory} is not writable: {exc}") from exc
        self._sizes: dict[int, int] = {}
        self._records: dict[int, int] = {}
        for seg in self._segments():
            self._load(seg)
        self._active = max(self._sizes, default=0) + 1
        self._corrupt_counted: set[int] = set()  # count a segment's corruption once
        self._seq = 0
        self.stats.gauge("spool_bytes", self.size_bytes)
        self.stats.gauge("spool_records", self.pending_records)

    # -- bookkeeping ------------------------------------------------------

    def _path(self, seg: int) -> Path:
        return self.directory / f"segment-{seg:016d}.wal"

    def _segments(self) -> list[int]:
        found = []
        for path in self.directory.iterdir():
            m = _NAME.match(path.name)
            if m:
                found.append(int(m.group(1)))
        return sorted(found)

    def _load(self, seg: int) -> None:
        try:
            blob = self._path(seg).read_bytes()
        except OSError as exc:
            log.error("spool segment %s unreadable: %s", self._path(seg), exc)
            return
        self._sizes[seg] = len(blob)
        self._records[seg] = sum(e.records for e in _scan(blob) if isinstance(e, _Entry))

    def size_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def pending_records(self) -> int:
        with self._lock:
            return sum(self._records.values())

    def is_empty(self) -> bool:
        with self._lock:
            return not any(self._sizes.values())

    # -- writing ------------------------------------------------------------

    def write(self, key: str, data: bytes, records: int) -> None:
        """Append one batch; durable on return when ``fsync`` is on."""
        raw_key = key.encode("utf-8")
        payload = _KEYLEN.pack(len(raw_key)) + raw_key + data
        with self._lock:
            self._seq += 1
            entry = _HEAD.pack(MAGIC, len(payload), zlib.crc32(payload), self._seq, records)
            size = len(entry) + len(payload)
            if sum(self._sizes.values()) + size > self.max_bytes:
                raise SpoolFullError(f"spool {self.directory} full ({self.max_bytes} bytes)")
            current = self._sizes.get(self._active, 0)
            if current and current + size > self.segment_bytes:
                self._active += 1
                current = 0
            path = self._path(self._active)
            try:
                with open(path, "ab") as fh:
                    fh.write(entry)
                    fh.write(payload)
                    fh.flush()
                    if self.fsync:
                        os.fsync(fh.fileno())
            except OSError as exc:
                self._truncate(path, current)
                raise SpoolError(f"cannot write to spool {path}: {exc}") from exc
            self._sizes[self._active] = current + size
            self._records[self._active] = self._records.get(self._active, 0) + records
        self.stats.add("spooled_records", records)
        self.stats.add("spooled_batches")

    def _truncate(self, path: Path, size: int) -> None:
        """Undo a partial append so the segment stays well-formed."""
        # If this fails too, the torn entry fails its checksum on replay.
        with contextlib.suppress(OSError), open(path, "r+b") as fh:
            fh.truncate(size)

    # -- replaying ----------------------------------------------------------

    def replay(self, sink: Sink, *, limit: int | None = None) -> ReplayResult:
        """Upload spooled batches oldest first; stop at the first sink failure."""
        batches = records = corrupt = 0
        error: str | None = None
        with self._replay_lock:
            with self._lock:
                if self._sizes.get(self._active):
                    self._active += 1  # close the active segment; new writes go to a new one
                segments = [s for s in sorted(self._sizes) if s < self._active]
            for seg in segments:
                if error is not None or (limit is not None and batches >= limit):
                    break
                try:
                    blob = self._path(seg).read_bytes()
                except OSError as exc:
                    log.error("spool segment %s unreadable: %s", self._path(seg), exc)
                    continue
                done = True
                for item in _scan(blob):
                    if isinstance(item, int):
                        if seg not in self._corrupt_counted:
                            corrupt += item
                            self.stats.drop("spool_corrupt", item)
                        continue
                    if limit is not None and batches >= limit:
                        done = False
                        break
                    try:
                        sink.put(item.key, item.data)
                    except SinkError as exc:
                        error, done = str(exc), False
                        break
                    except Exception as exc:  # a sink that does not translate its errors
                        error, done = f"{type(exc).__name__}: {exc}", False
                        break
                    batches += 1
                    records += item.records
                    self.stats.add("replayed_records", item.records)
                    self.stats.add("replayed_batches")
                self._corrupt_counted.add(seg)
                if done:
                    self._remove(seg)
        return ReplayResult(batches, records, corrupt, self.size_bytes(), error)

    def _remove(self, seg: int) -> None:
        try:
            self._path(seg).unlink(missing_ok=True)
        except OSError as exc:
            log.error("cannot remove replayed spool segment %s: %s", self._path(seg), exc)
            return
        with self._lock:
            self._sizes.pop(seg, None)
            self._records.pop(seg, None)

    def close(self) -> None:
        return None
