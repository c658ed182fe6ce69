"""Records built in a helper process (``MODELTAP_ENCODER=process``,
``capture.offload``): the same records and counters as on the flusher
thread, and nothing lost when the helper fails, hangs or is killed."""

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import zlib

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from capture import offload
from capture.capturer import Capturer, Kept
from capture.errors import ConfigError
from capture.labels import LABEL_KIND
from capture.offload import EncoderProcess, pack, pack_one, unpack, unpack_one
from capture.settings import CaptureSettings
from capture.stats import CaptureStats
from server.app import proxy_capture_settings
from server.metrics import PredictionMetrics
from tests.capture.test_record import exchange
from tests.support import all_records

BUCKETS = (0.25, 0.5, 0.75, 1.0)


def traffic(n=300):
    """Mixed exchanges: JSON predictions, a ranking dict, an error, a body no
    adapter understands, invalid UTF-8, and one with a redacted field."""
    out = []
    for i in range(n):
        kind = i % 6
        if kind == 0:
            out.append(
                exchange(
                    event_id=f"e{i}", response_body=b'{"predictions": [%.2f]}' % (i % 100 / 100)
                )
            )
        elif kind == 1:
            body = json.dumps({"predictions": [{"label": i % 3, "proba": 0.1 + (i % 9) / 10}]})
            out.append(exchange(event_id=f"e{i}", response_body=body.encode()))
        elif kind == 2:
            out.append(exchange(event_id=f"e{i}", status=503, response_body=b"upstream down"))
        elif kind == 3:
            out.append(
                exchange(event_id=f"e{i}", request_body=b"a,b,c\n1,2", response_body=b"\xff\xfe")
            )
        elif kind == 4:
            body = b'{"instances": [{"ssn": "123-45-6789", "x": %d}]}' % i
            out.append(exchange(event_id=f"e{i}", request_body=body))
        else:
            out.append(exchange(event_id=f"e{i}", start=1_763_852_922.0 + i, latency_s=2.5))
    return out


def run(tmp_path, encoder, *, sample_rate=1.0, **kw):
    kw.setdefault("flush_max_records", 97)  # several batches
    registry = CollectorRegistry()
    metrics = PredictionMetrics(registry, BUCKETS)
    cap = Capturer(
        sink=str(tmp_path),
        model="m",
        encoder=encoder,
        sample_rate=sample_rate,
        redact_fields=("ssn",),
        tally=metrics.tally(),
        on_tally=metrics.apply,
        **kw,
    )
    try:
        for e in traffic():
            cap.submit(e)
        batch = cap.ingest_labels(b'{"event_id": "e0", "label": 1}\n{"event_id": "e6", "label": 0}')
        assert len(batch.records) == 2 and not batch.rejected
    finally:
        cap.close()
    return cap, registry


def by_id(tmp_path):
    """Records by (kind, event id); a label without its received time (now)."""
    out = {}
    for r in all_records(tmp_path):
        if r.get("kind") == LABEL_KIND:
            r = {k: r[k] for k in ("kind", "event_id", "label", "model")}
        out[(r.get("kind"), r["event_id"])] = r
    return out


def histogram_lines(registry):
    return sorted(
        line
        for line in generate_latest(registry).decode().splitlines()
        if line.startswith("modeltap_") and "_created" not in line
    )


def test_helper_builds_the_same_records_counters_and_histograms_as_the_thread(tmp_path):
    thread_cap, thread_reg = run(tmp_path / "thread", "thread", sample_rate=0.5)
    proc_cap, proc_reg = run(tmp_path / "process", "process", sample_rate=0.5)
    assert thread_cap.encoder is None and proc_cap.encoder is not None

    records = by_id(tmp_path / "process")
    assert records == by_id(tmp_path / "thread")
    assert (LABEL_KIND, "e0") in records and (LABEL_KIND, "e6") in records
    reasons = {r["sampling"]["reason"] for r in records.values() if r.get("kind") != LABEL_KIND}
    assert reasons == {"sampled", "error", "slow"}  # Kept items crossed too
    assert all("ssn" not in json.dumps(r["request"]) for r in records.values() if "request" in r)

    keep = ("offered", "kept", "records_written", "parse_errors", "redactions", "labels_accepted")
    t, p = thread_cap.stats.snapshot(), proc_cap.stats.snapshot()
    assert {k: p[k] for k in keep} == {k: t[k] for k in keep}
    assert p["parse_errors"] > 0 and p["redactions"] > 0
    assert p["records_written"] == len(records)
    assert p["encoder_fallbacks"] == p["encoder_restarts"] == 0
    assert sum(p["dropped"].values()) == 0

    assert histogram_lines(proc_reg) == histogram_lines(thread_reg)
    assert any('output="proba"' in line for line in histogram_lines(proc_reg))


def observe_each(records):
    """The histograms' exposition when every finite, non-bool number of the
    records' rows is observed one by one (the reference for the tally)."""
    reference = CollectorRegistry()
    pred = Histogram(
        "modeltap_prediction",
        "Numeric predictions of captured rows",
        ["model", "version", "output"],
        buckets=BUCKETS,
        registry=reference,
    )
    score = Histogram(
        "modeltap_ranking_score", "s", ["model", "version"], buckets=BUCKETS, registry=reference
    )

    def finite(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    for r in records:
        model = r.get("model") or {}
        name, version = str(model.get("name")), str(model.get("version") or "")
        for row in r.get("rows") or ():
            if "score" in row and finite(row["score"]):
                score.labels(name, version).observe(float(row["score"]))
            p = row.get("prediction")
            for key, v in p.items() if isinstance(p, dict) else [("", p)]:
                if finite(v):
                    pred.labels(name, version, key).observe(float(v))
    return histogram_lines(reference)


def test_tally_equals_observing_each_value(tmp_path):
    """PredictionMetrics.apply adds bucket counts the way Histogram.observe would."""
    _, registry = run(tmp_path, "process")
    reference = observe_each(all_records(tmp_path))
    ours = [line for line in histogram_lines(registry) if line.startswith("modeltap_prediction")]
    assert ours and ours == [line for line in reference if line.startswith("modeltap_prediction")]


def test_killed_helper_costs_no_record(tmp_path):
    cap = Capturer(sink=str(tmp_path), model="m", encoder="process", flush_max_records=50)
    try:
        for i in range(120):
            cap.submit(exchange(event_id=f"a{i}"))
        assert cap.flush(30)
        first = cap.encoder.pid
        os.kill(first, signal.SIGKILL)
        _wait_dead(first)
        for i in range(120):
            cap.submit(exchange(event_id=f"b{i}"))
        assert cap.flush(30)
        assert cap.encoder.pid not in (None, first)  # a new helper took over
    finally:
        cap.close()
    ids = {r["event_id"] for r in all_records(tmp_path)}
    assert ids == {f"a{i}" for i in range(120)} | {f"b{i}" for i in range(120)}
    snap = cap.stats.snapshot()
    assert snap["encoder_restarts"] >= 1  # seen dead before the next batch: no fallback needed
    assert snap["records_written"] == 240 and sum(snap["dropped"].values()) == 0


def test_helper_that_cannot_start_means_building_here(tmp_path, monkeypatch):
    monkeypatch.setattr(offload, "_HELPER", "raise SystemExit(1)")
    cap = Capturer(sink=str(tmp_path), model="m", encoder="process", flush_max_records=40)
    try:
        for i in range(100):
            cap.submit(exchange(event_id=f"c{i}"))
    finally:
        cap.close()
    assert {r["event_id"] for r in all_records(tmp_path)} == {f"c{i}" for i in range(100)}
    assert cap.stats.snapshot()["encoder_fallbacks"] >= 1


def test_a_hung_helper_is_killed_and_the_batch_built_here(monkeypatch):
    monkeypatch.setattr(offload, "_HELPER", "import time; time.sleep(600)")
    stats = CaptureStats()
    enc = EncoderProcess(CaptureSettings(), tally=None, on_tally=None, stats=stats, timeout_s=1)
    try:
        enc.start()
        hung = enc._proc
        t0 = time.monotonic()
        assert enc.encode([exchange()]) is None
        assert time.monotonic() - t0 < 10
        assert hung.poll() is not None  # killed, not left behind
        assert stats.get("encoder_fallbacks") == 1
    finally:
        enc.close()


def test_a_helper_that_stops_reading_cannot_block_the_sender(monkeypatch):
    """A batch larger than the pipe's buffer, sent to a helper that never
    reads it: the send is bounded by the same timeout as the answer, so a
    shutdown flush cannot hang on a stuck helper."""
    monkeypatch.setattr(offload, "_HELPER", "import time; time.sleep(600)")
    stats = CaptureStats()
    enc = EncoderProcess(CaptureSettings(), tally=None, on_tally=None, stats=stats, timeout_s=1)
    items = [exchange(event_id=f"big{i}") for i in range(3000)]
    assert len(pack(items)) > 4 * 65536  # several pipe buffers
    done: list[object] = []
    sender = threading.Thread(target=lambda: done.append(enc.encode(items)), daemon=True)
    try:
        enc.start()
        hung = enc._proc
        sender.start()
        sender.join(20)
        assert not sender.is_alive(), "encode() blocked on a helper that does not read"
        assert done == [None] and hung.poll() is not None
        assert stats.get("encoder_fallbacks") == 1
    finally:
        enc.close()


def test_helper_exits_when_its_parent_is_killed(tmp_path):
    script = (
        "import sys, time\n"
        "from capture.capturer import Capturer\n"
        f"cap = Capturer(sink={str(tmp_path)!r}, model='m', encoder='process')\n"
        "print(cap.encoder.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        helper = int(parent.stdout.readline())
        os.kill(helper, 0)  # alive
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    _wait_dead(helper)


def test_signals_to_the_group_leave_the_helper_to_its_parent(tmp_path):
    """Ctrl-C reaches every process of the group: the helper must not die
    before its parent has drained through it."""
    with Capturer(sink=str(tmp_path), model="m", encoder="process") as cap:
        pid = cap.encoder.pid
        time.sleep(1.0)  # past the helper's start-up, where the handlers are set
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
        time.sleep(0.3)
        os.kill(pid, 0)  # still alive
        cap.submit(exchange(event_id="after-signals"))
        assert cap.flush(30)
        assert cap.stats.get("encoder_fallbacks") == 0
    assert [r["event_id"] for r in all_records(tmp_path)] == ["after-signals"]
    _wait_dead(pid)  # and gone after close


def test_pack_round_trip_and_what_cannot_cross():
    items = [
        exchange(),
        Kept(exchange(status=500), "error"),
        {"kind": LABEL_KIND, "label": [1, None]},
    ]
    assert [unpack_one(pack_one(i)) for i in items] == items
    assert list(unpack(pack([pack_one(items[0]), items[1], items[2]]))) == items
    odd = exchange(extra={"handle": object()})
    assert pack_one(odd) is None and pack([odd]) is None
    assert pack([object()]) is None


def test_an_item_marshal_cannot_carry_is_built_here(tmp_path):
    with Capturer(sink=str(tmp_path), model="m", encoder="process") as cap:
        cap.submit(exchange(event_id="odd", extra={"handle": object()}))
        cap.submit(exchange(event_id="plain"))
    assert {r["event_id"] for r in all_records(tmp_path)} == {"odd", "plain"}
    assert cap.stats.get("records_written") == 2


def test_settings(tmp_path):
    with pytest.raises(ConfigError, match="MODELTAP_ENCODER"):
        CaptureSettings(encoder="gpu")
    with pytest.raises(ConfigError, match="on_record"):
        Capturer(sink=str(tmp_path), encoder="process", on_record=print)
    with pytest.raises(ConfigError, match="PROFILE_ALL"):
        Capturer(sink=str(tmp_path), encoder="process", profile_all=True)
    with Capturer(sink=str(tmp_path)) as cap:
        assert cap.encoder is None  # auto: the flusher thread in a library
    assert proxy_capture_settings(CaptureSettings()).encoder == "process"
    assert proxy_capture_settings(CaptureSettings(profile_all=True)).encoder == "thread"
    assert proxy_capture_settings(CaptureSettings(encoder="thread")).encoder == "thread"


def _wait_dead(pid, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:
            with open(f"/proc/{pid}/stat") as fh:  # a zombie waiting for its reaper is gone too
                if fh.read().split(")")[-1].split()[0] == "Z":
                    return
        except FileNotFoundError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {pid} still alive after {timeout} s")


def test_helper_yields_the_cpu_to_the_request_path(tmp_path):
    with Capturer(sink=str(tmp_path), model="m", encoder="process") as cap:
        pid, want = cap.encoder.pid, min(19, os.nice(0) + offload.HELPER_NICE)
        deadline = time.monotonic() + 15
        while _nice(pid) != want and time.monotonic() < deadline:
            time.sleep(0.05)  # set by the helper once it runs
        assert _nice(pid) == want
    assert os.nice(0) != want  # the capturing process is untouched


def _nice(pid):
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().split(")")[-1].split()[16])  # field 19 of stat


def test_a_helper_that_falls_behind_gets_help_from_the_flusher(tmp_path):
    """Over half the buffer held: half of each batch is built here, half in the
    helper, and each object holds both halves (two gzip members)."""
    small = {"buffer_max_bytes": 200_000, "flush_max_bytes": 120_000, "flush_max_records": 10_000}
    assisted, assisted_reg = run(tmp_path / "process", "process", **small)
    reference, reference_reg = run(tmp_path / "thread", "thread", **small)
    snap = assisted.stats.snapshot()
    assert snap["encoder_assists"] >= 1 and snap["encoder_fallbacks"] == 0
    assert by_id(tmp_path / "process") == by_id(tmp_path / "thread")
    assert snap["records_written"] == reference.stats.get("records_written") == 302
    assert sum(snap["dropped"].values()) == 0
    assert histogram_lines(assisted_reg) == histogram_lines(reference_reg)
    members = [gzip_members(p.read_bytes()) for p in (tmp_path / "process").rglob("*.jsonl.gz")]
    assert max(members) == 2  # an object built in two halves


def gzip_members(data):
    n = 0
    while data:
        z = zlib.decompressobj(31)
        z.decompress(data)
        assert z.eof
        data, n = z.unused_data, n + 1
    return n


def test_tally_of_scores_and_odd_values_equals_observing_each_value():
    """Ranking scores and predictions of every kind a record can hold: only
    finite numbers (not bools) count, per label set, sums in row order."""
    import numpy as np

    odd = [0.3, 1, True, None, "0.5", float("nan"), float("inf"), -float("inf"), 2**70, -3]
    records = [
        {
            "model": {"name": "rk", "version": "7"},
            "rows": [
                {"position": i, "score": s, "prediction": odd[(i + 3) % len(odd)]}
                for i, s in enumerate([*odd, np.float64(0.7), 0.1 * 7, 1e-300])
            ],
        },
        {"model": {"name": "m", "version": None}, "rows": [{"prediction": {"p": 0.2, "q": "x"}}]},
        {"model": {"name": "m"}, "rows": [{"features": {"a": 1}}, {"prediction": 0.9}]},
        {"model": None, "rows": None},
        {"model": {"name": "m"}, "rows": []},
    ]
    registry = CollectorRegistry()
    metrics = PredictionMetrics(registry, BUCKETS)
    tally = metrics.tally()
    for r in records:
        tally.add(r)
    metrics.apply(tally.take())

    ours = histogram_lines(registry)
    assert any(line.startswith("modeltap_ranking_score_bucket") for line in ours)
    assert ours == observe_each(records)
