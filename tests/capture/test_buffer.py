import re
import threading

import pytest

from capture.buffer import BufferConfig, CaptureBuffer
from capture.clock import ManualClock
from capture.errors import ConfigError
from capture.keys import KeyNamer
from capture.stats import CaptureStats
from tests.support import GatedSink, all_records, read_objects, wait_for

KEY = re.compile(
    r"^(?P<model>[^/]+)/dt=\d{4}-\d{2}-\d{2}/hour=\d{2}/[A-Za-z0-9._]+-\d+-\d+_\d{6}\.jsonl\.gz$"
)


def rec(i, model="m", **extra):
    return {"event_id": f"e{i}", "model": {"name": model}, **extra}


def make(tmp_path, clock=None, **cfg):
    sink = GatedSink(tmp_path / "sink")
    buf = CaptureBuffer(sink, KeyNamer("", "m"), config=BufferConfig(**cfg), clock=clock)
    return sink, buf


def test_count_trigger_and_close(tmp_path):
    sink, buf = make(tmp_path, max_records=10)
    for i in range(25):
        assert buf.offer(rec(i), 100)
    assert wait_for(lambda: buf.stats.get("records_written") == 20)
    buf.close()
    objects = read_objects(sink.root)
    assert sorted(len(v) for v in objects.values()) == [5, 10, 10]
    assert all(KEY.match(k) for k in objects)
    assert sorted(r["event_id"] for r in all_records(sink.root)) == sorted(
        f"e{i}" for i in range(25)
    )
    flushes = buf.stats.snapshot()["flushes"]
    assert flushes["count"] == 2 and flushes["close"] == 1


def test_size_trigger_and_oversized_record_ships_alone(tmp_path):
    sink, buf = make(tmp_path, max_bytes=1000, max_buffer_bytes=100_000)
    for i in range(4):
        buf.offer(rec(i), 300)
    assert wait_for(lambda: buf.stats.get("records_written") == 4)
    buf.offer(rec(99, payload="x" * 5000), 5000)
    assert wait_for(lambda: buf.stats.get("records_written") == 5)
    buf.close()
    sizes = sorted(len(v) for v in read_objects(sink.root).values())
    assert sizes == [1, 4]
    assert buf.stats.snapshot()["flushes"]["size"] == 2


def test_age_trigger_starts_at_first_record(tmp_path):
    clock = ManualClock()
    _, buf = make(tmp_path, clock=clock, max_age_s=60)
    buf.offer(rec(1), 10)
    clock.advance(30)
    buf.offer(rec(2), 10)
    clock.advance(29)
    assert not wait_for(lambda: buf.stats.get("records_written") > 0, timeout=0.5)
    clock.advance(1.5)  # 60.5 s after the first record, 30.5 s after the second
    assert wait_for(lambda: buf.stats.get("records_written") == 2, timeout=5)
    assert buf.stats.snapshot()["flushes"]["age"] == 1
    buf.close()


def test_manual_flush_waits_for_delivery(tmp_path):
    sink, buf = make(tmp_path)
    for i in range(7):
        buf.offer(rec(i), 10)
    assert buf.flush(timeout=10)
    assert len(all_records(sink.root)) == 7
    assert buf.stats.snapshot()["flushes"]["manual"] == 1
    buf.close()


def test_memory_cap_drops_newest_and_counts(tmp_path, caplog):
    sink, buf = make(tmp_path, max_records=5, max_bytes=10_000, max_buffer_bytes=10_000)
    sink.gate.clear()  # the sink hangs: nothing leaves memory
    accepted = sum(buf.offer(rec(i), 1000) for i in range(50))
    assert accepted == 10
    assert buf.stats.dropped("buffer_full") == 40
    assert buf.depth() == (10, 10_000)
    full = [r for r in caplog.records if "capture buffer full" in r.getMessage()]
    assert len(full) == 1 and full[0].levelname == "WARNING"  # once, not 40 times
    sink.gate.set()
    assert buf.flush(timeout=10)
    assert buf.offer(rec(50), 1000)
    assert any("has room again" in r.getMessage() for r in caplog.records)
    buf.close()
    assert len(all_records(sink.root)) == 11
    assert buf.depth() == (0, 0)


def test_offer_never_blocks_on_a_hung_sink(tmp_path):
    sink, buf = make(tmp_path, max_records=3)
    sink.gate.clear()
    done = threading.Event()

    def producer():
        for i in range(1000):
            buf.offer(rec(i), 10)
        done.set()

    threading.Thread(target=producer, daemon=True).start()
    assert done.wait(5), "offer blocked while the sink hung"
    sink.gate.set()
    buf.close()
    assert len(all_records(sink.root)) == 1000


def test_failing_sink_without_spool_retries_then_counts_shutdown(tmp_path):
    sink, buf = make(tmp_path, retry_initial_s=0.05, max_records=4)
    sink.failing = True
    for i in range(10):
        buf.offer(rec(i), 10)
    assert wait_for(lambda: buf.stats.get("upload_retries") >= 3)
    buf.close(timeout=0.5)
    s = buf.stats
    assert s.dropped("shutdown") == 10 and s.get("records_written") == 0
    assert s.get("upload_failures") >= 3


def test_outage_then_recovery_without_spool_loses_nothing(tmp_path):
    sink, buf = make(tmp_path, retry_initial_s=0.05, retry_max_s=0.2, max_records=5)
    sink.failing = True
    for i in range(20):
        buf.offer(rec(i), 10)
    assert wait_for(lambda: buf.stats.get("upload_failures") >= 4)
    sink.failing = False
    buf.close(timeout=10)
    assert len(all_records(sink.root)) == 20
    assert buf.stats.dropped() == 0 and buf.stats.get("upload_retries") >= 1


def test_permanent_failure_is_counted_sink_rejected(tmp_path):
    sink, buf = make(tmp_path)
    sink.failing, sink.retryable = True, False
    buf.offer(rec(1), 10)
    buf.close()
    assert buf.stats.dropped("sink_rejected") == 1 and sink.puts == 1


def test_threads_offer_concurrently_nothing_lost_or_duplicated(tmp_path):
    sink, buf = make(tmp_path, max_records=97)

    def producer(t):
        for i in range(2000):
            buf.offer(rec(f"{t}-{i}"), 50)

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    buf.close()
    ids = [r["event_id"] for r in all_records(sink.root)]
    assert len(ids) == 16_000 and len(set(ids)) == 16_000


def test_records_grouped_by_model_and_unsafe_names_contained(tmp_path):
    sink, buf = make(tmp_path)
    buf.offer(rec(1, model="ranker"), 10)
    buf.offer(rec(2, model="fraud"), 10)
    buf.offer(rec(3, model="../../etc"), 10)
    buf.close()
    models = sorted(KEY.match(k)["model"] for k in read_objects(sink.root))
    assert models == ["fraud", "m", "ranker"]
    assert not (tmp_path / "etc").exists()


def test_a_record_that_fails_to_build_is_counted_not_fatal(tmp_path):
    sink = GatedSink(tmp_path / "sink")

    def process(item):
        if item["event_id"] == "e3":
            raise RuntimeError("adapter bug")
        return item

    buf = CaptureBuffer(sink, KeyNamer("", "m"), process=process)
    for i in range(6):
        buf.offer(rec(i), 10)
    buf.close()
    assert buf.stats.dropped("encode_error") == 1
    assert len(all_records(sink.root)) == 5


def test_offers_after_close_are_counted():
    import tempfile
    from pathlib import Path

    _, buf = make(Path(tempfile.mkdtemp()))
    buf.close()
    assert not buf.offer(rec(1), 10)
    assert buf.stats.dropped("shutdown") == 1


@pytest.mark.parametrize(
    "bad",
    [
        dict(max_records=0),
        dict(max_age_s=0),
        dict(gzip_level=10),
        dict(max_bytes=2000, max_buffer_bytes=1000),
        dict(upload_workers=0),
    ],
)
def test_bad_config(bad):
    with pytest.raises(ConfigError):
        BufferConfig(**bad)


def test_stats_invariant(tmp_path):
    stats = CaptureStats()
    sink = GatedSink(tmp_path / "sink")
    buf = CaptureBuffer(
        sink,
        KeyNamer("", "m"),
        stats=stats,
        config=BufferConfig(max_records=3, max_buffer_bytes=300, max_bytes=300),
    )
    sink.gate.clear()
    for i in range(20):
        stats.add("kept")
        buf.offer(rec(i), 100)
    sink.gate.set()
    buf.close()
    s = stats.snapshot()
    assert s["kept"] == s["records_written"] + sum(s["dropped"].values())
    assert s["dropped"]["buffer_full"] > 0


def make_spooled(tmp_path, **cfg):
    from capture.spool import DiskSpool

    stats = CaptureStats()
    sink = GatedSink(tmp_path / "sink")
    spool = DiskSpool(tmp_path / "spool", fsync=False, stats=stats)
    cfg.setdefault("retry_initial_s", 0.02)
    cfg.setdefault("replay_interval_s", 0.1)
    buf = CaptureBuffer(
        sink, KeyNamer("", "m"), config=BufferConfig(**cfg), spool=spool, stats=stats
    )
    return sink, spool, buf


def test_failing_sink_spills_to_spool_and_replays_on_recovery(tmp_path):
    sink, spool, buf = make_spooled(tmp_path, max_records=10)
    sink.failing = True
    for i in range(50):
        buf.offer(rec(i), 100)
    assert buf.flush(timeout=10)
    s = buf.stats.snapshot()
    assert s["spooled_records"] == 50 and s["records_written"] == 0 and s["spool_records"] == 50
    assert s["upload_failures"] >= 3
    sink.failing = False
    assert wait_for(lambda: spool.is_empty(), timeout=10)
    buf.close()
    ids = sorted(r["event_id"] for r in all_records(sink.root))
    assert ids == sorted(f"e{i}" for i in range(50))
    s = buf.stats.snapshot()
    assert s["replayed_records"] == 50 and sum(s["dropped"].values()) == 0


def test_permanent_failure_with_spool_keeps_the_batch(tmp_path):
    sink, spool, buf = make_spooled(tmp_path)
    sink.failing, sink.retryable = True, False
    buf.offer(rec(1), 10)
    buf.close()
    assert spool.pending_records() == 1 and buf.stats.dropped() == 0


def test_full_spool_counts_drops(tmp_path):
    from capture.spool import DiskSpool

    stats = CaptureStats()
    sink = GatedSink(tmp_path / "sink")
    spool = DiskSpool(tmp_path / "spool", fsync=False, stats=stats, max_bytes=600)
    buf = CaptureBuffer(
        sink,
        KeyNamer("", "m"),
        spool=spool,
        stats=stats,
        config=BufferConfig(max_records=1, retry_initial_s=0.01),
    )
    sink.failing = True
    for i in range(20):
        buf.offer(rec(i, pad="x" * 200), 300)
    buf.close()
    s = stats.snapshot()
    assert s["dropped"]["spool_full"] > 0
    assert s["spooled_records"] + s["dropped"]["spool_full"] == 20


def test_a_hung_sink_spills_to_the_spool_instead_of_dropping(tmp_path):
    """A sink that stops answering (a blackholed S3: every put waits out its
    timeouts) holds every upload thread. Batches that close meanwhile go to
    the spool from the flusher once memory is over half the cap, so a spool
    means no buffer_full drops even then."""
    sink, spool, buf = make_spooled(
        tmp_path, max_records=10, max_bytes=10_000, max_buffer_bytes=10_000
    )
    sink.gate.clear()  # every put hangs
    accepted, held = 0, []
    try:
        for i in range(300):
            accepted += buf.offer(rec(i), 100)
            if i % 10 == 9:
                wait_for(lambda: buf.depth()[1] <= 6_000, timeout=1)
                held.append(buf.depth()[1])
        spooled, dropped = buf.stats.get("spooled_records"), buf.stats.dropped()
    finally:
        sink.gate.set()  # else the hung upload threads outlive the test
    assert accepted == 300 and dropped == 0, (accepted, dropped)
    assert spooled >= 200 and max(held) <= 6_000, (spooled, held)
    assert wait_for(lambda: spool.is_empty(), timeout=10)
    buf.close()
    ids = [r["event_id"] for r in all_records(sink.root)]
    assert sorted(ids) == sorted(f"e{i}" for i in range(300))
