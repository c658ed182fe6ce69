"""The mypyc build (``setup.py``): what it compiles, that the compiled modules
are the ones in use, that a stale build is noticed, and that compiled code on
a background thread still lets the request path run."""

from __future__ import annotations

import ast
import math
import os
import pickle
import threading
import time
from pathlib import Path

import capture
import capture.record
import server.proxy
from capture.buffer import encode_items
from capture.capturer import RecordBuilder
from capture.settings import CaptureSettings
from capture.stats import CaptureStats
from loadtest.bench_payloads import proxied_exchange
from server.metrics import PredictionTally
from tests.conftest import stale_sources

ROOT = Path(__file__).resolve().parent.parent


def compiled_paths() -> list[str]:
    """``setup.COMPILED``, read without running setup.py."""
    for node in ast.parse((ROOT / "setup.py").read_text()).body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "COMPILED" for t in targets):
                assert node.value is not None
                paths: list[str] = ast.literal_eval(node.value)
                return paths
    raise AssertionError("setup.py has no COMPILED list")


def module_name(path: str) -> str:
    parts = Path(path).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_compiled_list_names_sources_that_can_be_compiled() -> None:
    paths = compiled_paths()
    assert len(paths) == len(set(paths))
    for path in paths:
        assert (ROOT / path).is_file(), path
        assert path.split("/")[0] in ("capture", "server"), path
    # long batch loops on background threads of the capturing process, and
    # an async generator mypyc cannot compile, stay interpreted (setup.py)
    # and server.metrics' PredictionTally must unpickle in the helper
    for left_out in (
        "capture/offload.py",
        "capture/traffic.py",
        "server/upstream.py",
        "server/metrics.py",
    ):
        assert left_out not in paths


def test_the_compiled_modules_are_the_ones_in_use() -> None:
    names = sorted(module_name(p) for p in compiled_paths())
    if os.environ.get("MODELTAP_PURE_PYTHON", "") not in ("", "0"):
        assert capture.compiled_modules() == []
        return
    # optional extensions fail quietly without a compiler: say so here
    assert capture.compiled_modules() == names, (
        "the install did not compile what setup.py lists: is there a C compiler? "
        "(MODELTAP_PURE_PYTHON=1 ./dev test tests the interpreted package)"
    )
    for module in (capture.record, server.proxy):
        assert module.__file__ is not None and not module.__file__.endswith(".py")


def test_a_source_newer_than_the_build_is_reported(tmp_path: Path) -> None:
    (tmp_path / "capture").mkdir()
    (tmp_path / "server").mkdir()
    old = tmp_path / "capture" / "record.py"
    new = tmp_path / "server" / "proxy.py"
    for path in (old, new):
        path.write_text("x = 1\n")
    assert stale_sources(tmp_path) == []  # nothing compiled: nothing stale
    lib = tmp_path / "modeltap_native__mypyc.cpython-311-x86_64-linux-gnu.so"
    lib.write_bytes(b"")
    os.utime(old, (1_000, 1_000))
    os.utime(lib, (2_000, 2_000))
    os.utime(new, (3_000, 3_000))
    assert stale_sources(tmp_path) == ["server/proxy.py"]


def test_a_batch_encoded_on_a_thread_lets_other_threads_run() -> None:
    """Compiled, ``encode_items`` and all it calls are native code that would
    hold the GIL for the whole batch; it releases it every
    ``GIL_YIELD_EVERY`` records. The main thread, standing for the request
    path, must get to run many times while a batch is encoded."""
    builder = RecordBuilder(CaptureSettings(model="toy"), stats=CaptureStats())
    # predict records: their whole path is compiled (a ranking record's calls
    # into interpreted code release the GIL anyway); ~0.3 s of work
    items = [proxied_exchange(i, "predict") for i in range(30_000)]
    done = threading.Event()

    def encode() -> None:
        try:
            groups, failed = encode_items(items, builder.process, 1, "toy")
            assert failed == 0 and sum(n for _, n in groups.values()) == len(items)
        finally:
            done.set()

    worker = threading.Thread(target=encode)
    gaps = []
    last = start = time.perf_counter()
    worker.start()
    while not done.is_set():
        time.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    worker.join()
    total = last - start
    assert total > 0.05, "the batch was too quick to show anything"
    # measured compiled: with the releases the main thread woke ~250 times in
    # 0.3 s, its longest wait 2.5 ms; without them 6 times, longest 76 ms
    assert len(gaps) >= total / 0.02, (len(gaps), total)
    assert max(gaps) < total / 3, (max(gaps), total)


def test_what_the_helper_is_started_with_survives_pickle() -> None:
    """``EncoderProcess`` pickles the settings and the proxy's tally to the
    helper; a mypyc native class would not unpickle (why ``server.metrics``
    is not compiled), and the helper would never start."""
    bounds = [0.25 * k for k in range(5)] + [math.inf]
    settings = CaptureSettings(model="toy")
    tally = PredictionTally(bounds, bounds)
    settings2, tally2 = pickle.loads(pickle.dumps((settings, tally)))
    assert settings2 == settings
    builder = RecordBuilder(settings, stats=CaptureStats())
    record = builder.process(proxied_exchange(1, "predict"))
    assert record is not None
    tally.add(record)
    tally2.add(record)
    assert tally2.take() == tally.take() != {}
