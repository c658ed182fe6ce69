"""Disk spool: a write-ahead log of batches the sink could not take.

Modelled on Vector's disk buffer: each entry carries a length prefix, a
checksum and a sequence id, and a segment file is deleted only after the sink
acknowledged every entry in it. There is no ack file: an entry's key is its
batch's original key and a sink overwrites a key, so replaying an entry twice
(after a crash mid-segment) is harmless.

On disk, in ``directory`` (created 0700, held with an exclusive ``flock`` on
``.lock`` so two processes never share it): ``segment-{id:016d}.wal`` files,
each a run of entries (little-endian)::

    b"MTS1" | u32 payload length | u32 crc32(payload) | u64 seq | u32 records
    payload = u16 key length | key (utf-8) | data

One segment is active for appends; it rotates before an entry would take it
past ``segment_bytes`` (a larger entry gets a segment of its own). A new
process never appends to an old segment (its tail may be torn): it replays the
old ones and writes to a new id above all of them.

Invariants: with ``fsync=True`` (the default) ``write`` returns only once the
entry is on disk, so a SIGKILL loses nothing ``write`` returned for (a power
loss neither: new segments also fsync their directory). A torn tail entry
(killed mid-write), a checksum mismatch, a bad magic or an unsafe key is
skipped and counted as ``spool_corrupt`` (the entry's record count when its
header is readable, else 1); the reader resynchronises on the next magic.
Corruption never raises; an unreadable segment is logged and left in place.
A replay holds one segment in memory.

Thread-safety: ``write``, ``replay`` and the gauges may be called from any
thread. One lock guards the bookkeeping and appends; it is never held during
a sink upload, so writes go on while a replay waits on the sink. Replays are
serialised by a second lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from capture.errors import CaptureError, ConfigError, SpoolError
from capture.keys import safe_key
from capture.stats import CaptureStats
from capture.types import Sink

log = logging.getLogger(__name__)

MAGIC = b"MTS1"
HEADER = struct.Struct("<4sIIQI")  # magic, payload length, crc32(payload), seq, records
_KEYLEN = struct.Struct("<H")
_NAME = re.compile(r"^segment-(\d{16})\.wal$")


class SpoolFullError(SpoolError):
    """The spool is at ``max_bytes``; the batch was not written."""


@dataclass(frozen=True)
class ReplayResult:
    """Batches/records delivered, records dropped as corrupt, bytes left, the sink error."""

    batches: int
    records: int
    corrupt: int
    remaining_bytes: int
    error: str | None = None


@dataclass(frozen=True)
class _Item:
    """One step of a segment scan: an entry (``key`` set) or a corrupt stretch."""

    end: int  # where the next step starts
    records: int
    seq: int = 0
    framed: bool = False  # header and length were sound (counted in pending_records)
    key: str | None = None
    data: bytes = b""


def _scan(blob: bytes, pos: int = 0, *, verify: bool = True) -> Iterator[_Item]:
    """Walk a segment from ``pos``; ``verify=False`` reads headers only (no crc)."""
    size = len(blob)
    while pos < size:
        item = _Item(-1, 1)  # a bad magic or a torn header: resynchronise
        if blob[pos : pos + 4] == MAGIC and pos + HEADER.size <= size:
            _, length, crc, seq, records = HEADER.unpack_from(blob, pos)
            end = pos + HEADER.size + length
            if end > size:  # torn tail (or a bad length)
                item = _Item(-1, records, seq)
            elif not verify:
                item = _Item(end, records, seq, framed=True)
            else:
                item = _decode(blob[pos + HEADER.size : end], crc, seq, records, end)
                if item.key is None and not MAGIC.startswith(blob[end : end + 4]):
                    item = _Item(-1, records, seq, framed=True)  # the length is suspect too
        if item.end < 0:
            nxt = blob.find(MAGIC, pos + 1)
            item = replace(item, end=size if nxt < 0 else nxt)
        yield item
        pos = item.end


def _decode(payload: bytes, crc: int, seq: int, records: int, end: int) -> _Item:
    bad = _Item(end, records, seq, framed=True)
    if zlib.crc32(payload) != crc or len(payload) < _KEYLEN.size:
        return bad
    (klen,) = _KEYLEN.unpack_from(payload)
    if _KEYLEN.size + klen > len(payload):
        return bad
    try:
        key = safe_key(payload[_KEYLEN.size : _KEYLEN.size + klen].decode("utf-8"))
    except (UnicodeDecodeError, CaptureError):
        return bad
    return _Item(end, records, seq, True, key, payload[_KEYLEN.size + klen :])


def _write_all(fd: int, *chunks: bytes) -> None:
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


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
        if max_bytes <= 0 or segment_bytes <= 0:
            raise ConfigError(f"spool sizes must be > 0: {max_bytes=} {segment_bytes=}")
        self.directory = Path(directory)
        self.max_bytes, self.segment_bytes, self.fsync = max_bytes, segment_bytes, fsync
        self.stats = stats if stats is not None else CaptureStats()
        self._lock = threading.Lock()  # bookkeeping + appends
        self._replay_lock = threading.Lock()
        self._fd: int | None = None  # the active segment, opened on its first write
        self._closed = False
        self._sizes: dict[int, int] = {}  # segment id -> bytes on disk
        self._pending: dict[int, int] = {}  # segment id -> records not yet replayed
        self._offsets: dict[int, int] = {}  # segment id -> offset of first unacknowledged entry
        self._unreadable: set[int] = set()
        self._total = self._seq = 0
        self._refused = 0  # size of the last entry refused for space (0: none since a write)
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lockfd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SpoolError(f"cannot create spool directory {self.directory}: {exc}") from exc
        try:
            try:
                fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise OSError(f"in use by another DiskSpool ({exc})") from exc
            probe = self.directory / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
            ids = sorted(int(m[1]) for p in self.directory.iterdir() if (m := _NAME.match(p.name)))
        except OSError as exc:
            os.close(self._lockfd)
            raise SpoolError(f"spool directory {self.directory} unusable: {exc}") from exc
        for seg in ids:
            self._load(seg)
        self._active = (ids[-1] if ids else 0) + 1
        self.stats.gauge("spool_bytes", self.size_bytes)
        self.stats.gauge("spool_records", self.pending_records)

    def _path(self, seg: int) -> Path:
        return self.directory / f"segment-{seg:016d}.wal"

    def _read(self, seg: int) -> bytes | None:
        try:
            return self._path(seg).read_bytes()
        except OSError as exc:
            if seg not in self._unreadable:  # log once per segment, not every replay
                self._unreadable.add(seg)
                log.error("spool segment %s unreadable, skipped: %s", self._path(seg), exc)
            return None

    def _load(self, seg: int) -> None:
        """Account for a segment left by a previous process (headers only, no crc)."""
        blob = self._read(seg)
        size, pending = 0, 0
        if blob is None:
            with contextlib.suppress(OSError):
                size = self._path(seg).stat().st_size
        else:
            items = [i for i in _scan(blob, verify=False) if i.framed]
            size, pending = len(blob), sum(i.records for i in items)
            self._seq = max([self._seq, *(i.seq for i in items)])
        self._sizes[seg], self._pending[seg], self._offsets[seg] = size, pending, 0
        self._total += size

    def size_bytes(self) -> int:
        """Bytes the spool's segments take on disk."""
        return self._total

    def pending_records(self) -> int:
        """Records in entries not yet replayed."""
        with self._lock:
            return sum(self._pending.values())

    def is_empty(self) -> bool:
        return self._total == 0

    # -- writing --------------------------------------------------------------

    def write(self, key: str, data: bytes, records: int) -> None:
        """Append one batch (durable on return when ``fsync``); all or nothing.

        Raises ``SpoolFullError`` at ``max_bytes`` and ``SpoolError`` on a disk
        error, a closed spool or an unstorable key/record count.
        """
        try:
            raw = safe_key(key).encode("utf-8")
        except CaptureError as exc:
            raise SpoolError(f"cannot spool key {key!r}: {exc}") from exc
        if len(raw) > 0xFFFF or not 0 <= records <= 0xFFFFFFFF or len(data) > 0xFFF00000:
            raise SpoolError(f"cannot spool {key!r}: key, record count or data too large")
        prefix = _KEYLEN.pack(len(raw)) + raw  # payload = prefix + data, never copied
        length = len(prefix) + len(data)
        crc, size = zlib.crc32(data, zlib.crc32(prefix)), HEADER.size + length
        with self._lock:
            if self._closed:
                raise SpoolError(f"spool {self.directory} is closed")
            if self._total + size > self.max_bytes:
                self._refused = size
                raise SpoolFullError(f"spool {self.directory} full ({self.max_bytes} bytes)")
            current = self._sizes.get(self._active, 0)
            if current and current + size > self.segment_bytes:
                self._rotate()
                current = 0
            head = HEADER.pack(MAGIC, length, crc, self._seq + 1, records)
            try:
                fd = self._fd if self._fd is not None else self._create()
                _write_all(fd, head + prefix, data)
                if self.fsync:
                    os.fsync(fd)
            except OSError as exc:
                self._undo(current)
                raise SpoolError(f"cannot write to spool {self.directory}: {exc}") from exc
            self._seq += 1
            self._refused = 0
            self._sizes[self._active] = current + size
            self._pending[self._active] += records
            self._total += size
        self.stats.add("spooled_records", records)
        self.stats.add("spooled_batches")

    def check(self) -> None:
        """Raise unless the spool could take a batch now (for readiness probes).

        ``SpoolFullError`` while the last batch refused for space would still
        not fit; ``SpoolError`` when the directory does not take a one-byte
        file (gone, read-only, out of space or inodes).
        """
        with self._lock:
            if self._refused and self._total + self._refused > self.max_bytes:
                raise SpoolFullError(
                    f"spool {self.directory} full ({self._total} of {self.max_bytes} bytes)"
                )
        probe = self.directory / f".probe-{os.getpid()}-{threading.get_ident()}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_all(fd, b"x")
            finally:
                os.close(fd)
            probe.unlink()
        except OSError as exc:
            # strerror, not the exception: its text names the probe, a new name per thread
            raise SpoolError(f"spool {self.directory} not writable: {exc.strerror or exc}") from exc

    def _create(self) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self._path(self._active), flags, 0o600)
        self._fd = fd
        self._sizes[self._active] = self._pending[self._active] = self._offsets[self._active] = 0
        if self.fsync:  # make the new file's name durable too
            dirfd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dirfd)
            finally:
                os.close(dirfd)
        return fd

    def _undo(self, size: int) -> None:
        """After a failed append: cut the torn bytes, or give the segment up."""
        if self._fd is None:  # the segment could not be created: try a new id next time
            self._active += 1
            return
        try:
            os.ftruncate(self._fd, size)
        except OSError:  # a torn entry stays: readers skip it; never append after it
            with contextlib.suppress(OSError):
                real = os.fstat(self._fd).st_size
                self._total += real - self._sizes[self._active]
                self._sizes[self._active] = real
            self._rotate()

    def _rotate(self) -> None:
        """Close the active segment; the next write starts a new one (lock held)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        self._active += 1

    # -- replaying ------------------------------------------------------------

    def replay(self, sink: Sink, *, limit: int | None = None) -> ReplayResult:
        """Upload spooled batches (at most ``limit``), oldest first, via ``sink.put``.

        Stops at the first sink failure and keeps what is left for next time.
        Older segments go first; then, if all went well, the active segment is
        closed and replayed too (once per call, so busy writers cannot starve it).
        """
        done = {"batches": 0, "records": 0, "corrupt": 0}
        error: str | None = None
        with self._replay_lock:
            tried: set[int] = set()
            for _ in range(2):  # older segments, then the active one (or writers' new ones)
                with self._lock:
                    if self._closed:
                        return ReplayResult(0, 0, 0, self._total, "spool is closed")
                    todo = sorted(s for s in self._sizes if s < self._active and s not in tried)
                    if not todo and self._sizes.get(self._active):
                        self._rotate()
                        todo = [self._active - 1]
                tried.update(todo)
                for seg in todo:
                    error = self._replay_segment(seg, sink, limit, done)
                    if error is not None or done["batches"] == limit:
                        break
                if error is not None or done["batches"] == limit or not todo:
                    break
        return ReplayResult(done["batches"], done["records"], done["corrupt"], self._total, error)

    def _replay_segment(
        self, seg: int, sink: Sink, limit: int | None, done: dict[str, int]
    ) -> str | None:
        blob = self._read(seg)
        if blob is None:
            return None
        for item in _scan(blob, self._offsets.get(seg, 0)):
            if item.key is None:
                log.warning("spool segment %s: corrupt entry skipped", self._path(seg))
                done["corrupt"] += item.records
                self.stats.drop("spool_corrupt", item.records)
            else:
                if limit is not None and done["batches"] >= limit:
                    return None
                try:
                    sink.put(item.key, item.data)
                except Exception as exc:  # SinkError, or a sink that does not translate
                    log.info("spool replay stopped at %s: %s", item.key, exc)
                    return str(exc) or type(exc).__name__
                done["batches"] += 1
                done["records"] += item.records
                self.stats.add("replayed_records", item.records)
                self.stats.add("replayed_batches")
            with self._lock:
                self._offsets[seg] = item.end
                if item.framed:
                    self._pending[seg] = max(0, self._pending[seg] - item.records)
        try:
            os.remove(self._path(seg))
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.error("cannot remove replayed spool segment %s: %s", self._path(seg), exc)
            return None
        with self._lock:
            self._total -= self._sizes.pop(seg, 0)
            self._pending.pop(seg, None)
            self._offsets.pop(seg, None)
        return None

    def close(self) -> None:
        """Close the active segment and release the directory lock (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._rotate()
            os.close(self._lockfd)

    def __enter__(self) -> DiskSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
