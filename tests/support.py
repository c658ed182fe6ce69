"""Test helpers shared across test modules (no I/O is faked here: the sinks
below write real files through ``LocalSink``; they only add a gate and a
failure switch to the ``Sink`` protocol so tests can hold or break delivery)."""

from __future__ import annotations

import gzip
import threading
from pathlib import Path
from typing import Any

import orjson

from capture.errors import SinkError
from capture.sinks.local import LocalSink


class GatedSink(LocalSink):
    """A real local sink whose puts can be held (gate) or failed (outage)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = threading.Event()
        self.gate.set()
        self.failing = False
        self.retryable = True
        self.puts = 0
        self.lock = threading.Lock()

    def put(self, key: str, data: bytes) -> None:
        self.gate.wait()
        with self.lock:
            self.puts += 1
        if self.failing:
            raise SinkError("sink is down (test outage)", retryable=self.retryable)
        super().put(key, data)


def read_objects(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Every ``.jsonl.gz`` object under ``root``: relative key -> records."""
    out = {}
    for path in sorted(root.rglob("*.jsonl.gz")):
        lines = gzip.decompress(path.read_bytes()).splitlines()
        out[str(path.relative_to(root))] = [orjson.loads(line) for line in lines if line]
    return out


def all_records(root: Path) -> list[dict[str, Any]]:
    return [r for recs in read_objects(root).values() for r in recs]


def read_then_kill(child: Any, until: Any) -> list[str]:
    """Read the child's stdout lines until ``until(line)``, then SIGKILL it.

    The child is dead on return, whatever happened.
    """
    import signal

    lines: list[str] = []
    try:
        while True:
            line = child.stdout.readline()
            if not line:
                raise AssertionError(f"child ended early after {lines[-3:]}")
            lines.append(line.strip())
            if until(lines[-1]):
                break
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return lines


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
