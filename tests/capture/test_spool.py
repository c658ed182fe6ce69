import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture.errors import SinkError, SpoolError
from capture.sinks.local import LocalSink
from capture.spool import MAGIC, DiskSpool, SpoolFullError
from capture.stats import CaptureStats
from tests.support import GatedSink, read_then_kill


class FlakySink(GatedSink):
    """A real local sink that fails after ``ok_puts`` successful puts (then always)."""

    def __init__(self, root: Path, ok_puts: int | None = None) -> None:
        super().__init__(root)
        self.ok_puts = ok_puts
        self.done = 0

    def put(self, key: str, data: bytes) -> None:
        if self.ok_puts is not None and self.done >= self.ok_puts:
            raise SinkError("down", retryable=True)
        super().put(key, data)
        self.done += 1


def stored(sink: LocalSink) -> dict[str, bytes]:
    return {str(p.relative_to(sink.root)): p.read_bytes() for p in sink.root.rglob("*.gz")}


def key(i: int) -> str:
    return f"m/dt=2026-11-22/hour=23/h-1-1_{i:06d}.jsonl.gz"


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("segment-*.wal"))


def test_write_then_replay_delivers_everything_and_empties(tmp_path):
    stats = CaptureStats()
    spool = DiskSpool(tmp_path / "spool", fsync=False, stats=stats)
    for i in range(20):
        spool.write(key(i), f"data-{i}".encode() * (i + 1), records=i + 1)
    assert spool.pending_records() == sum(range(1, 21))
    sink = GatedSink(tmp_path / "sink")
    result = spool.replay(sink)
    assert result.batches == 20 and result.records == 210 and result.error is None
    assert stored(sink) == {key(i): f"data-{i}".encode() * (i + 1) for i in range(20)}
    assert not segments(tmp_path / "spool") and spool.is_empty()
    snap = stats.snapshot()
    assert snap["spooled_records"] == snap["replayed_records"] == 210
    assert snap["spool_bytes"] == 0


def test_replay_while_sink_down_keeps_everything(tmp_path):
    spool = DiskSpool(tmp_path / "spool", fsync=False)
    spool.write(key(1), b"a", 1)
    down = FlakySink(tmp_path / "sink", ok_puts=0)
    assert spool.replay(down).error == "down"
    assert spool.pending_records() == 1
    spool.write(key(2), b"b", 1)
    up = GatedSink(tmp_path / "sink")
    assert spool.replay(up).batches == 2
    assert stored(up) == {key(1): b"a", key(2): b"b"}


def test_segment_deleted_only_after_all_its_entries_are_acknowledged(tmp_path):
    spool = DiskSpool(tmp_path / "spool", segment_bytes=300, fsync=False)
    for i in range(12):
        spool.write(key(i), b"x" * 50, 1)
    before = segments(tmp_path / "spool")
    assert len(before) >= 4
    sink = FlakySink(tmp_path / "sink", ok_puts=5)  # fails in the middle of a segment
    result = spool.replay(sink)
    assert result.batches == 5 and result.error
    left = segments(tmp_path / "spool")
    assert 0 < len(left) < len(before)
    sink.ok_puts = None
    spool.replay(sink)
    assert stored(sink) == {key(i): b"x" * 50 for i in range(12)}
    assert not segments(tmp_path / "spool")


def test_full_spool_refuses_whole_batches_and_stays_usable(tmp_path):
    spool = DiskSpool(tmp_path / "spool", max_bytes=1000, fsync=False)
    spool.write(key(1), b"x" * 600, 1)
    size = spool.size_bytes()
    with pytest.raises(SpoolFullError):
        spool.write(key(2), b"y" * 600, 1)
    assert spool.size_bytes() == size
    spool.write(key(3), b"z" * 100, 1)
    sink = GatedSink(tmp_path / "sink")
    spool.replay(sink)
    assert sorted(stored(sink)) == [key(1), key(3)]


def test_restart_replays_what_the_previous_process_wrote(tmp_path):
    first = DiskSpool(tmp_path / "spool", fsync=False)
    for i in range(3):
        first.write(key(i), b"old", 1)
    second = DiskSpool(tmp_path / "spool", fsync=False)
    assert second.pending_records() == 3
    second.write(key(9), b"new", 1)
    assert len(segments(tmp_path / "spool")) == 2  # never appends to an old segment
    sink = GatedSink(tmp_path / "sink")
    second.replay(sink)
    assert stored(sink) == {key(0): b"old", key(1): b"old", key(2): b"old", key(9): b"new"}


def test_torn_tail_is_counted_and_the_rest_replayed(tmp_path):
    spool = DiskSpool(tmp_path / "spool", fsync=False)
    for i in range(3):
        spool.write(key(i), b"payload-%d" % i * 20, 4)
    (seg,) = segments(tmp_path / "spool")
    seg.write_bytes(seg.read_bytes()[:-15])  # killed while writing the last entry
    stats = CaptureStats()
    reopened = DiskSpool(tmp_path / "spool", fsync=False, stats=stats)
    sink = GatedSink(tmp_path / "sink")
    result = reopened.replay(sink)
    assert sorted(stored(sink)) == [key(0), key(1)]
    assert result.corrupt == 1 and stats.dropped("spool_corrupt") == 1


def test_flipped_byte_fails_the_checksum_and_later_entries_survive(tmp_path):
    spool = DiskSpool(tmp_path / "spool", fsync=False)
    for i in range(4):
        spool.write(key(i), b"D" * 100, 5)
    (seg,) = segments(tmp_path / "spool")
    blob = bytearray(seg.read_bytes())
    second = blob.find(MAGIC, 1)
    blob[second + 60] ^= 0xFF  # inside entry 1's payload
    seg.write_bytes(bytes(blob))
    stats = CaptureStats()
    reopened = DiskSpool(tmp_path / "spool", fsync=False, stats=stats)
    sink = GatedSink(tmp_path / "sink")
    result = reopened.replay(sink)
    assert sorted(stored(sink)) == [key(0), key(2), key(3)]
    assert result.corrupt == 5 and stats.dropped("spool_corrupt") == 5  # its record count
    assert not segments(tmp_path / "spool")


def test_garbage_segment_is_counted_and_removed(tmp_path):
    d = tmp_path / "spool"
    d.mkdir()
    (d / "segment-0000000000000001.wal").write_bytes(os.urandom(5000).replace(MAGIC, b"xxxx"))
    stats = CaptureStats()
    spool = DiskSpool(d, fsync=False, stats=stats)
    result = spool.replay(GatedSink(tmp_path / "sink"))
    assert result.batches == 0 and result.corrupt >= 1 and not segments(d)


def test_unwritable_directory_raises_spool_error(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(SpoolError):
        DiskSpool(tmp_path / "file" / "spool")


def test_concurrent_writers_while_replaying(tmp_path):
    spool = DiskSpool(tmp_path / "spool", segment_bytes=2000, fsync=False)
    sink = GatedSink(tmp_path / "sink")
    stop = threading.Event()

    def writer(t):
        for i in range(200):
            spool.write(key(t * 1000 + i), b"%d" % (t * 1000 + i), 1)

    def replayer():
        while not stop.is_set():
            spool.replay(sink)

    r = threading.Thread(target=replayer)
    r.start()
    writers = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    r.join()
    spool.replay(sink)
    expected = {key(t * 1000 + i): b"%d" % (t * 1000 + i) for t in range(4) for i in range(200)}
    assert stored(sink) == expected and spool.is_empty()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.binary(max_size=300)), max_size=15))
def test_any_batches_come_back_identical(tmp_path, batches):
    import tempfile

    with tempfile.TemporaryDirectory(dir=tmp_path) as d:
        spool = DiskSpool(Path(d) / "spool", segment_bytes=500, fsync=False)
        expected = {}
        for i, (n, data) in enumerate(batches):
            spool.write(key(i), data, n)
            expected[key(i)] = data
        sink = GatedSink(Path(d) / "sink")
        spool.replay(sink)
        assert stored(sink) == expected


CHILD = textwrap.dedent(
    """
    import sys
    from capture.spool import DiskSpool
    spool = DiskSpool(sys.argv[1])
    i = 0
    while True:
        spool.write(f"m/dt=2026-11-22/hour=23/h-1-1_{i:06d}.jsonl.gz", bytes([i % 256]) * 5000, 1)
        print(i, flush=True)
        i += 1
    """
)


def test_sigkill_loses_nothing_that_write_returned_for(tmp_path):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "spool")],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    acked = int(read_then_kill(child, lambda line: int(line) >= 150)[-1])
    spool = DiskSpool(tmp_path / "spool")
    sink = GatedSink(tmp_path / "sink")
    spool.replay(sink)
    got = stored(sink)
    for i in range(acked + 1):
        assert got[key(i)] == bytes([i % 256]) * 5000
