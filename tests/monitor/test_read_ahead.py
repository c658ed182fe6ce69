"""Reading ahead in-process (``execute._in_process``): objects are read on
``READ_AHEAD`` threads while one is profiled. Whatever order the reads end
in, the partials come back in the objects' order and the window's profiles
are the same, byte for byte, as read one at a time; a read that fails sends
its object the row path without touching the others; stopping early leaves
no read running."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from capture.profile import DatasetProfile
from monitor_job import columnar, execute
from monitor_job.execute import Partial, profile_object, profile_window
from monitor_job.locations import ObjectRef
from tests.monitor.test_columnar import END, START, T0, digest, record, write

OBJECTS = 7


def _rows(i: int, j: int) -> list[dict[str, Any]]:
    return [
        {"features": {"f": i * 100 + j + k / 4, "g": f"v{(i + j + k) % 3}"}, "prediction": k / 2}
        for k in range(1 + j % 3)
    ]


def objects(tmp_path: Path) -> list[ObjectRef]:
    """Object ``i`` holds ``i + 1`` records (fewer rows than KLL's k: exact sketches)."""
    refs = []
    for i in range(OBJECTS):
        recs = [
            record(j, _rows(i, j), t=T0 + timedelta(minutes=i, seconds=j), version=str(i % 2))
            for j in range(i + 1)
        ]
        refs.append(write(tmp_path / "caps" / f"h-1-{i}.jsonl.gz", recs))
    return refs


def _window(refs: list[ObjectRef]) -> Partial:
    return profile_window(refs, START, END, segments=["context.tier"], progress=False)


def _slow_loads(monkeypatch: pytest.MonkeyPatch, delay: dict[str, float]) -> list[str]:
    """``columnar.load`` sleeping ``delay[key]`` first; returns the keys as loads start."""
    started: list[str] = []
    load = columnar.load

    def slow(ref: ObjectRef, **kw: Any) -> columnar.Loaded:
        started.append(ref.key)
        time.sleep(delay.get(ref.key, 0.0))
        return load(ref, **kw)

    monkeypatch.setattr(columnar, "load", slow)
    return started


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("arrow-read")]


def test_partials_come_in_the_objects_order_whatever_order_reads_end_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refs = objects(tmp_path)
    one_by_one = _window(refs)  # first: before any patching
    # Earlier objects read slower, so the reads ahead end first.
    _slow_loads(monkeypatch, {r.key: 0.05 * (OBJECTS - i) for i, r in enumerate(refs)})
    monkeypatch.setattr(execute, "READ_AHEAD", 3)
    got = list(execute._in_process(refs, START, END, {}))
    assert [p.records for p in got] == [i + 1 for i in range(OBJECTS)]
    assert all(p.arrow_objects == 1 for p in got)
    ahead = _window(refs)
    assert ahead.arrow_objects == OBJECTS
    assert ahead.to_bytes() == one_by_one.to_bytes()


@pytest.mark.parametrize("read_ahead", [1, 2, 5, 10])
def test_the_window_is_the_same_for_any_read_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_ahead: int
) -> None:
    refs = objects(tmp_path)
    monkeypatch.setenv(execute.ARROW_ENV, "0")
    rows = _window(refs)  # the row path, one object at a time
    monkeypatch.delenv(execute.ARROW_ENV)
    monkeypatch.setattr(execute, "READ_AHEAD", read_ahead)
    ahead = _window(refs)
    assert (ahead.arrow_objects, rows.arrow_objects) == (OBJECTS, 0)
    rows.arrow_objects = OBJECTS  # how objects were read is the only difference
    assert ahead.to_bytes() == rows.to_bytes()


def test_a_read_that_fails_sends_only_its_object_the_row_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refs = objects(tmp_path)
    want = _window(refs)
    bad = refs[2].key
    started = _slow_loads(monkeypatch, {r.key: 0.05 for r in refs})
    load = columnar.load

    def failing(ref: ObjectRef, **kw: Any) -> columnar.Loaded:
        if ref.key == bad:  # while the objects beside it are being read
            time.sleep(0.02)
            raise RuntimeError("boom")
        return load(ref, **kw)

    monkeypatch.setattr(columnar, "load", failing)
    got = _window(refs)
    assert sorted(started) == sorted(r.key for r in refs if r.key != bad)
    assert (got.arrow_objects, got.fallbacks) == (OBJECTS - 1, {"error": 1})
    got.arrow_objects, got.fallbacks = want.arrow_objects, want.fallbacks
    assert got.to_bytes() == want.to_bytes()


def test_stopping_early_cancels_the_reads_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refs = objects(tmp_path)
    started = _slow_loads(monkeypatch, {r.key: 0.1 for r in refs[1:]})
    results: Iterator[Partial] = execute._in_process(refs, START, END, {})
    first = next(results)
    assert first.records == 1
    assert _readers()  # reads ahead under way
    results.close()  # waits for the reads under way; starts no other
    assert not _readers()
    # The read submitted last may have been cancelled before it started.
    keys = [r.key for r in refs]
    assert started in (keys[: execute.READ_AHEAD], keys[: 1 + execute.READ_AHEAD])
    time.sleep(0.2)
    assert len(started) <= 1 + execute.READ_AHEAD


def test_an_error_while_profiling_stops_the_reads_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refs = objects(tmp_path)
    started = _slow_loads(monkeypatch, {r.key: 0.1 for r in refs})
    profile = execute._object_partial

    def failing(ref: ObjectRef, *args: Any, **kw: Any) -> Partial:
        if ref.key == refs[1].key:
            raise OSError("disk gone")
        return profile(ref, *args, **kw)

    monkeypatch.setattr(execute, "_object_partial", failing)
    with pytest.raises(OSError, match="disk gone"):
        _window(refs)
    assert not _readers()
    time.sleep(0.2)
    assert len(started) <= 2 + execute.READ_AHEAD  # none after the failure


@pytest.mark.parametrize("arrow", ["1", "0"])
def test_the_window_merges_what_each_objects_bytes_give(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, arrow: str
) -> None:
    """In-process partials skip the bytes a Dask task sends, not their effect:
    merged in order they give what the decoded bytes give. Many distinct
    strings, so that the frequent-items sketches purge while merging (which
    a sketch's item order decides, and a live sketch's differs)."""
    monkeypatch.setenv(execute.ARROW_ENV, arrow)
    refs = []
    for i in range(4):
        recs = [
            record(j, [{"features": {"s": f"w{(j * 7 + i * 13) % 1300}"}, "prediction": j / 9}])
            for j in range(1500)
        ]
        refs.append(write(tmp_path / "caps" / f"h-1-{i}.jsonl.gz", recs))
    want = Partial(profiles={"": DatasetProfile()})  # as profile_window starts
    for ref in refs:
        want.merge(Partial.from_bytes(profile_object(ref, None, None, segments=["context.tier"])))
    got = profile_window(refs, None, None, segments=["context.tier"], progress=False)
    assert got.whole.rows == 6000
    assert digest(got.to_bytes()) == digest(want.to_bytes())
