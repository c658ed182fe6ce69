"""Record building in a helper process (``MODELTAP_ENCODER=process``).

Why: turning an exchange into a record (header rules, time formatting, the
payload adapters, JSON, gzip) costs ~35-40 µs of CPU per ``predict``
exchange (60-100 µs before the per-name header cache and the other cuts of
``capture.record``) and ~350 µs per 100-item ranking one. On the capture's
flusher thread that work holds the GIL, and the proxy's event loop, which
needs ~150-200 µs of CPU a request itself, gets the interpreter only part of
the time: capture on ran at 0.57-0.67 of capture off, and each batch built
while a request waited showed in its p99. In a helper process the building runs on the other core
and the proxy's process keeps only the cheap parts: packing each batch's
exchanges with ``marshal`` (~0.5 µs an exchange, in chunks so the event loop
gets the GIL between them), handing the bytes over a pipe, and receiving
ready gzip objects.

What stays in the capturing process: sampling, the buffer and its memory
cap, flush triggers, uploads, the spool and every counter. So a helper that
dies or hangs costs nothing but time: the batch it held is built on the
flusher thread as before (``encoder_fallbacks``), and the next batch starts a
new helper (``encoder_restarts``). Nothing is lost.

Only items that ``marshal`` can carry go across: proxy exchanges and
already-built records such as ground-truth labels. A batch holding anything
else (decorated calls) is built in process. Observers that must see every
record (``RecordTally``, the proxy's prediction histograms) run in the
helper and send back a summary per batch, applied in the capturing process.

The helper is a fresh interpreter (``python -c`` ``serve_fds``, never a
fork of a process with threads, and unlike ``multiprocessing``'s spawn it
does not re-import the parent's main script, which may lack a ``__main__``
guard). It talks over two pipes, ignores SIGINT and SIGTERM, so a Ctrl-C or a
signal to the process group leaves the drain to the parent, and exits when
the parent closes the pipe or dies.
"""

from __future__ import annotations

import contextlib
import logging
import marshal
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Protocol

from capture.stats import CaptureStats
from capture.types import Exchange, Kept

if TYPE_CHECKING:
    from capture.settings import CaptureSettings

log = logging.getLogger(__name__)

#: Exchanges packed per ``marshal.dumps`` call: ~0.2 ms each, so the event
#: loop waits at most that long for the GIL while a batch is packed.
PACK_CHUNK = 400
#: The helper's niceness (see ``_yield_cpu``).
HELPER_NICE = 5
#: Longest wait for the helper's answer to one batch before it is replaced.
BATCH_TIMEOUT_S = 120.0

_EXCHANGE, _KEPT, _RECORD = 0, 1, 2

#: ``(kind, model)`` -> (gzip JSONL bytes, record count), as ``encode_items`` returns.
Groups = dict[tuple[str | None, str], tuple[bytes, int]]


class RecordTally(Protocol):
    """An observer of built records whose work can run in the helper.

    ``add`` sees each record where it is built (the helper, or the flusher
    thread); ``take`` returns a picklable summary of what it saw since the
    last call and starts afresh. The capturer hands each batch's summary to
    its ``on_tally`` callback in the capturing process.
    """

    def add(self, record: dict[str, Any]) -> None: ...

    def take(self) -> Any: ...


def _exchange(fields: tuple[Any, ...]) -> Exchange:
    """``Exchange(*fields)`` without the keyword handling of its ``__new__``
    (``fields`` came from ``tuple(exchange)``, so all of them are there)."""
    return tuple.__new__(Exchange, fields)


def pack_one(item: Any) -> bytes | None:
    """One queued item as ``marshal`` bytes, or None if it cannot cross.

    The capturer packs each kept exchange on the request path (~2 µs) when a
    helper builds the records: the buffer then holds flat ``bytes``, which the
    garbage collector does not track, instead of tuples, lists and strings
    that every collection would walk while thousands wait for their batch.
    """
    if type(item) is Exchange:
        row: Any = (_EXCHANGE, tuple(item))
    elif type(item) is Kept:
        row = (_KEPT, tuple(item.exchange), item.reason)
    elif type(item) is dict:
        row = (_RECORD, item)
    else:
        return None
    try:
        return marshal.dumps(row)
    except ValueError:  # a value marshal does not know (an exotic ``extra``)
        return None


def unpack_one(item: Any) -> Any:
    """The item ``pack_one`` packed (anything else is returned as it is)."""
    if type(item) is not bytes:
        return item
    row = marshal.loads(item)
    if row[0] == _EXCHANGE:
        return _exchange(row[1])
    if row[0] == _KEPT:
        return Kept(_exchange(row[1]), row[2])
    return row[1]


def pack(items: list[Any]) -> bytes | None:
    """A batch as one payload for the helper, or None if an item cannot cross.

    Packed in chunks of ``PACK_CHUNK`` items: each ``marshal.dumps`` holds the
    GIL for its whole call, and the event loop should not wait long for it.
    """
    rows: list[bytes] = []
    for item in items:
        packed = item if type(item) is bytes else pack_one(item)
        if packed is None:
            return None
        rows.append(packed)
    return marshal.dumps(
        [marshal.dumps(rows[i : i + PACK_CHUNK]) for i in range(0, len(rows), PACK_CHUNK)]
    )


def unpack(payload: bytes) -> Iterator[Any]:
    """The items of a ``pack`` payload, one chunk decoded at a time: the
    helper never holds a whole batch of exchanges as objects."""
    for part in marshal.loads(payload):
        for row in marshal.loads(part):
            yield unpack_one(row)


def merge_groups(a: Groups, b: Groups) -> Groups:
    """Two encodings of parts of one batch as one: a group in both becomes
    two gzip members in one object, which every gzip reader (``gzip``,
    ``zcat``, S3 Select, Athena) reads as one stream."""
    out = dict(a)
    for key, (data, count) in b.items():
        if key in out:
            first, n = out[key]
            out[key] = (first + data, n + count)
        else:
            out[key] = (data, count)
    return out


class EncoderProcess:
    """The parent's handle on one helper: ``encode(items)`` or None (build here).

    One batch at a time (the buffer has one flusher thread); a lock makes a
    second caller wait rather than interleave on the pipe.
    """

    def __init__(
        self,
        settings: CaptureSettings,
        *,
        tally: RecordTally | None,
        on_tally: Callable[[Any], None] | None,
        stats: CaptureStats,
        timeout_s: float = BATCH_TIMEOUT_S,
    ) -> None:
        self._init = pickle.dumps((settings, tally))
        self._on_tally = on_tally
        self.stats = stats
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._proc: Any = None
        self._conn: _Duplex | None = None
        self._started = 0
        self._closed = False

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        """Start the helper now rather than at the first batch."""
        with self._lock:
            try:
                self._ensure()
            except OSError as exc:  # the first batch tries again, then builds here
                log.error("capture encoder process did not start: %s", exc)
                self._stop_locked()

    def _ensure(self) -> _Duplex:
        if self._conn is not None and self._proc is not None and self._proc.poll() is None:
            return self._conn
        self._stop_locked()
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # as the parent imports
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _HELPER, str(to_child_r), str(from_child_w)],
                pass_fds=(to_child_r, from_child_w),
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._proc = proc
        self._conn = conn = _Duplex(Connection(from_child_r), Connection(to_child_w))
        conn.send_bytes(self._init)
        self._started += 1
        if self._started > 1:
            self.stats.add("encoder_restarts")
            log.warning("capture encoder process replaced (pid %d)", proc.pid)
        return conn

    def encode(self, items: list[Any]) -> Groups | None:
        """Build and encode ``items`` in the helper; None when that failed
        (the caller builds them itself) or they cannot cross."""
        payload = pack(items)
        if payload is None:
            return None
        with self._lock:
            if self._closed:
                return None
            try:
                conn = self._ensure()
                deadline = time.monotonic() + self.timeout_s
                _send_within(conn, payload, self.timeout_s)
                if not conn.poll(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"no answer in {self.timeout_s:g} s")
                answer = conn.recv_bytes()
            except (OSError, EOFError, TimeoutError) as exc:
                log.error("capture encoder process failed (%s); building here", exc)
                self.stats.add("encoder_fallbacks")
                self._stop_locked()
                return None
        groups, failed, counters, summary = pickle.loads(answer)
        for name, n in counters.items():
            if n:
                self.stats.add(name, n)
        if failed:
            self.stats.drop("encode_error", failed)
        if summary is not None and self._on_tally is not None:
            try:
                self._on_tally(summary)
            except Exception:  # an observer must not cost the batch
                log.exception("on_tally hook failed")
        return groups  # type: ignore[no-any-return]

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()  # the helper sees EOF and exits
                self._conn = None
            if self._proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._proc.wait(timeout)
            self._stop_locked()

    def _stop_locked(self) -> None:
        """Kill the helper if it still runs, then close the pipes (in that
        order: a write still blocked on the pipe, ``_send_within``, ends with
        EPIPE before its descriptor is closed and could be reused)."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait(5.0)
            self._proc = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _send_within(conn: _Duplex, payload: bytes, timeout: float) -> None:
    """``conn.send_bytes(payload)``, but a helper that stops reading (hung,
    stopped) raises ``TimeoutError`` after ``timeout`` instead of blocking the
    caller, and with it the encoder's lock and the capture's shutdown,
    forever. A batch is far larger than a pipe's buffer, so the write does
    block until the helper reads. The write runs on a short-lived thread;
    on a timeout the caller kills the helper, which ends the write (EPIPE)."""
    failed: list[BaseException] = []

    def write() -> None:
        try:
            conn.send_bytes(payload)
        except BaseException as exc:  # handed to the caller
            failed.append(exc)

    writer = threading.Thread(target=write, name="modeltap-encoder-send", daemon=True)
    writer.start()
    writer.join(timeout)
    if writer.is_alive():
        raise TimeoutError(f"the helper took no batch in {timeout:g} s")
    if failed:
        raise failed[0]


class _Duplex:
    """One reading and one writing ``Connection`` used as one."""

    def __init__(self, reader: Connection, writer: Connection) -> None:
        self.reader, self.writer = reader, writer

    def send_bytes(self, data: bytes) -> None:
        self.writer.send_bytes(data)

    def recv_bytes(self) -> bytes:
        return self.reader.recv_bytes()

    def poll(self, timeout: float) -> bool:
        return self.reader.poll(timeout)

    def close(self) -> None:
        self.writer.close()
        self.reader.close()


def serve(conn: _Duplex) -> None:
    """The helper's loop: its settings first, then a packed batch in,
    ``(groups, failed, counters, tally summary)`` out, until the parent
    closes the pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _yield_cpu()
    from capture.buffer import encode_items
    from capture.capturer import RecordBuilder

    try:
        settings, tally = pickle.loads(conn.recv_bytes())
    except (EOFError, OSError):
        return
    stats = CaptureStats()
    builder = RecordBuilder(settings, stats=stats)

    def process(item: Any) -> dict[str, Any] | None:
        record = builder.process(item)
        if tally is not None and record is not None:
            tally.add(record)
        return record

    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):
            return
        before = {name: stats.get(name) for name in RecordBuilder.COUNTERS}
        groups, failed = encode_items(unpack(payload), process, settings.gzip_level, settings.model)
        counters = {name: stats.get(name) - before[name] for name in RecordBuilder.COUNTERS}
        summary = tally.take() if tally is not None else None
        conn.send_bytes(pickle.dumps((groups, failed, counters, summary), 5))


def _yield_cpu() -> None:
    """Nice ``HELPER_NICE``: where the helper competes with the proxy's event
    loop for a core (a busy or small container), the request path goes
    first and the helper catches up in the gaps, the buffer absorbing the
    difference (and the flusher helping past half of it,
    ``Capturer._encode_batch``). Not ``SCHED_IDLE``: tried, the one-connection
    p99 with capture on went from ~0.6-0.8 ms to ~3-3.7 ms here
    (``python -m loadtest proxy --payloads=predict --repeat=3``; BENCHMARKS.md)."""
    with contextlib.suppress(OSError):
        os.nice(HELPER_NICE)


def serve_fds(read_fd: int, write_fd: int) -> None:
    serve(_Duplex(Connection(read_fd), Connection(write_fd)))


#: The helper's command line (not ``-m capture.offload``: the package's
#: ``__init__`` imports this module before ``-m`` would run it).
_HELPER = "import sys; from capture.offload import serve_fds; serve_fds(*map(int, sys.argv[1:3]))"
