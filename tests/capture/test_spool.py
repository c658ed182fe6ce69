"""DiskSpool: a write-ahead log of batches, replayed to a sink once it is back."""

import os
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture.errors import SinkError, SpoolError
from capture.spool import HEADER, MAGIC, DiskSpool, SpoolFullError
from capture.stats import CaptureStats
from tests.support import read_then_kill

ROOT = Path(__file__).resolve().parents[2]


class DictSink:
    """The ``Sink`` protocol over a dict; ``fail_after`` puts succeed, then it fails."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts: list[tuple[str, bytes]] = []
        self.fail_after = fail_after
        self.lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        with self.lock:
            if self.fail_after is not None and len(self.puts) >= self.fail_after:
                raise SinkError("sink is down (test)", retryable=True)
            self.puts.append((key, bytes(data)))
            self.objects[key] = bytes(data)

    def check(self) -> None:
        pass

    def describe(self) -> str:
        return "dict://"

    def close(self) -> None:
        pass


def key(i: int) -> str:
    return f"captures/m/dt=2026-11-22/hour=23/host-12-1763852400123_{i:06d}.jsonl.gz"


def segments(d: Path) -> list[Path]:
    return sorted(d.glob("segment-*.wal"))


def fill(spool: DiskSpool, n: int, size: int = 50, records: int = 1) -> dict[str, bytes]:
    out = {}
    for i in range(n):
        out[key(i)] = bytes([i % 251]) * size + b"%03d" % i
        spool.write(key(i), out[key(i)], records)
    return out


def test_write_then_replay_delivers_everything_in_order_and_empties(tmp_path):
    stats = CaptureStats()
    spool = DiskSpool(tmp_path / "spool", fsync=False, stats=stats)
    sent = [(key(i), os.urandom(i * 37)) for i in range(20)]
    for i, (k, data) in enumerate(sent):
        spool.write(k, data, records=i + 1)
    assert spool.pending_records() == 210 and not spool.is_empty()
    assert stats.snapshot()["spool_records"] == 210 and stats.snapshot()["spool_bytes"] > 0
    sink = DictSink()
    result = spool.replay(sink)
    assert sink.puts == sent  # byte-identical, oldest first, each once
    assert (result.batches, result.records, result.corrupt, result.error) == (20, 210, 0, None)
    assert result.remaining_bytes == 0 and spool.is_empty() and spool.pending_records() == 0
    assert not segments(tmp_path / "spool")
    snap = stats.snapshot()
    assert snap["spooled_records"] == snap["replayed_records"] == 210
    assert snap["spooled_batches"] == snap["replayed_batches"] == 20
    assert snap["spool_bytes"] == 0 and snap["spool_records"] == 0


def test_replay_while_sink_down_keeps_everything_for_later(tmp_path):
    spool = DiskSpool(tmp_path / "spool", fsync=False)
    sent = fill(spool, 3)
    size = spool.size_bytes()
    result = spool.replay(DictSink(fail_after=0))
    assert result.error == "sink is down (test)" and result.batches == 0
    assert spool.pending_records() == 3 and spool.size_bytes() == size == result.remaining_bytes
    spool.write(key(99), b"later", 1)  # writes go on after a failed replay
    sink = DictSink()
    assert spool.replay(sink).batches == 4
    assert sink.objects == {**sent, key(99): b"later"} and spool.is_empty()


def test_rotation_and_a_segment_is_deleted_only_once_all_its_entries_are_acked(tmp_path):
    d = tmp_path / "spool"
    entry = HEADER.size + 2 + len(key(0)) + 53
    spool = DiskSpool(d, segment_bytes=3 * entry, fsync=False)
    sent = fill(spool, 12)
    spool.close()
    segs = segments(d)
    assert len(segs) == 4 and all(p.stat().st_size == 3 * entry for p in segs)

    spool = DiskSpool(d, segment_bytes=3 * entry, fsync=False)
    sink = DictSink(fail_after=4)  # fails on the 2nd entry of the 2nd segment
    result = spool.replay(sink)
    assert result.batches == 4 and result.error
    assert segments(d) == segs[1:]  # first segment acked in full: gone; second kept
    assert spool.pending_records() == 8
    spool.close()

    # A crash now: the next process re-delivers the 2nd segment from its start (idempotent).
    sink.fail_after = None
    restarted = DiskSpool(d, segment_bytes=3 * entry, fsync=False)
    assert restarted.pending_records() == 9
    restarted.replay(sink)
    assert [k for k, _ in sink.puts].count(key(3)) == 2
    assert sink.objects == sent and not segments(d)


def test_resumed_replay_in_the_same_process_does_not_resend(tmp_path):
    spool = DiskSpool(tmp_path / "spool", fsync=False)
    sent = fill(spool, 6, records=2)
    sink = DictSink(fail_after=2)
    assert spool.replay(sink).batches == 2 and spool.pending_records() == 8
    sink.fail_after = None
    assert spool.replay(sink, limit=3).batches == 3 and spool.pending_records() == 2
    assert segments(tmp_path / "spool")  # one entry not yet acked: segment kept
    assert spool.replay(sink).batches == 1
    assert sink.puts == list(sent.items()) and spool.is_empty()


def test_an_entry_bigger_than_a_segment_goes_alone(tmp_path):
    spool = DiskSpool(tmp_path / "spool", segment_bytes=500, fsync=False)
    spool.write(key(0), b"a" * 10, 1)
    spool.write(key(1), b"b" * 2000, 1)
    spool.write(key(2), b"c" * 10, 1)
    sizes = [p.stat().st_size for p in segments(tmp_path / "spool")]
    assert len(sizes) == 3 and sizes[1] > 2000 and sizes[0] < 500 and sizes[2] < 500
    sink = DictSink()
    spool.replay(sink)
    assert [k for k, _ in sink.puts] == [key(0), key(1), key(2)]


def test_full_spool_refuses_whole_batches_and_stays_usable(tmp_path):
    stats = CaptureStats()
    spool = DiskSpool(tmp_path / "spool", max_bytes=1000, fsync=False, stats=stats)
    spool.write(key(1), b"x" * 600, 1)
    (seg,) = segments(tmp_path / "spool")
    before, size = seg.read_bytes(), spool.size_bytes()
    with pytest.raises(SpoolFullError):
        spool.write(key(2), b"y" * 600, 7)
    assert isinstance(SpoolFullError("x"), SpoolError)
    assert seg.read_bytes() == before and spool.size_bytes() == size
    assert spool.pending_records() == 1 and stats.get("spooled_records") == 1
    assert stats.dropped() == 0  # counting the drop is the caller's job
    spool.write(key(3), b"z" * 100, 1)
    sink = DictSink()
    spool.replay(sink)
    assert sink.objects == {key(1): b"x" * 600, key(3): b"z" * 100}
    spool.write(key(2), b"y" * 600, 7)  # room again once replayed
    assert spool.size_bytes() < 1000


def test_check_reports_full_until_the_refused_batch_would_fit_and_a_gone_directory(tmp_path):
    d = tmp_path / "spool"
    spool = DiskSpool(d, max_bytes=1000, fsync=False)
    spool.check()
    spool.write(key(1), b"x" * 600, 1)
    spool.check()  # nothing refused yet
    with pytest.raises(SpoolFullError):
        spool.write(key(2), b"y" * 600, 1)
    with pytest.raises(SpoolFullError, match="full"):
        spool.check()
    spool.replay(DictSink())
    spool.check()  # the refused batch would fit now
    for p in d.iterdir():
        p.unlink()
    d.rmdir()
    d.write_text("a file where the directory was")
    with pytest.raises(SpoolError, match="not writable") as info:
        spool.check()
    assert not isinstance(info.value, SpoolFullError)


def test_restart_replays_what_the_previous_process_wrote(tmp_path):
    d = tmp_path / "spool"
    first = DiskSpool(d, fsync=False)
    sent = fill(first, 3, records=5)
    with pytest.raises(SpoolError, match="in use"):
        DiskSpool(d)  # a live spool's directory is locked
    first.close()
    stats = CaptureStats()
    second = DiskSpool(d, fsync=False, stats=stats)
    assert second.pending_records() == 15 and second.size_bytes() == first.size_bytes()
    second.write(key(9), b"new", 1)
    assert len(segments(d)) == 2  # never appends to an old segment (its tail may be torn)
    sink = DictSink()
    result = second.replay(sink)
    assert sink.puts == [*sent.items(), (key(9), b"new")] and result.records == 16
    assert stats.get("replayed_records") == 16 and second.is_empty()


def test_write_after_close_and_unsafe_keys_raise_spool_error(tmp_path):
    spool = DiskSpool(tmp_path / "spool", fsync=False)
    for bad in ("../etc/passwd", "/abs/key", "a//b", ""):
        with pytest.raises(SpoolError):
            spool.write(bad, b"x", 1)
    with pytest.raises(SpoolError):
        spool.write(key(0), b"x", -1)
    assert spool.is_empty() and not segments(tmp_path / "spool")
    spool.close()
    spool.close()
    with pytest.raises(SpoolError, match="closed"):
        spool.write(key(0), b"x", 1)


def reopen_and_replay(d: Path) -> tuple[CaptureStats, DictSink, object]:
    stats = CaptureStats()
    spool = DiskSpool(d, fsync=False, stats=stats)
    sink = DictSink()
    return stats, sink, spool.replay(sink)


def test_torn_tail_is_counted_and_the_rest_replayed(tmp_path):
    d = tmp_path / "spool"
    with DiskSpool(d, fsync=False) as spool:
        sent = fill(spool, 3, size=100, records=4)
    (seg,) = segments(d)
    seg.write_bytes(seg.read_bytes()[:-15])  # killed mid-payload of the last entry
    stats, sink, result = reopen_and_replay(d)
    assert sink.puts == list(sent.items())[:2]
    assert result.corrupt == 4 and stats.dropped("spool_corrupt") == 4  # its record count
    assert not segments(d)


def test_torn_header_counts_one(tmp_path):
    d = tmp_path / "spool"
    with DiskSpool(d, fsync=False) as spool:
        sent = fill(spool, 2, records=4)
    (seg,) = segments(d)
    seg.write_bytes(seg.read_bytes() + MAGIC + b"\x05\x00")  # header cut short
    stats, sink, result = reopen_and_replay(d)
    assert sink.objects == sent and result.corrupt == 1 and stats.dropped("spool_corrupt") == 1


def test_flipped_byte_fails_the_checksum_and_later_entries_survive(tmp_path):
    d = tmp_path / "spool"
    with DiskSpool(d, fsync=False) as spool:
        sent = fill(spool, 4, size=100, records=5)
    (seg,) = segments(d)
    blob = bytearray(seg.read_bytes())
    second = blob.find(MAGIC, 1)
    blob[second + HEADER.size + 80] ^= 0xFF  # inside entry 1's data
    seg.write_bytes(bytes(blob))
    stats, sink, result = reopen_and_replay(d)
    assert sink.puts == [item for i, item in enumerate(sent.items()) if i != 1]
    assert result.corrupt == 5 and stats.dropped("spool_corrupt") == 5
    assert not segments(d)


def test_garbage_in_the_middle_and_a_bad_length_resync(tmp_path):
    d = tmp_path / "spool"
    with DiskSpool(d, fsync=False) as spool:
        sent = fill(spool, 4, records=3)
    (seg,) = segments(d)
    blob = bytearray(seg.read_bytes())
    starts = [i for i in range(len(blob)) if blob.startswith(MAGIC, i)]
    blob[starts[1] + 4 : starts[1] + 8] = (10**6).to_bytes(4, "little")  # length past EOF
    blob[starts[3] : starts[3]] = b"\x00junk\xff" * 10  # garbage between entries
    seg.write_bytes(bytes(blob))
    stats, sink, result = reopen_and_replay(d)
    assert sink.objects == {k: v for i, (k, v) in enumerate(sent.items()) if i != 1}
    assert result.corrupt == 3 + 1 and stats.dropped("spool_corrupt") == 4


def test_garbage_file_named_like_a_segment_is_counted_and_removed(tmp_path):
    d = tmp_path / "spool"
    d.mkdir()
    (d / "segment-0000000000000007.wal").write_bytes(os.urandom(5000).replace(MAGIC, b"xxxx"))
    stats = CaptureStats()
    spool = DiskSpool(d, fsync=False, stats=stats)
    assert spool.pending_records() == 0 and spool.size_bytes() == 5000
    spool.write(key(1), b"fresh", 1)
    assert segments(d)[-1].name == "segment-0000000000000008.wal"
    sink = DictSink()
    result = spool.replay(sink)
    assert result.corrupt == 1 and stats.dropped("spool_corrupt") == 1
    assert sink.objects == {key(1): b"fresh"} and not segments(d) and spool.is_empty()


def test_unreadable_segment_is_skipped_not_raised(tmp_path):
    d = tmp_path / "spool"
    (d / "segment-0000000000000003.wal").mkdir(parents=True)  # unreadable even as root
    spool = DiskSpool(d, fsync=False)
    spool.write(key(1), b"ok", 1)
    sink = DictSink()
    result = spool.replay(sink)
    assert sink.objects == {key(1): b"ok"} and result.error is None
    assert [p.name for p in segments(d)] == ["segment-0000000000000003.wal"]


def test_unwritable_directory_raises_spool_error(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(SpoolError):
        DiskSpool(tmp_path / "file" / "spool")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores the mode: nothing more to check
            return
        with pytest.raises(SpoolError):
            DiskSpool(ro)
    finally:
        ro.chmod(0o700)


def test_concurrent_writers_while_replaying_lose_nothing(tmp_path):
    stats = CaptureStats()
    spool = DiskSpool(tmp_path / "spool", segment_bytes=2000, fsync=False, stats=stats)
    sink = DictSink()
    stop = threading.Event()

    def writer(t: int) -> None:
        for i in range(300):
            spool.write(key(t * 1000 + i), b"%d" % (t * 1000 + i), 1)

    def replayer() -> None:
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
    expected = {key(t * 1000 + i): b"%d" % (t * 1000 + i) for t in range(4) for i in range(300)}
    assert sink.objects == expected and spool.is_empty() and not segments(tmp_path / "spool")
    assert len(sink.puts) == 1200  # one process, no crash: each entry exactly once
    assert stats.get("replayed_records") == 1200 == stats.get("spooled_records")
    for t in range(4):  # per writer, order kept
        mine = [k for k, _ in sink.puts if key(t * 1000) <= k <= key(t * 1000 + 299)]
        assert mine == sorted(mine)


segment_st = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._=-]{0,12}", fullmatch=True).filter(
    lambda s: ".." not in s
)
key_st = st.lists(segment_st, min_size=1, max_size=4).map("/".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(key_st, st.binary(max_size=400), st.integers(0, 2**32 - 1)), max_size=20))
def test_any_batches_come_back_identical(batches):
    with tempfile.TemporaryDirectory() as d:
        spool = DiskSpool(Path(d) / "spool", segment_bytes=600, fsync=False)
        for k, data, n in batches:
            spool.write(k, data, n)
        spool.close()
        spool = DiskSpool(Path(d) / "spool", segment_bytes=600, fsync=False)
        assert spool.pending_records() == sum(n for _, _, n in batches)
        sink = DictSink()
        result = spool.replay(sink)
        assert sink.puts == [(k, data) for k, data, _ in batches]
        assert result.corrupt == 0 and spool.is_empty()
        spool.close()


DISK_FULL_CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    from capture.errors import SpoolError
    from capture.spool import DiskSpool
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then a write past the limit gets EFBIG
    spool = DiskSpool(sys.argv[1], fsync=False)
    resource.setrlimit(resource.RLIMIT_FSIZE, (10_000, 10_000))
    for i in range(12):
        try:
            spool.write(f"m/k_{i:04d}.jsonl.gz", bytes([i]) * (3000 if i < 5 else 100), 1)
            print("ok", i, flush=True)
        except SpoolError as exc:
            print("err", i, type(exc).__name__, flush=True)
    """
)


def test_a_failed_disk_write_raises_spool_error_and_leaves_nothing_partial(tmp_path):
    d = tmp_path / "spool"
    out = subprocess.run(
        [sys.executable, "-c", DISK_FULL_CHILD, str(d)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    lines = [line.split() for line in out.stdout.splitlines()]
    assert out.returncode == 0, out.stderr
    ok = [int(i) for status, i, *_ in lines if status == "ok"]
    assert ok[:3] == [0, 1, 2] and 3 not in ok and 5 in ok  # the spool stayed usable
    assert {rest[0] for status, _, *rest in lines if status == "err"} == {"SpoolError"}
    stats, sink, result = reopen_and_replay(d)
    assert sorted(sink.objects) == [f"m/k_{i:04d}.jsonl.gz" for i in ok]
    assert result.corrupt == 0 and stats.dropped() == 0  # failed appends were cut off


CHILD = textwrap.dedent(
    """
    import sys
    from capture.spool import DiskSpool
    spool = DiskSpool(sys.argv[1], segment_bytes=1 << 20)
    i = 0
    while True:
        key = f"captures/m/dt=2026-11-22/hour=23/h-1-1_{i:06d}.jsonl.gz"
        spool.write(key, bytes([i % 256]) * (1000 + 997 * (i % 300)), 1)
        print(i, flush=True)
        i += 1
    """
)


def test_sigkill_loses_nothing_that_write_returned_for(tmp_path):
    d = tmp_path / "spool"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(d)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    acked = int(read_then_kill(child, lambda line: int(line) >= 400)[-1])
    stats = CaptureStats()
    spool = DiskSpool(d, fsync=False, stats=stats)
    sink = DictSink()
    assert spool.replay(sink).error is None
    for i in range(acked + 1):
        k = f"captures/m/dt=2026-11-22/hour=23/h-1-1_{i:06d}.jsonl.gz"
        assert sink.objects[k] == bytes([i % 256]) * (1000 + 997 * (i % 300))
    assert len(sink.objects) - (acked + 1) + stats.dropped("spool_corrupt") <= 1  # at most 1 torn
    assert not segments(d)
