"""What the capture helper's CPU alone costs the proxy on this machine (issue 4).

    python -m loadtest neighbour [--seconds=10] [--repeat=3] [--conns=16] [--period=0.2]

The proxy benchmark's capture on / capture off ratio asks how much slower
the proxy is when every exchange becomes a record. On a 2-core machine that
also runs wrk and the model, the records are built by the capture's helper
process on the same two cores. This benchmark separates that from
everything the capture does in the proxy's own process:

1. a capture-on run (wrk on the proxy at 100% sampling), during which the
   helper's CPU is read from ``/proc``: its share of one core;
2. the capture-off proxy (sampled out) alone;
3. the capture-off proxy with a *burner* beside it: a process that only
   spins, at the helper's nice level (``capture.offload.HELPER_NICE``),
   for that same share of a core (CPU time, owed every ``--period``
   seconds and paid in one burst). It touches no memory and does no I/O,
   and the proxy does not talk to it.

If capture off with the burner is about as slow as capture on, the ratio
is the price of the helper's CPU on shared cores, whatever the request
path does; and only building records with less CPU (or a core of its own)
can raise it. The burner's own CPU is measured too. Runs alternate
``--repeat`` times; each waits for the servers to be quiet first
(``bench_proxy.settle``). Needs wrk.
"""

from __future__ import annotations

import contextlib
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

from capture.offload import HELPER_NICE
from loadtest import bench_proxy
from loadtest.sysinfo import cpu_seconds, tree_cpu_seconds

#: The burner: owes ``duty * period`` seconds of CPU every ``period`` and
#: spins until it has paid (CPU time, not wall time: like the helper, it
#: has a given amount of work to do however busy the cores are), then
#: sleeps to the next period.
BURNER = """
import os, sys, time
duty, period, nice = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
os.nice(nice)
tick = time.monotonic()
while True:
    start = time.process_time()
    while time.process_time() - start < duty * period:
        pass
    tick += period
    rest = tick - time.monotonic()
    if rest > 0:
        time.sleep(rest)
"""


def main(flags: list[str]) -> None:
    parsed = bench_proxy.run_flags(flags, repeat=3)
    if parsed is None:
        return
    seconds, repeat, conns = parsed
    period = float(bench_proxy._flag(flags, "--period", "0.2"))
    burner_row = f"{bench_proxy.CAPTURE_OFF}, beside a burner"
    with bench_proxy.capture_pair() as (rows, pids, script):
        rates: dict[str, list[float]] = {
            bench_proxy.CAPTURE_ON: [],
            bench_proxy.CAPTURE_OFF: [],
            burner_row: [],
        }
        shares: dict[str, list[float]] = {"helper": [], "burner": []}

        def run(name: str) -> float:
            bench_proxy.settle(pids.values())
            r = bench_proxy.wrk(rows[name][0], conns, seconds, script, bench_proxy.PATH)
            return r["rps"]

        print(
            f"# wrk -t1 -c{conns}, {seconds}s a run, predict payload; burner at nice "
            f"+{HELPER_NICE}, bursts every {period}s"
        )
        print("| round | row | req/s | CPU share of one core |")
        print("| --- | --- | --- | --- |")
        for round_ in range(1, repeat + 1):
            helper_cpu = tree_cpu_seconds(pids[bench_proxy.CAPTURE_ON])[1]  # its children
            t0 = time.monotonic()
            rps = run(bench_proxy.CAPTURE_ON)
            helper_cpu = tree_cpu_seconds(pids[bench_proxy.CAPTURE_ON])[1] - helper_cpu
            share = helper_cpu / (time.monotonic() - t0)
            rates[bench_proxy.CAPTURE_ON].append(rps)
            shares["helper"].append(share)
            print(f"| {round_} | {bench_proxy.CAPTURE_ON} | {rps:,.0f} | helper {share:.3f} |")

            rps = run(bench_proxy.CAPTURE_OFF)
            rates[bench_proxy.CAPTURE_OFF].append(rps)
            print(f"| {round_} | {bench_proxy.CAPTURE_OFF} | {rps:,.0f} | |", flush=True)

            with _burner(share, period) as burner:
                t0 = time.monotonic()
                used = cpu_seconds(burner.pid)
                rps = run(bench_proxy.CAPTURE_OFF)
                burned = (cpu_seconds(burner.pid) - used) / (time.monotonic() - t0)
            rates[burner_row].append(rps)
            shares["burner"].append(burned)
            print(f"| {round_} | {burner_row} | {rps:,.0f} | burner {burned:.3f} |", flush=True)

        off = statistics.median(rates[bench_proxy.CAPTURE_OFF])
        print()
        print("| row | median req/s | of capture off | median CPU share |")
        print("| --- | --- | --- | --- |")
        for name, share_of in (
            (bench_proxy.CAPTURE_OFF, None),
            (bench_proxy.CAPTURE_ON, "helper"),
            (burner_row, "burner"),
        ):
            median = statistics.median(rates[name])
            cpu = f"{statistics.median(shares[share_of]):.3f}" if share_of else ""
            print(f"| {name} | {median:,.0f} | {median / off:.2f} | {cpu} |")


@contextlib.contextmanager
def _burner(share: float, period: float) -> Iterator[subprocess.Popen[bytes]]:
    p = subprocess.Popen(
        [sys.executable, "-c", BURNER, str(share), str(period), str(HELPER_NICE)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield p
    finally:
        p.kill()
        p.wait()
