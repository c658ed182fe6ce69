"""The deployment stack as plain processes on loopback: what the compose file
runs, without Docker (``./dev stack``).

    python -m loadtest.stack [--s3] [--keep] [--out ./stack-demo] [--requests 2000]
                             [--pushgateway URL]

In order: undrifted training data and a baseline (``modeltap-monitor
baseline``); with ``--s3``, SeaweedFS as the S3 sink (``loadtest.seaweed``);
the toy model (uvicorn) and the proxy (``python -m server``, the image's
entry point) as real processes on free loopback ports, the proxy's
prediction histogram buckets taken from the baseline; client traffic whose
``f0`` drifts halfway, and a label per answered request posted to the
proxy's ground-truth route by the event id it returned (``loadtest.traffic``);
a flush; the proxy's metrics saved; ``modeltap-monitor run`` over the
captures (pushing to ``--pushgateway`` when given). It prints where the
captures, the metrics and the report are, then stops every process it
started, latest first (the proxy on SIGTERM, so it drains and flushes), also
on Ctrl-C or SIGTERM. ``--keep`` leaves the stack running until Ctrl-C.

Outputs under ``--out``: ``captures/`` (without ``--s3``), ``monitor/``
(training data, ``baseline/``, ``report/report.html``), ``proxy-metrics.txt``
and ``logs/``; these are replaced on each run.

Exit status: 0 when every step worked and the monitor ran (found violations
or not), 1 when a step failed (its process log is printed), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from capture.demo import write_training
from loadtest.harness import ServerProcess
from loadtest.seaweed import ACCESS_KEY, REGION, SECRET_KEY, SeaweedServer, die_with_parent
from loadtest.traffic import MODEL, Traffic, post_labels, send

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "modeltap"
OUTPUTS = ("captures", "monitor", "logs", "seaweed", "spool", "proxy-metrics.txt")


class StackError(Exception):
    """A step of the stack failed; the message says which and shows its log."""


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the stack as Ctrl-C does


def run(args: argparse.Namespace, out: Path, later: contextlib.ExitStack) -> int:
    began = time.monotonic()
    logs = out / "logs"
    rng = random.Random(7)
    from monitor_job.cli import main as monitor

    train, holdout = write_training(out / "monitor", rng)
    baseline = out / "monitor" / "baseline"
    base_args = ["--data", str(train), "--out", str(baseline), "--label", "label"]
    if monitor(["baseline", *base_args, "--holdout-metrics", str(holdout)]) != 0:
        raise StackError("modeltap-monitor baseline failed")

    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELTAP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    seaweed: SeaweedServer | None = None
    if args.s3:
        seaweed = SeaweedServer(out / "seaweed")
        later.callback(seaweed.stop)
        seaweed.start(timeout=60)
        seaweed.create_bucket(BUCKET)
        sink = f"s3://{BUCKET}/captures"
        env.update(
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            AWS_DEFAULT_REGION=REGION,
            MODELTAP_S3_ENDPOINT_URL=seaweed.endpoint_url,
        )
    else:
        sink = str(out / "captures")

    logs.mkdir(parents=True, exist_ok=True)
    model = ServerProcess.toy_model(logs / "model.log")
    model.preexec = die_with_parent  # killed with the stack, even on SIGKILL
    later.callback(_stopped, "model", model)
    _start(model, "model")
    model_url = model.url

    token = secrets.token_urlsafe(16)
    proxy_env = {
        **env,
        "MODELTAP_UPSTREAM_URL": model_url,
        "MODELTAP_SINK": sink,
        "MODELTAP_MODEL": MODEL,
        "MODELTAP_ADMIN_TOKEN": token,
        "MODELTAP_SPOOL_DIR": str(out / "spool"),
        "MODELTAP_PREDICTION_BASELINE": str(baseline),
    }
    proxy = ServerProcess.proxy(proxy_env, logs / "proxy.log", preexec=die_with_parent)
    later.callback(_stopped, "proxy", proxy)
    _start(proxy, "proxy")
    proxy_url = proxy.url
    up = time.monotonic() - began
    print(f"up in {up:.1f} s: model {model_url}, proxy {proxy_url}, sink {sink}", flush=True)

    traffic, t0 = Traffic(), time.time()
    with httpx.Client(base_url=proxy_url, timeout=30) as client:
        send(client, traffic, args.requests, drift_after=args.requests // 2, rng=rng)
        post_labels(client, traffic, token)
        auth = {"Authorization": f"Bearer {token}"}
        if client.post("/_modeltap/flush", headers=auth).status_code != 200:
            raise StackError(f"the proxy did not flush; see {logs / 'proxy.log'}")
        metrics = client.get("/_modeltap/metrics").text
    (out / "proxy-metrics.txt").write_text(metrics)
    print(
        f"traffic: {traffic.sent} requests answered ({traffic.failed} failed), "
        f"f0 drifted after {args.requests // 2}; {traffic.labels_posted} labels posted",
        flush=True,
    )

    report = out / "monitor" / "report"
    window = ["--start", _iso(t0 - 60), "--end", _iso(time.time() + 60), "--no-previous"]
    run_cmd = [sys.executable, "-m", "monitor_job", "run", "--captures", sink]
    run_cmd += ["--baseline", str(baseline), "--out", str(report), "--model", MODEL, *window]
    if args.pushgateway:
        run_cmd += ["--pushgateway", args.pushgateway, "--job", "modeltap_monitor"]
    done = subprocess.run(run_cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    (logs / "monitor.log").write_text(done.stdout + done.stderr)
    if done.returncode not in (0, 1):
        raise StackError(f"modeltap-monitor run exited {done.returncode}:\n{done.stderr[-3000:]}")
    print(done.stdout.rstrip())

    summary = json.loads((report / "statistics.json").read_text())["modeltap"]["summary"]
    objects = summary["objects"]  # what the monitor read: no second listing of the sink
    violations = json.loads((report / "constraint_violations.json").read_text())["violations"]
    found = sorted({f"{v['feature_name']} {v['constraint_check_type']}" for v in violations})
    print("\n== modeltap stack ==")
    where = f", S3 endpoint {seaweed.endpoint_url}" if seaweed else ""
    print(f"captures:      {sink} (objects: {objects}{where})")
    print(f"proxy metrics: {out / 'proxy-metrics.txt'}")
    print(f"baseline:      {baseline}")
    print(f"report:        {report / 'report.html'}")
    print(f"monitor:       exit {done.returncode}, violations: {', '.join(found) or 'none'}")
    print(f"logs:          {logs}")
    print(f"took {time.monotonic() - began:.1f} s (stack up in {up:.1f} s)", flush=True)
    if args.keep:
        print(f"\nrunning: proxy {proxy_url} (admin token {token}), model {model_url}", end="")
        print(f", S3 {seaweed.endpoint_url} (keys {ACCESS_KEY}/{SECRET_KEY})" if seaweed else "")
        print("Ctrl-C stops it.", flush=True)
        while all(p.proc is not None and p.proc.poll() is None for p in (proxy, model)):
            time.sleep(0.5)
        raise StackError("a process of the stack exited on its own; see the logs")
    return 0


def _start(process: ServerProcess, name: str) -> None:
    try:
        process.start()
    except RuntimeError as exc:
        raise StackError(f"{name} did not start; {process.log_path}:\n{exc}") from None


def _stopped(name: str, process: ServerProcess) -> None:
    if process.proc is None:
        return
    code = process.stop(timeout=40)  # beyond the proxy's flush deadline
    how = f"exit {code}" if code >= 0 else f"ended by {signal.Signals(-code).name}"
    print(f"stopped {name} (pid {process.pid}): {how}", flush=True)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(prog="python -m loadtest.stack", description=doc.split("\n")[0])
    ap.add_argument("--s3", action="store_true", help="capture to SeaweedFS (a local S3)")
    ap.add_argument("--keep", action="store_true", help="keep it running until Ctrl-C")
    ap.add_argument("--out", default="./stack-demo", help="outputs (default ./stack-demo)")
    ap.add_argument("--requests", type=int, default=2000, help="client requests (default 2000)")
    ap.add_argument("--pushgateway", help="push the monitor's metrics to this Pushgateway")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    for name in OUTPUTS:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    # Ctrl-C stops the stack even when it was started with SIGINT ignored (a
    # background job of a non-interactive shell, as CI runners start them):
    # Python keeps an inherited SIG_IGN, and --keep would then never end.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with contextlib.ExitStack() as later:
            try:
                return run(args, out, later)
            except StackError as exc:
                print(f"stack: {exc}", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print("\ninterrupted: stopping the stack", flush=True)
                return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


if __name__ == "__main__":
    sys.exit(main())
