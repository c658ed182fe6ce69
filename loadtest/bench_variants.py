"""Where capture's cost lands, found by cutting parts of it out (issue 4).

    python -m loadtest variants [--seconds=10] [--repeat=3] [--conns=16]

Starts the toy model, the proxy with capture sampled out (rate 0), and one
proxy with capture on (100%) for each ``loadtest.proxy_variant`` variant:
``whole`` (as shipped), ``no-build`` (the helper answers each batch at once,
with nothing built), ``no-send`` (the flusher packs each batch, then drops
it), ``no-pack`` (the flusher drops each batch as sealed) and ``no-keep``
(as ``no-pack``, with the packed exchanges not held in memory). All of them
start as ``python -m loadtest proxy`` starts its rows.

Each round drives capture off with wrk, then every variant, in an order that
rotates from round to round, each after the servers are quiet
(``bench_proxy.settle``). For each run it prints requests/s, the ratio to
that round's capture off, and the helper's CPU per request. The summary
gives each variant's median ratio. A variant's distance from ``whole`` is
the cost of the part it cuts out. Needs wrk.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from loadtest import bench_proxy
from loadtest.proxy_variant import VARIANTS
from loadtest.sysinfo import free_ports, tree_cpu_seconds


def rows(tmp: Path) -> bench_proxy.Rows:
    """The model, capture off, and a capture-on proxy per variant (name -> row)."""
    base = bench_proxy._rows(tmp)
    on = base[bench_proxy.CAPTURE_ON][2]
    out = {name: base[name] for name in (bench_proxy.MODEL, bench_proxy.CAPTURE_OFF)}
    for variant, port in zip(VARIANTS, free_ports(len(VARIANTS)), strict=True):
        env = {**on, "MODELTAP_PORT": str(port), "MODELTAP_SINK": str(tmp / variant)}
        cmd = [sys.executable, "-m", "loadtest.proxy_variant", variant]
        out[variant] = (f"http://127.0.0.1:{port}", cmd, env)
    return out


def main(flags: list[str]) -> None:
    parsed = bench_proxy.run_flags(flags, repeat=3)
    if parsed is None:
        return
    seconds, repeat, conns = parsed
    off = bench_proxy.CAPTURE_OFF
    with bench_proxy.capture_pair(rows) as (table, pids, script):
        ratios: dict[str, list[float]] = {v: [] for v in VARIANTS}

        def run(name: str) -> tuple[float, float]:
            """(requests/s, the helper's CPU µs a request)."""
            bench_proxy.settle(pids.values())
            helper = tree_cpu_seconds(pids[name])[1]
            r = bench_proxy.wrk(table[name][0], conns, seconds, script, bench_proxy.PATH)
            helper = tree_cpu_seconds(pids[name])[1] - helper
            return r["rps"], helper * 1e6 / max(r["requests"], 1.0)

        print(f"# wrk -t1 -c{conns}, {seconds}s a run, predict payload")
        print("| round | proxy | req/s | of capture off | helper CPU µs/req |")
        print("| --- | --- | --- | --- | --- |")
        for round_ in range(repeat):
            base, _ = run(off)
            print(f"| {round_ + 1} | {off} | {base:,.0f} | | |", flush=True)
            order = VARIANTS[round_ % len(VARIANTS) :] + VARIANTS[: round_ % len(VARIANTS)]
            for variant in order:
                rps, helper_us = run(variant)
                ratios[variant].append(rps / base)
                print(
                    f"| {round_ + 1} | capture on, {variant} | {rps:,.0f} | {rps / base:.2f} "
                    f"| {helper_us:.1f} |",
                    flush=True,
                )
        print()
        print("| capture on | median of capture off | runs |")
        print("| --- | --- | --- |")
        for variant in VARIANTS:
            runs = " ".join(f"{r:.2f}" for r in ratios[variant])
            print(f"| {variant} | **{statistics.median(ratios[variant]):.2f}** | {runs} |")
