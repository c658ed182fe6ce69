"""Soak (issue 8): steady load through the real proxy for ten minutes, with a
30 s S3 outage and a proxy restart in the middle; nothing may be lost.

    python -m loadtest soak [--minutes=10] [--rate=400] [--outage-s=30]

The stack, all on loopback: the toy model (uvicorn, its own process), the
proxy (``python -m server``, one worker, 100% sampled, disk spool) and
SeaweedFS as S3 behind a cuttable TCP path (``tests.faults.TcpProxy``). An
open-loop generator (``loadtest.harness.SteadyLoad``) sends ``--rate``
KServe predictions per second, each with its own ``X-Request-ID``.

Timeline (fractions of the run): the S3 path is cut at 30% for
``--outage-s``; the proxy gets SIGTERM at 65% and is started again on the same
port and spool as soon as it has exited (requests in that gap are refused:
one proxy, no load balancer, and they are counted apart).

Afterwards the spool is left to drain, the proxy is stopped, and every
record in the bucket is read: ``lost`` = answered ``X-Request-ID`` values
with no record, ``duplicated`` = event ids with more than one. Capture
counts come from each proxy process's exit line (``capture closed: ...``),
summed over both. RSS is the proxy's, sampled every ``RSS_EVERY_S``.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from loadtest.harness import (
    Result,
    ServerProcess,
    SteadyLoad,
    between,
    s3_env,
    s3_event_ids,
    summarize,
)

RSS_EVERY_S = 15.0
TOKEN = "soak-admin-token"
_FINAL = re.compile(
    r"capture closed: offered=(\d+) kept=(\d+) sampled_out=(\d+) written=(\d+) "
    r"spooled=(\d+) replayed=(\d+) spool_pending=(\d+) dropped=\{([^}]*)\}"
)


def final_counts(log: str) -> dict[str, Any]:
    """Sum of every ``capture closed`` line in a proxy log."""
    total: dict[str, Any] = {"dropped": {}}
    names = ("offered", "kept", "sampled_out", "written", "spooled", "replayed", "spool_pending")
    for m in _FINAL.finditer(log):
        for name, value in zip(names, m.groups()[:7], strict=True):
            total[name] = total.get(name, 0) + int(value)
        for part in filter(None, m.group(8).split(",")):
            reason, n = part.split("=")
            total["dropped"][reason] = total["dropped"].get(reason, 0) + int(n)
    total["runs"] = len(_FINAL.findall(log))
    return total


def main(flags: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="python -m loadtest soak")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=400.0)
    ap.add_argument("--outage-s", type=float, default=30.0)
    args = ap.parse_args([f for f in flags if f != "--quick"])
    with tempfile.TemporaryDirectory(prefix="modeltap-soak-") as tmp:
        report = run(Path(tmp), args.minutes * 60, args.rate, args.outage_s)
    print(render(report, args))


def run(tmp: Path, seconds: float, rate: float, outage_s: float) -> dict[str, Any]:
    import os

    from loadtest.seaweed import ACCESS_KEY, REGION, SECRET_KEY, SeaweedServer
    from tests.faults import TcpProxy

    os.environ.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION=REGION
    )
    os.environ.pop("AWS_SESSION_TOKEN", None)
    os.environ.pop("AWS_PROFILE", None)
    s3 = SeaweedServer(tmp / "seaweed")
    s3.start()
    s3_path: TcpProxy | None = None
    try:
        bucket = s3.create_bucket("soak")
        s3_path = TcpProxy(s3.ports["s3"])
        with ServerProcess.toy_model(tmp / "model.log") as model:
            env = {
                "MODELTAP_UPSTREAM_URL": model.url,
                "MODELTAP_MODEL": "toy",
                "MODELTAP_SPOOL_DIR": str(tmp / "spool"),
                "MODELTAP_FLUSH_MAX_AGE_S": "10",
                "MODELTAP_ADMIN_TOKEN": TOKEN,
                **s3_env(s3_path.url, bucket),
            }
            return _drive(tmp, env, s3, bucket, s3_path, seconds, rate, outage_s)
    finally:
        if s3_path is not None:
            s3_path.close()
        s3.stop()


def _drive(
    tmp: Path,
    env: dict[str, str],
    s3: Any,
    bucket: str,
    s3_path: Any,
    seconds: float,
    rate: float,
    outage_s: float,
) -> dict[str, Any]:
    log = tmp / "proxy.log"
    proxy = ServerProcess.proxy(env, log).start()
    env = {**env, "MODELTAP_PORT": str(proxy.port)}  # the restart takes the same port
    rss: list[tuple[float, float]] = []
    marks: dict[str, float] = {}
    t0 = time.monotonic()
    at_outage, at_restart = t0 + 0.30 * seconds, t0 + 0.65 * seconds
    next_rss = t0
    load = SteadyLoad(proxy.url, rate, id_prefix="soak").start()
    try:
        while (now := time.monotonic()) < t0 + seconds:
            if now >= next_rss:
                rss.append((now - t0, proxy.rss_mb()))
                next_rss += RSS_EVERY_S * min(1.0, seconds / 600)
            if "outage_start" not in marks and now >= at_outage:
                marks["outage_start"] = now
                s3_path.down()
            if "outage_end" not in marks and now >= marks.get("outage_start", now + 1) + outage_s:
                marks["outage_end"] = now
                s3_path.up()
            if "restart_start" not in marks and now >= at_restart:
                marks["restart_start"] = now
                marks["exit_code"] = proxy.stop(60)
                proxy = ServerProcess.proxy(env, log).start()
                marks["restart_end"] = time.monotonic()
            time.sleep(0.05)
    finally:
        results = load.stop()
    t_end = time.monotonic()
    deadline = time.monotonic() + 120
    spool_left = None
    while time.monotonic() < deadline:
        m = proxy.metrics()
        spool_left = m.get(("modeltap_capture_spool_records", (("model", "toy"),)))
        if not spool_left:
            break
        time.sleep(1)
    rss.append((time.monotonic() - t0, proxy.rss_mb()))
    marks["exit_code_2"] = proxy.stop(60)
    ids = s3_event_ids(s3.client(), bucket)
    answered = {r.request_id for r in results if 200 <= r.status < 300}
    return {
        "results": results,
        "marks": marks,
        "t0": t0,
        "t_end": t_end,
        "rss": rss,
        "counts": final_counts(log.read_text(errors="replace")),
        "answered": len(answered),
        "in_s3": sum(ids.values()),
        "distinct_in_s3": len(ids),
        "lost": len(answered - set(ids)),
        "unexpected": len(set(ids) - {r.request_id for r in results}),
        "duplicated": sum(1 for n in ids.values() if n > 1),
        "spool_left": spool_left,
    }


def phases(report: dict[str, Any]) -> list[tuple[str, float, float]]:
    m, t0, t_end = report["marks"], report["t0"], report["t_end"]
    o1, o2 = m.get("outage_start", t_end), m.get("outage_end", t_end)
    r1, r2 = m.get("restart_start", t_end), m.get("restart_end", t_end)
    return [
        ("before the outage", t0, o1),
        ("S3 outage", o1, o2),
        ("after the outage", o2, r1),
        ("proxy restart (SIGTERM, start)", r1, r2),
        ("after the restart", r2, t_end),
    ]


def render(report: dict[str, Any], args: argparse.Namespace) -> str:
    results: list[Result] = report["results"]
    total = summarize(results)
    c, m = report["counts"], report["marks"]
    dropped = ", ".join(f"{k} {v:,}" for k, v in sorted(c["dropped"].items())) or "none"
    lines = [
        f"## Soak: {args.minutes:g} min at {args.rate:g} req/s, S3 outage {args.outage_s:g} s, "
        "one proxy restart",
        "",
        "| figure | value |",
        "| --- | --- |",
        f"| requests sent | {total['sent']:,} |",
        f"| answered (2xx) | {total['answered']:,} |",
        f"| not answered | {total['sent'] - total['answered']:,} |",
        f"| records offered (both proxy runs) | {c.get('offered', 0):,} |",
        f"| records kept | {c.get('kept', 0):,} |",
        f"| sampled out | {c.get('sampled_out', 0):,} |",
        f"| written directly / spooled / replayed | {c.get('written', 0):,} / "
        f"{c.get('spooled', 0):,} / {c.get('replayed', 0):,} |",
        f"| dropped, by reason | {dropped} |",
        f"| records in S3 (distinct event ids) | {report['in_s3']:,} "
        f"({report['distinct_in_s3']:,}) |",
        f"| **lost** (answered, no record) | **{report['lost']:,}** |",
        f"| duplicated event ids | {report['duplicated']:,} |",
        f"| records with an id never sent | {report['unexpected']:,} |",
        f"| proxy exit codes (SIGTERM) | {m.get('exit_code')}, {m.get('exit_code_2')} |",
        "",
        "| phase | seconds | sent | answered | not answered | p50 ms | p99 ms | max ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, start, end in phases(report):
        s = summarize(between(results, start, end))
        lines.append(
            f"| {name} | {end - start:.1f} | {s['sent']:,} | {s['answered']:,} | "
            f"{s['sent'] - s['answered']:,} | {s['p50']:.2f} | {s['p99']:.2f} | {s['max']:.1f} |"
        )
    rss = report["rss"]
    lines += [
        "",
        "Proxy RSS (MB) over time: "
        + ", ".join(f"{t / 60:.1f} min {mb:.0f}" for t, mb in rss[:: max(1, len(rss) // 12)]),
        f"(start {rss[0][1]:.0f} MB, max {max(mb for _, mb in rss):.0f} MB, "
        f"end {rss[-1][1]:.0f} MB)",
    ]
    return "\n".join(lines)
