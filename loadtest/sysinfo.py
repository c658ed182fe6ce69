"""Free loopback ports and process memory from ``/proc``, for the benchmarks,
the soak, ``./dev stack`` and the tests. Standard library only, so importing
it adds nothing to the memory a benchmark measures."""

from __future__ import annotations

import socket


def free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports (all held open while choosing)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]


def status_mb(field: str, pid: int | str = "self") -> float:
    """A ``/proc/PID/status`` size field (``VmRSS``, ``VmHWM``...) in MB; NaN if absent."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def rss_mb(pid: int | str = "self") -> float:
    return status_mb("VmRSS", pid)


def children(pid: int | str) -> list[int]:
    """Direct child processes of ``pid`` (from ``/proc/PID/task/*/children``)."""
    import glob

    found: list[int] = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(path) as fh:
                found.extend(int(c) for c in fh.read().split())
        except OSError:  # the thread ended meanwhile
            continue
    return found


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU time a process has used (``/proc/PID/stat``), in seconds."""
    import os

    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int | str) -> tuple[float, float]:
    """CPU seconds of ``pid`` and of its direct children together (the
    proxy's encoder helper, nginx's worker); a child that ended is left out."""
    kids = 0.0
    for child in children(pid):
        try:
            kids += cpu_seconds(child)
        except OSError:
            continue
    return cpu_seconds(pid), kids


def tree_rss_mb(pid: int | str) -> float:
    """RSS of ``pid`` plus its direct children (the proxy and its encoder helper)."""
    total = rss_mb(pid)
    for child in children(pid):
        try:
            total += rss_mb(child)
        except OSError:
            continue
    return total


def peak_rss_mb(pid: int | str = "self") -> float:
    """A process's own peak RSS. Not ``ru_maxrss``: Linux carries the parent's
    RSS at fork/exec into a child's ``ru_maxrss``."""
    return status_mb("VmHWM", pid)
