"""Run benchmarks: ``python -m loadtest [capture] [payloads] [proxy] [threads] [neighbour]
[variants] [profile] [monitor] [readpaths] [soak] [--quick]`` (``profile`` also takes
``--no-reference``; ``monitor`` ``--full`` and ``--pad-reference``; ``threads`` and
``variants`` ``--seconds``, ``--repeat``, ``--conns``; ``neighbour`` those and ``--period``;
``soak`` ``--minutes``, ``--rate``, ``--outage-s``)."""

from __future__ import annotations

import sys

from loadtest import (
    bench_capture,
    bench_monitor,
    bench_neighbour,
    bench_payloads,
    bench_profile,
    bench_proxy,
    bench_readpaths,
    bench_threads,
    bench_variants,
    soak,
)

SUITES = {
    "capture": bench_capture.main,
    "payloads": bench_payloads.main,
    "proxy": bench_proxy.main,
    "threads": bench_threads.main,
    "neighbour": bench_neighbour.main,
    "variants": bench_variants.main,
    "profile": bench_profile.main,
    "monitor": bench_monitor.main,
    "readpaths": bench_readpaths.main,
    "soak": soak.main,
}


def main(argv: list[str]) -> int:
    names = [a for a in argv if not a.startswith("-")] or list(SUITES)
    flags = [a for a in argv if a.startswith("-")]
    for name in names:
        if name not in SUITES:
            print(f"unknown suite {name!r}; choose from {', '.join(SUITES)}", file=sys.stderr)
            return 2
        SUITES[name](flags)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
