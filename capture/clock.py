"""Clocks: the system clock, and a manual one for tests and simulations."""

from __future__ import annotations

import threading
import time


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when told to (``advance``). Thread-safe.

    >>> clock = ManualClock(start=1_700_000_000.0)
    >>> clock.advance(5)
    >>> clock.monotonic()
    5.0
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._lock = threading.Lock()
        self._wall = start
        self._mono = 0.0

    def time(self) -> float:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._wall += seconds
            self._mono += seconds
