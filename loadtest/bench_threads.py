"""Where capture's cost lands in the proxy, thread by thread (issue 4).

    python -m loadtest threads [--seconds=10] [--repeat=2] [--conns=16]

The toy model, the proxy with capture on (100%) and with capture sampled
out (rate 0), as ``python -m loadtest proxy`` starts them; wrk drives each
proxy in turn, ``--repeat`` times, alternating. Around each run, every
thread's ``/proc/<pid>/task/<tid>/schedstat`` (CPU time, time runnable but
waiting for a core), ``stat`` (minor page faults) and ``status`` (voluntary and involuntary context
switches) is read for the proxy, its children (the encoder helper) and the
model, and printed per request. The proxy's event loop is the thread whose
id is the process id. A machine row per run adds the idle time of all
cores, the kernel's time (system, irq, softirq: counted in the threads'
CPU too) and wrk's CPU, each per request, and how long the run waited
for the servers to be quiet (``bench_proxy.settle``). Needs wrk.
"""

from __future__ import annotations

import contextlib
import os
import resource

from loadtest import bench_proxy
from loadtest.sysinfo import children

#: (run ns, run-queue wait ns, voluntary switches, involuntary switches, minor page faults)
Counters = tuple[int, int, int, int, int]


def _thread_counters(pid: int) -> dict[int, Counters]:
    out: dict[int, Counters] = {}
    with contextlib.suppress(FileNotFoundError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                    run, wait, _ = map(int, fh.read().split())
                with open(f"/proc/{pid}/task/{tid}/status") as fh:
                    status = dict(
                        line.split(":\t", 1) for line in fh.read().splitlines() if ":\t" in line
                    )
                with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                    minflt = int(fh.read().rsplit(")", 1)[1].split()[7])  # field 10 of proc(5)
            except FileNotFoundError:  # the thread ended meanwhile
                continue
            out[int(tid)] = (
                run,
                wait,
                int(status["voluntary_ctxt_switches"]),
                int(status["nonvoluntary_ctxt_switches"]),
                minflt,
            )
    return out


def _machine() -> tuple[float, float, float]:
    """Seconds of (idle, kernel: system + irq + softirq) summed over all
    cores so far, and wrk's CPU seconds (this process's finished children)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = (fields[3] + fields[4]) / tick  # idle + iowait
    kernel = (fields[2] + fields[5] + fields[6]) / tick
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return idle, kernel, child.ru_utime + child.ru_stime


def _snapshot(roles: dict[int, str]) -> dict[tuple[str, int], Counters]:
    return {
        (role, tid): c for pid, role in roles.items() for tid, c in _thread_counters(pid).items()
    }


def main(flags: list[str]) -> None:
    parsed = bench_proxy.run_flags(flags, repeat=2)
    if parsed is None:
        return
    seconds, repeat, conns = parsed
    with bench_proxy.capture_pair() as (rows, pids, script):
        print(
            f"# per-thread CPU under wrk -t1 -c{conns}, {seconds}s a run, predict payload; "
            "µs per request (switches per request)"
        )
        print(
            "| proxy | run | req/s | thread | CPU µs | run-queue wait µs | vol. | invol. "
            "| minor faults |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for run in range(1, repeat + 1):
            for name in (bench_proxy.CAPTURE_ON, bench_proxy.CAPTURE_OFF):
                pid = pids[name]
                roles = {pid: "proxy", pids[bench_proxy.MODEL]: "model"}
                roles.update({int(c): "helper" for c in children(pid)})
                waited = bench_proxy.settle(pids.values())
                before, machine_before = _snapshot(roles), _machine()
                r = bench_proxy.wrk(rows[name][0], conns, seconds, script, bench_proxy.PATH)
                after, machine_after = _snapshot(roles), _machine()
                n = max(r["requests"], 1.0)
                idle, kernel, wrk_cpu = (
                    (a - b) * 1e6 / n for a, b in zip(machine_after, machine_before, strict=True)
                )
                print(
                    f"| {name} | {run} | {r['rps']:,.0f} | (machine: idle {idle:.1f}, "
                    f"kernel {kernel:.1f} of all threads' CPU; wrk {wrk_cpu:.1f}; "
                    f"started after {waited:.2f}s of quiet-waiting) | | | | | |",
                    flush=True,
                )
                for (role, tid), now in sorted(after.items()):
                    was = before.get((role, tid), (0, 0, 0, 0, 0))
                    run_ns, wait_ns, vol, invol, faults = (
                        a - b for a, b in zip(now, was, strict=True)
                    )
                    if run_ns < 0.01 * seconds * 1e9:  # idle threads: under 1% of a core
                        continue
                    thread = "event loop" if role == "proxy" and tid == pid else f"{role} {tid}"
                    print(
                        f"| {name} | {run} | {r['rps']:,.0f} | {thread} | {run_ns / n / 1e3:.1f} | "
                        f"{wait_ns / n / 1e3:.1f} | {vol / n:.2f} | {invol / n:.2f} | "
                        f"{faults / n:.3f} |",
                        flush=True,
                    )
