"""``modeltap-monitor``: profile training data into a baseline, then check
windows of captures against it.

    modeltap-monitor baseline --data train.parquet --out s3://bucket/baselines/ranker
    modeltap-monitor run --captures s3://bucket/captures --baseline s3://bucket/baselines/ranker \\
        --out ./monitor/2026-11-23T10 [--start ISO] [--end ISO] [--window 1h] [--model NAME]

    modeltap-monitor labels --file labels.jsonl --sink s3://bucket/captures [--model NAME]

Model quality: when labels have been posted (``POST /_modeltap/ground-truth``
on the proxy, or ``labels``), ``run`` joins the labels received in its window
to the predictions captured up to ``--label-lookback`` (7d) before it
(``monitor_job.groundtruth``), computes the task's metrics
(``monitor_job.quality``) and compares them with the holdout metrics given
to ``baseline --holdout-metrics``: a drop beyond the threshold is a
``model_quality_check`` violation.

Exit codes (what a cron or CI step branches on): 0 no constraint violated,
1 violations found (outputs written), 2 the job failed (message on stderr
names the file or location and the problem; a failed publish to the
Pushgateway or webhook is a failure too, after the outputs are written).

Defaults: the window is the last full ``--window`` (1 hour) before now, in
UTC; the previous window of the same length is profiled too (drift against
it is reported; only the model's outputs are alarmed on against it, when
the baseline has none).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson

from capture.profile import DatasetProfile
from monitor_job import stats
from monitor_job.store import StoreError

log = logging.getLogger("monitor_job")

BASELINE_PROFILE = "baseline_profile.json"
STATISTICS = "statistics.json"
CONSTRAINTS = "constraints.json"
VIOLATIONS = "constraint_violations.json"
REPORT = "report.html"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class UsageError(Exception):
    """A bad argument (named in the message)."""


def parse_time(text: str, what: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not an ISO 8601 time") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def parse_duration(text: str, what: str = "--window") -> timedelta:
    m = _DURATION.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"{what}: {text!r} is not a duration such as 30m, 1h or 1d")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])


def window(args: argparse.Namespace) -> tuple[datetime, datetime]:
    length = parse_duration(args.window)
    if args.end:
        end = parse_time(args.end, "--end")
    elif args.start:
        end = parse_time(args.start, "--start") + length
    else:
        now = datetime.now(timezone.utc)
        step = length.total_seconds()
        end = datetime.fromtimestamp(now.timestamp() // step * step, timezone.utc)
    start = parse_time(args.start, "--start") if args.start else end - length
    if start >= end:
        raise UsageError(f"the window is empty: --start {start.isoformat()} >= --end")
    return start, end


def _dump(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)


def cmd_baseline(args: argparse.Namespace) -> int:
    from monitor_job import store

    profile = DatasetProfile(kll_k=args.kll_k, meta={"source": args.data or args.captures})
    if args.data:
        from monitor_job.readers import read_training

        for batch in read_training(args.data):
            n = max((len(v) for v in batch.values()), default=0)
            profile.update_columns(batch, n)
    else:
        from monitor_job.execute import profile_window
        from monitor_job.readers import list_captures

        start, end = window(args)
        refs = list_captures(args.captures, start, end, args.model)
        profile = profile_window(refs, start, end, progress=args.progress).whole
        profile.meta.update(start=start.isoformat(), end=end.isoformat())
    if profile.rows == 0:
        raise UsageError(f"{args.data or args.captures}: no rows to build a baseline from")
    ignore = list(args.ignore or [])
    if args.label:
        ignore.append(args.label)
    constraints = stats.constraints_json(profile, ignore=ignore)
    if args.expected_rows_per_hour:
        constraints["monitoring_config"]["modeltap"]["volume"]["expected_rows_per_hour"] = (
            args.expected_rows_per_hour
        )
    if args.label:
        constraints["monitoring_config"]["modeltap"]["label_column"] = args.label
    quality_config = dict(MODEL_QUALITY_DEFAULTS)
    if args.holdout_metrics:
        quality_config["holdout"] = read_holdout(args.holdout_metrics)
    constraints["monitoring_config"]["modeltap"]["model_quality"] = quality_config
    store.write_file(args.out, BASELINE_PROFILE, profile.to_bytes())
    store.write_file(args.out, STATISTICS, _dump(stats.statistics_json(profile)))
    store.write_file(args.out, CONSTRAINTS, _dump(constraints))
    print(
        f"baseline: {profile.rows} rows, {len(profile.columns)} columns -> "
        f"{args.out} ({BASELINE_PROFILE}, {STATISTICS}, {CONSTRAINTS}; edit {CONSTRAINTS} "
        "to tune checks)"
    )
    return 0


#: ``constraints.json`` -> monitoring_config.modeltap.model_quality (editable);
#: see ``monitor_job.quality`` for what each threshold means and why.
MODEL_QUALITY_DEFAULTS: dict[str, Any] = {"min_pairs": 200, "max_drop": 0.05, "max_rise": 0.1}
_SAGEMAKER_METRIC_NAMES = {"auc": "roc_auc", "f1": "f1", "mse": None, "r2": None}


def read_holdout(path: str) -> dict[str, float]:
    """Holdout metrics from a JSON file: ``{"accuracy": 0.91, ...}``, or
    SageMaker Model Quality's baseline statistics
    (``{"binary_classification_metrics": {"accuracy": {"value": 0.91}}}``)."""
    from pathlib import Path

    try:
        doc = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise UsageError(f"--holdout-metrics: cannot read {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"--holdout-metrics: {path}: invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"--holdout-metrics: {path}: a JSON object of metric -> number expected")
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if key.endswith("_metrics") and isinstance(value, dict):  # SageMaker's shape
            for name, entry in value.items():
                name = _SAGEMAKER_METRIC_NAMES.get(name, name)
                if name is not None and isinstance(entry, dict) and "value" in entry:
                    flat[name] = entry["value"]
        else:
            flat[key] = value
    out: dict[str, float] = {}
    for name, value in flat.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"--holdout-metrics: {path}: {name!r} is not a number")
        out[name] = float(value)
    if not out:
        raise UsageError(f"--holdout-metrics: {path}: no metrics in it")
    return out


def load_baseline(location: str) -> tuple[DatasetProfile, dict[str, Any]]:
    from monitor_job import store

    raw = store.read_file(location, BASELINE_PROFILE)
    try:
        profile = DatasetProfile.from_bytes(raw)
    except ValueError as exc:
        raise StoreError(f"{store.join(location, BASELINE_PROFILE)}: {exc}") from exc
    where = store.join(location, CONSTRAINTS)
    try:
        constraints = orjson.loads(store.read_file(location, CONSTRAINTS))
    except orjson.JSONDecodeError as exc:
        raise StoreError(f"{where}: invalid JSON: {exc}") from exc
    if not isinstance(constraints, dict) or not isinstance(constraints.get("features"), list):
        raise StoreError(f"{where}: not a constraints file (no 'features' list)")
    return profile, constraints


def cmd_run(args: argparse.Namespace) -> int:
    from monitor_job import store
    from monitor_job.checks import run_checks
    from monitor_job.execute import profile_window
    from monitor_job.malloc import PadError, keep_freed_memory, pad_bytes
    from monitor_job.readers import list_captures

    started = time.time()
    try:
        keep_freed_memory(pad_bytes())
    except PadError as exc:
        raise UsageError(str(exc)) from None
    start, end = window(args)
    baseline, constraints = load_baseline(args.baseline)
    csv_columns = [
        f["name"]
        for f in constraints["features"]
        if f.get("name") != constraints["monitoring_config"].get("modeltap", {}).get("label_column")
    ]
    opts: dict[str, Any] = {
        "segments": args.segment or [],
        "csv_columns": csv_columns,
        "dask": args.dask,
        "progress": args.progress,
    }
    refs = list_captures(args.captures, start, end, args.model)
    current = profile_window(refs, start, end, label="window", **opts)
    previous = None
    if not args.no_previous:
        length = end - start
        prev_refs = list_captures(args.captures, start - length, start, args.model)
        previous = profile_window(prev_refs, start - length, start, label="previous", **opts)
    hours = (end - start).total_seconds() / 3600
    prev_whole = previous.whole if previous is not None else None
    result = run_checks(
        baseline,
        constraints,
        current.whole,
        previous=prev_whole,
        window_hours=hours,
        traffic_rows=current.traffic_rows,
        previous_traffic_rows=previous.traffic_rows if previous is not None else None,
    )
    for key, prof in sorted(current.profiles.items()):
        if key:
            seg = run_checks(baseline, constraints, prof, segment=key)
            result.violations.extend(seg.violations)
    quality = _model_quality(args, start, end, baseline, constraints, current.whole)
    result.violations.extend(quality["violations"])
    summary: dict[str, Any] = {
        "model": args.model,
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "baseline_rows": baseline.rows,
        "previous_rows": prev_whole.rows if prev_whole is not None else None,
        # rows of traffic the window's rows stand for (volume_check; Partial.traffic_rows)
        "traffic_rows": round(current.traffic_rows),
        "previous_traffic_rows": round(previous.traffic_rows) if previous is not None else None,
        "status": "violations" if result.violations else "clean",
        "violations": len(result.violations),
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "notes": result.notes + quality["notes"],
        "labels": quality["join"],
        **current.counts(),
    }
    segments = {k: p.rows for k, p in current.profiles.items() if k}
    doc = stats.statistics_json(
        current.whole,
        extra={
            "summary": summary,
            "columns": result.columns,
            "segments": segments,
            "model_quality": quality,
        },
    )
    out = args.out
    store.write_file(out, STATISTICS, _dump(doc))
    store.write_file(out, VIOLATIONS, _dump({"violations": result.violations}))
    from monitor_job.report import render_report

    report_path = _report(
        out,
        render_report,
        baseline,
        current.whole,
        result,
        summary,
        prev_whole,
        args.max_plots,
        quality,
    )
    print(_summary_text({**summary, "quality": quality}, result.violations, report_path))
    _publish(args, summary, result, report_path, quality)
    log.info("monitor run took %.1fs", time.time() - started)
    return 1 if result.violations else 0


def _model_quality(
    args: argparse.Namespace,
    start: datetime,
    end: datetime,
    baseline: DatasetProfile,
    constraints: dict[str, Any],
    current: DatasetProfile,
) -> dict[str, Any]:
    """Labels of the window joined to their predictions, then the metrics."""
    from monitor_job import groundtruth, quality

    pairs, counts = groundtruth.join(
        args.captures,
        args.labels,
        start,
        end,
        model=args.model,
        lookback_s=parse_duration(args.label_lookback, "--label-lookback").total_seconds(),
        prediction_field=args.prediction_field,
        score_field=args.score_field,
    )
    config = dict(constraints["monitoring_config"].get("modeltap", {}).get("model_quality") or {})
    holdout = config.pop("holdout", None)
    return quality.evaluate(
        pairs,
        join=counts.to_dict(),
        holdout=holdout,
        config=config,
        start=start.timestamp() - counts.lookback_s,
        end=end.timestamp(),
        task=args.task,
        baseline=baseline,
        constraints=constraints,
        current=current,
    )


def cmd_labels(args: argparse.Namespace) -> int:
    """Write a file of labels to the capture sink, as the proxy's endpoint does."""
    from pathlib import Path

    from capture.capturer import Capturer
    from capture.errors import CaptureError

    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        raise UsageError(f"--file: cannot read {args.file}: {exc.strerror}") from None
    overrides: dict[str, Any] = {"sink": args.sink} if args.sink else {}
    if args.model:
        overrides["model"] = args.model
    totals = {"accepted": 0, "rejected": 0, "dropped": 0}
    errors: list[str] = []
    try:
        with Capturer.from_env(**overrides) as cap:
            cap.check()
            offset = 0
            for chunk, entries in _label_chunks(data):
                batch = cap.ingest_labels(chunk, model=args.model, source="file")
                for key, n in batch.summary().items():
                    if key in totals:
                        totals[key] += n
                errors += [f"entry {offset + e['index'] + 1}: {e['error']}" for e in batch.errors]
                offset += entries
                cap.flush()  # bounded memory for any file size
            where = cap.sink.describe()
    except CaptureError as exc:
        raise UsageError(f"--sink: {exc}") from None
    print(
        f"labels: {totals['accepted']} accepted, {totals['rejected']} rejected, "
        f"{totals['dropped']} dropped -> {where}"
    )
    for line in errors[:20]:
        print(f"  {line}")
    if totals["accepted"] == 0 or totals["dropped"]:
        return 2
    return 1 if totals["rejected"] else 0


LABEL_CHUNK_LINES = 10_000


def _label_chunks(data: bytes) -> Iterator[tuple[bytes, int]]:
    """A JSON document whole; JSONL in chunks of ``LABEL_CHUNK_LINES`` entries."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, (list, dict)):
        yield data, len(doc) if isinstance(doc, list) else 1
        return
    lines = [line for line in data.splitlines() if line.strip()]
    if not lines:
        yield data, 0
        return
    for i in range(0, len(lines), LABEL_CHUNK_LINES):
        part = lines[i : i + LABEL_CHUNK_LINES]
        yield b"\n".join(part), len(part)


def _report(
    out: str,
    render: Any,
    baseline: DatasetProfile,
    current: DatasetProfile,
    result: Any,
    summary: dict[str, Any],
    previous: DatasetProfile | None,
    max_plots: int,
    quality: dict[str, Any] | None = None,
) -> str:
    """Render report.html into ``out`` (rendered locally, then uploaded for S3)."""
    import tempfile
    from pathlib import Path

    from monitor_job import store

    kwargs = {
        "baseline": baseline,
        "current": current,
        "violations": result.violations,
        "columns": result.columns,
        "summary": summary,
        "previous": previous,
        "max_plots": max_plots,
        "quality": quality,
    }
    local = store.local_path(out)
    if local is not None:
        local.mkdir(parents=True, exist_ok=True)
        return str(render(local / REPORT, **kwargs))
    with tempfile.TemporaryDirectory() as tmp:
        path = render(Path(tmp) / REPORT, **kwargs)
        return store.write_file(out, REPORT, Path(path).read_bytes())


def _summary_text(summary: dict[str, Any], violations: list[dict[str, Any]], report: str) -> str:
    lines = [
        f"window {summary['window_start']} .. {summary['window_end']}: "
        f"{summary['records']} records, {summary['rows']} rows from {summary['objects']} objects"
        + (f", {summary['bad_lines']} unreadable lines" if summary.get("bad_lines") else "")
        + (
            f"; sampled: they stand for {summary['traffic_rows']:,} rows of traffic"
            if summary["traffic_rows"] != summary["rows"]
            else ""
        ),
    ]
    lines += [f"note: {n}" for n in summary.get("notes") or []]
    quality = summary.get("quality") or {}
    if quality.get("metrics"):
        from monitor_job.quality import HEADLINE

        figures = ", ".join(
            f"{name} {value:.3f}"
            for name in HEADLINE.get(quality["task"], ())
            if isinstance(value := quality["metrics"].get(name), float)
        )
        lines.append(
            f"model quality ({quality['task']}): {quality['metrics']['n']} labelled predictions"
            + (f"; {figures}" if figures else "")
        )
    if violations:
        lines.append(f"{len(violations)} violation(s):")
        for v in violations[:20]:
            seg = f" [{v['segment']}]" if v.get("segment") else ""
            lines.append(
                f"  {v['constraint_check_type']:<26} {v['feature_name']}{seg}: {v['description']}"
            )
        if len(violations) > 20:
            lines.append(f"  ... and {len(violations) - 20} more in {VIOLATIONS}")
    else:
        lines.append("no violations")
    lines.append(f"report: {report}")
    return "\n".join(lines)


def _publish(
    args: argparse.Namespace,
    summary: dict[str, Any],
    result: Any,
    report: str,
    quality: dict[str, Any] | None = None,
) -> None:
    if not (args.pushgateway or args.webhook):
        return
    from monitor_job import publish

    if args.pushgateway:
        publish.push_metrics(
            args.pushgateway,
            job=args.job,
            model=args.model or "all",
            summary=summary,
            columns=result.columns,
            violations=result.violations,
            quality=quality,
        )
    if args.webhook and result.violations:
        publish.post_webhook(
            args.webhook, summary=summary, violations=result.violations, report_location=report
        )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="modeltap-monitor",
        description="Profile captures against the training baseline; report drift and violations.",
    )
    sub = ap.add_subparsers(dest="command", required=True)

    def window_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--start", help="window start, ISO 8601 (UTC when no offset)")
        p.add_argument("--end", help="window end, exclusive (default: now, cut to --window)")
        p.add_argument("--window", default="1h", help="window length: 30m, 1h, 1d (default 1h)")
        p.add_argument("--model", help="only this model's captures (default: every model)")
        p.add_argument(
            "--progress",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="progress bar (default: when stderr is a terminal)",
        )

    b = sub.add_parser("baseline", help="profile training data into a baseline")
    src = b.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", help="training data: .csv, .parquet, .jsonl(.gz)")
    src.add_argument("--captures", help="or a window of captures (a known-good period)")
    b.add_argument("--out", required=True, help="directory or s3://bucket/prefix")
    b.add_argument("--label", help="the label column (kept out of the checks)")
    b.add_argument("--ignore", action="append", help="a column to leave unchecked (repeat)")
    b.add_argument("--kll-k", type=int, default=1000, help="quantile sketch size (default 1000)")
    b.add_argument(
        "--expected-rows-per-hour",
        type=float,
        help="for volume_check: rows of traffic per hour, sampled or not (a record kept at "
        "rate r counts 1/r times)",
    )
    b.add_argument(
        "--holdout-metrics",
        metavar="FILE",
        help='JSON of the model\'s holdout metrics ({"accuracy": 0.91, ...}), for model quality',
    )
    window_args(b)
    b.set_defaults(func=cmd_baseline)

    r = sub.add_parser("run", help="check a window of captures against the baseline")
    r.add_argument("--captures", required=True, help="directory or s3://bucket/prefix")
    r.add_argument("--baseline", required=True, help="where `baseline` wrote its files")
    r.add_argument("--out", required=True, help="directory (or s3://) for the outputs")
    window_args(r)
    r.add_argument("--segment", action="append", help="also check per value of this column")
    r.add_argument("--no-previous", action="store_true", help="skip the previous window")
    r.add_argument("--dask", metavar="ADDRESS", help="Dask scheduler address, or 'local'")
    r.add_argument("--max-plots", type=int, default=200, help="plots in report.html")
    r.add_argument("--pushgateway", help="Prometheus Pushgateway URL")
    r.add_argument("--job", default="modeltap_monitor", help="Pushgateway job name")
    r.add_argument("--webhook", help="post violations here (Slack-compatible JSON)")
    r.add_argument("--labels", help="ground-truth labels (default: CAPTURES/ground_truth)")
    r.add_argument(
        "--label-lookback",
        default="7d",
        help="how far before the window to look for the predictions labels are about (7d)",
    )
    r.add_argument("--task", choices=("classification", "regression", "ranking"))
    r.add_argument("--prediction-field", help="key of a dict prediction holding the prediction")
    r.add_argument("--score-field", help="key of a dict prediction holding the score")
    r.set_defaults(func=cmd_run)

    lab = sub.add_parser("labels", help="write ground-truth labels from a file to the sink")
    lab.add_argument("--file", required=True, help="JSON or JSONL labels ('-': stdin)")
    lab.add_argument("--sink", help="the capture sink (default: MODELTAP_SINK or ./captures)")
    lab.add_argument("--model", help="model of entries without one (default: MODELTAP_MODEL)")
    lab.set_defaults(func=cmd_labels)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from monitor_job.publish import PublishError
    from monitor_job.readers import InputError

    try:
        return int(args.func(args))
    except (UsageError, StoreError, InputError, PublishError) as exc:
        print(f"modeltap-monitor: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 2
    except Exception:  # a bug must not exit 1, which means "violations found"
        log.exception("modeltap-monitor failed")
        return 2
