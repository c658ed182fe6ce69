"""The profile and monitor benchmarks run end to end on tiny inputs and print
their tables (``python -m loadtest profile monitor --quick``): no timing is
checked, only that every figure came out. The whylogs reference is skipped
(it needs its own venv); generated data goes to a temporary directory."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtest import bench_monitor, bench_profile, bench_threads, bench_variants

NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"


@pytest.fixture
def bench_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MODELTAP_BENCH_DIR", str(tmp_path))
    monkeypatch.setattr(bench_profile, "BENCH_DIR", tmp_path)
    monkeypatch.setattr(bench_monitor, "BENCH_DIR", tmp_path)
    return tmp_path


def test_profile_suite_prints_its_table(
    bench_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench_profile.main(["--quick", "--rows=4000", "--no-reference"])
    out = capsys.readouterr().out
    for how in ("strings as Arrow arrays", "strings as lists of `str`"):
        row = re.search(rf"^\| modeltap `DatasetProfile.update_columns`, {how} \|(.*)$", out, re.M)
        assert row, out
        cells = [c.strip() for c in row.group(1).split("|") if c.strip()]
        assert re.fullmatch(f"{NUMBER} rows/s", cells[0])
        assert re.fullmatch(f"{NUMBER} rows/s", cells[1])
        assert re.fullmatch(rf"{NUMBER} MB \({NUMBER} MB\)", cells[2])
    assert "string columns' profiles equal to the lists': yes" in out
    assert "reference: whylogs not run: skipped" in out
    assert (bench_dir / "profile-frame-4000.npz").exists()


def test_monitor_suite_prints_its_table(
    bench_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bench_monitor.main(
        ["--quick", "--rows=2000", "--train-rows=2000", "--no-fixed", "--pad-reference"]
    )
    out = capsys.readouterr().out
    for model, records in (("scorer", "2,000"), ("ranker", "200")):
        row = re.search(rf"^\| {model} \(.*?\) \|(.*)$", out, re.M)
        assert row, out
        cells = [c.strip() for c in row.group(1).split("|")][:-1]
        assert cells[:2] == [records, "2,000"], cells
        assert re.fullmatch(NUMBER, cells[2])  # objects
        assert re.fullmatch(f"{NUMBER} s", cells[3]) and re.fullmatch(f"{NUMBER} s", cells[4])
        assert re.fullmatch(NUMBER, cells[5])  # rows/s
        assert re.fullmatch(f"{NUMBER} MB", cells[6])
        read = rf"^{model}: (\d+) of \1 capture objects read by the Arrow path; fallbacks: none$"
        assert re.search(read, out, re.M), out
    assert "target peak RSS" in out
    for model in ("scorer", "ranker"):  # the malloc pad against glibc's defaults
        for label in ("64 MiB pad \\(default\\)", "glibc's defaults"):
            figures = rf"{NUMBER} s \| {NUMBER} s \| {NUMBER} \| {NUMBER} MB"
            assert re.search(rf"^\| {model} \| {label} \| {figures} \|$", out, re.M), out


def test_suites_are_registered() -> None:
    from loadtest import bench_neighbour
    from loadtest.__main__ import SUITES

    assert SUITES["profile"] is bench_profile.main and SUITES["monitor"] is bench_monitor.main
    assert SUITES["threads"] is bench_threads.main
    assert SUITES["neighbour"] is bench_neighbour.main
    assert SUITES["variants"] is bench_variants.main


@pytest.mark.parametrize("variant", ["whole", "no-build", "no-send", "no-pack", "no-keep"])
def test_proxy_variants_cut_what_they_say(variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``python -m loadtest variants`` runs the proxy with parts of the
    capture cut out (``loadtest.proxy_variant``). Through the real helper
    handle: ``whole`` builds the records in the helper; ``no-build`` starts a
    helper that takes the batch and builds nothing; the others start no
    helper at all, and ``no-keep`` has the capturer queue a shared token in
    place of each packed exchange."""
    from capture import capturer
    from capture.offload import EncoderProcess, pack_one
    from capture.settings import CaptureSettings
    from capture.stats import CaptureStats
    from capture.types import Exchange
    from loadtest import proxy_variant

    proxy_variant.patch(variant, monkeypatch.setattr)
    stats = CaptureStats()
    enc = EncoderProcess(CaptureSettings(model="m"), tally=None, on_tally=None, stats=stats)
    items = [pack_one(Exchange.of(b'{"instances": [[1, 2]]}', b'{"predictions": [0.5]}'))] * 3
    try:
        groups = enc.encode(items)
        helper = enc.pid
    finally:
        enc.close()
    assert stats.get("encoder_fallbacks") == 0
    if variant == "whole":
        assert groups is not None and sum(n for _, n in groups.values()) == 3
    else:
        assert groups == {}
    assert (helper is not None) == (variant in ("whole", "no-build"))
    packed = capturer.pack_one(Exchange.of(b"{}", b"{}"))
    assert (packed == proxy_variant._TOKEN) == (variant == "no-keep")


def test_proxy_variant_refuses_an_unknown_name() -> None:
    from loadtest.proxy_variant import patch

    with pytest.raises(SystemExit, match="no-build"):
        patch("no-such-variant", lambda *_: None)


def test_settle_waits_while_a_server_is_busy() -> None:
    """The proxy benchmarks start each run once the servers are quiet, so
    a capture helper still building the last run's batch does not slow the
    next run down (``bench_proxy.settle``)."""
    from loadtest.bench_proxy import SETTLE_WINDOW_S, settle

    busy_s = 1.5
    code = (
        "import time\n"
        "end = time.monotonic() + float(__import__('sys').argv[1])\n"
        "while time.monotonic() < end: pass\n"
        "print('idle', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(busy_s)], stdout=subprocess.PIPE)
    try:
        started = time.monotonic()
        waited = settle([proc.pid], timeout=30)
        assert proc.stdout is not None and proc.stdout.readline() == b"idle\n"
        # it returned only once the spinning had stopped, and soon after
        assert waited >= busy_s - 3 * SETTLE_WINDOW_S
        assert time.monotonic() - started < busy_s + 10
        assert settle([proc.pid], timeout=30) < 4 * SETTLE_WINDOW_S  # quiet: one window
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_soak_suite_prints_its_table(capsys: pytest.CaptureFixture[str]) -> None:
    """A few seconds of the soak (outage and restart included) on the real stack."""
    from loadtest import soak

    soak.main(["--minutes=0.25", "--rate=60", "--outage-s=2"])
    out = capsys.readouterr().out
    figures = dict(re.findall(r"^\| ([^|]+?) \| ([^|]+?) \|$", out, re.M))
    assert figures["**lost** (answered, no record)"] == "**0**", out
    assert (
        figures["duplicated event ids"] == "0" and figures["proxy exit codes (SIGTERM)"] == "0, 0"
    )
    sent = int(figures["requests sent"].replace(",", ""))
    answered = int(figures["answered (2xx)"].replace(",", ""))
    assert sent > 500 and answered > 0.8 * sent  # only the restart gap goes unanswered
    kept = int(figures["records kept"].replace(",", ""))
    assert (
        kept
        == answered
        == int(figures["records in S3 (distinct event ids)"].split()[0].replace(",", ""))
    )
    phases = re.findall(
        r"^\| (before the outage|S3 outage|after the outage|proxy restart.*?|after the restart) \|",
        out,
        re.M,
    )
    assert len(phases) == 5 and "Proxy RSS (MB)" in out


def test_soak_is_registered() -> None:
    from loadtest import soak
    from loadtest.__main__ import SUITES

    assert SUITES["soak"] is soak.main


def test_helper_batch_cost_measures_the_proxy_benchmarks_records() -> None:
    from capture.capturer import RecordBuilder
    from capture.settings import CaptureSettings
    from capture.stats import CaptureStats
    from loadtest import bench_payloads

    builder = RecordBuilder(CaptureSettings(model="toy"), stats=CaptureStats())
    predict = builder.process(bench_payloads.proxied_exchange(0, "predict"))
    rank = builder.process(bench_payloads.proxied_exchange(1, "rank"))
    assert predict is not None and rank is not None
    assert predict["parse"] == {"adapter": "kserve_v1", "error": None}
    assert len(predict["rows"]) == 1 and predict["rows"][0]["prediction"] == 0.731
    # The ranking record carries what the toy model reports: request-level and item lookups.
    assert rank["parse"] == {"adapter": "ranking", "error": None}
    assert len(rank["rows"]) == 100 and rank["lookups"] == {"ltv": 120.5, "tier": "gold"}
    assert all("lookups" in row and "rank" in row for row in rank["rows"])
    for payload, n in (("predict", 50), ("rank", 5)):
        assert 0 < bench_payloads.helper_batch_us(payload, n, repeats=1) < 1e6
        assert 0 < bench_payloads.helper_floor_us(payload, n, repeats=1) < 1e6


def test_readpaths_suite_reads_every_shape_by_the_arrow_path(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from loadtest import bench_readpaths

    bench_readpaths.main(["--quick"])
    out = capsys.readouterr().out
    for shape, rows in (("scorer", "500"), ("ranker", "5,000"), ("toy ranking model", "10,000")):
        row = re.search(rf"^\| {shape} \(.*?\) \|(.*)$", out, re.M)
        assert row, out
        cells = [c.strip() for c in row.group(1).split("|")][:-1]
        assert cells[1] == rows, cells
        assert all(re.fullmatch(NUMBER, c) for c in cells[2:5]), cells
        assert cells[5] == "Arrow", cells
