"""Publishing a monitor run: Prometheus Pushgateway metrics and a Slack-compatible webhook.

The Pushgateway push follows the batch-job pattern: a fresh
``CollectorRegistry`` per push (never the process-global one), sent with
``push_to_gateway`` (HTTP ``PUT``) under the grouping key ``job`` + ``model``
(+ any extra ``grouping`` labels), so each push replaces the whole group and a
column that left the data leaves the dashboards too. A run whose summary
``status`` is set to neither ``clean`` nor ``violations`` (say ``"failed"``:
a run that crashed) is pushed with ``pushadd_to_gateway`` (``POST``) and only
the last-run and status gauges, so the last good run's figures and
``last_success`` stay in place.

Metrics (all gauges; part of the product, since dashboards and alerts use them;
the Pushgateway adds ``job`` and the grouping labels, ``instance=""``):

- ``modeltap_monitor_last_run_timestamp_seconds``: Unix time of this push.
- ``modeltap_monitor_last_success_timestamp_seconds``: Unix time of the last
  run that finished (clean or with violations); alert on ``time() - it``.
- ``modeltap_monitor_rows{model}``: rows profiled in the window.
- ``modeltap_monitor_violations{model,check}``: violations by
  ``constraint_check_type``; every known check is pushed (0 when none), so an
  alert on ``> 0`` sees an explicit zero rather than a missing series.
- ``modeltap_monitor_drift{model,feature,metric}``: drift against the
  baseline, ``metric`` one of ``ks``, ``psi``, ``js``, ``linf`` (only the
  figures that were computed for the column).
- ``modeltap_monitor_drift_threshold{model,feature}``: the threshold the
  judged drift figure (KS for numeric, L-infinity for categorical) is held to.
- ``modeltap_monitor_previous_drift{model,feature,metric}``: the same
  distances against the previous window, when it was compared.
- ``modeltap_monitor_unseen_share{model,feature}``: share of the window's
  values outside the baseline's top categories (categorical columns).
- ``modeltap_monitor_status{model}``: 0 clean, 1 violations, 2 the run failed.

The webhook gets Slack-compatible JSON (``text`` plus Block Kit ``blocks``: a
header, the summary, up to :data:`MAX_WEBHOOK_VIOLATIONS` violations, the
report location), posted with httpx. User strings are escaped for Slack
mrkdwn (``&``, ``<``, ``>``).

Errors: :class:`PublishError` for any failed push or post (connection
refused, timeout, non-2xx answer). Its message names the URL with the
credentials removed (user info, query string, and every path segment after
the first, since webhook URLs such as Slack's carry their secret in the path).
"""

from __future__ import annotations

import logging
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.exposition import (
    basic_auth_handler,
    default_handler,
    push_to_gateway,
    pushadd_to_gateway,
)

from monitor_job.quality import real_number

log = logging.getLogger(__name__)

# The checks monitor_job.checks emits; each gets a series even at zero.
KNOWN_CHECKS = (
    "data_type_check",
    "completeness_check",
    "baseline_drift_check",
    "missing_column_check",
    "extra_column_check",
    "categorical_values_check",
    "numeric_range_check",
    "volume_check",
    "prediction_drift_check",
    "model_quality_check",
)
LABEL_OUTCOMES = ("matched", "unmatched", "wrong_model", "ambiguous", "duplicates", "invalid")
BIAS_FIGURES = ("current_mean", "baseline_mean", "current_positive_rate", "baseline_positive_rate")
DRIFT_METRICS = ("ks", "psi", "js", "linf")
STATUS = {"clean": 0, "violations": 1}
STATUS_FAILED = 2
MAX_WEBHOOK_VIOLATIONS = 20
_MAX_DESCRIPTION = 500  # Slack refuses section text over 3,000 characters
_HEADER_LIMIT = 150  # Slack's limit for a header block


class PublishError(Exception):
    """A push or post failed; the message names the (redacted) URL and the problem."""


def redact_url(url: str) -> str:
    """``url`` without credentials: no user info, query or fragment, first path segment only."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    segments = [s for s in parts.path.split("/") if s]
    path = f"/{segments[0]}" if segments else ""
    if len(segments) > 1:
        path += "/…"
    scheme = f"{parts.scheme}://" if parts.scheme else ""
    return f"{scheme}{netloc}{path}"


def _handler(gateway_url: str) -> tuple[str, Callable[..., Callable[[], None]]]:
    """The gateway URL without user info, and a handler that sends it as basic auth."""
    parts = urllib.parse.urlsplit(gateway_url)
    if parts.username is None:
        return gateway_url, default_handler
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    netloc = parts.netloc.rsplit("@", 1)[1]
    bare = urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    def handler(
        url: str, method: str, timeout: float | None, headers: list[tuple[str, str]], data: bytes
    ) -> Callable[[], None]:
        return basic_auth_handler(url, method, timeout, headers, data, user, password)

    return bare, handler


def build_registry(
    *,
    model: str,
    summary: dict[str, Any],
    columns: list[dict[str, Any]],
    violations: list[dict[str, Any]],
    now: float | None = None,
    quality: dict[str, Any] | None = None,
) -> tuple[CollectorRegistry, bool]:
    """The run's metrics in a fresh registry, and whether the run succeeded."""
    now = time.time() if now is None else now
    reg = CollectorRegistry()
    status = summary.get("status") or ("violations" if violations else "clean")
    ok = status in STATUS
    Gauge(
        "modeltap_monitor_last_run_timestamp_seconds",
        "Unix time of the monitor's last run.",
        registry=reg,
    ).set(now)
    Gauge(
        "modeltap_monitor_status",
        "0 clean, 1 violations, 2 the run failed.",
        ["model"],
        registry=reg,
    ).labels(model).set(STATUS[str(status)] if ok else STATUS_FAILED)
    if not ok:
        return reg, False
    Gauge(
        "modeltap_monitor_last_success_timestamp_seconds",
        "Unix time of the monitor's last finished run (clean or with violations).",
        registry=reg,
    ).set(now)
    rows = real_number(summary.get("rows"))
    if rows is not None:
        Gauge(
            "modeltap_monitor_rows", "Rows profiled in the window.", ["model"], registry=reg
        ).labels(model).set(rows)
    counts = Counter(str(v.get("constraint_check_type", "unknown")) for v in violations)
    g_viol = Gauge(
        "modeltap_monitor_violations",
        "Constraint violations in the window, by check.",
        ["model", "check"],
        registry=reg,
    )
    for check in sorted(set(KNOWN_CHECKS) | set(counts)):
        g_viol.labels(model, check).set(counts.get(check, 0))
    _drift_metrics(reg, model, columns)
    if quality:
        _quality_metrics(reg, model, quality)
    return reg, True


def _quality_metrics(reg: CollectorRegistry, model: str, quality: dict[str, Any]) -> None:
    """Model quality (``monitor_job.quality.evaluate``'s output) as gauges."""
    metrics = quality.get("metrics") or {}
    task = str(quality.get("task") or "none")
    g = Gauge(
        "modeltap_monitor_model_quality",
        "Model quality over the labels received in the window.",
        ["model", "task", "metric"],
        registry=reg,
    )
    holdout = Gauge(
        "modeltap_monitor_model_quality_holdout",
        "The baseline's holdout value of a model-quality metric.",
        ["model", "metric"],
        registry=reg,
    )
    for name, value in sorted(metrics.items()):
        if name not in ("n", "invalid", "k", "requests") and (v := real_number(value)) is not None:
            g.labels(model, task, name).set(v)
    for name, value in sorted((quality.get("holdout") or {}).items()):
        if (v := real_number(value)) is not None:
            holdout.labels(model, name).set(v)
    join = quality.get("join") or {}
    labels = Gauge(
        "modeltap_monitor_labels",
        "Labels received in the window, by what the join made of them.",
        ["model", "outcome"],
        registry=reg,
    )
    for outcome in LABEL_OUTCOMES:
        labels.labels(model, outcome).set(real_number(join.get(outcome)) or 0)
    share = real_number(join.get("labelled_share"))
    if share is not None:
        Gauge(
            "modeltap_monitor_labelled_share",
            "Share of the predictions read that have a label so far.",
            ["model"],
            registry=reg,
        ).labels(model).set(share)
    bias = quality.get("bias") or {}
    g_bias = Gauge(
        "modeltap_monitor_prediction_bias",
        "Mean prediction and positive rate of the window and the baseline (no labels needed).",
        ["model", "figure"],
        registry=reg,
    )
    for figure in BIAS_FIGURES:
        if (v := real_number(bias.get(figure))) is not None:
            g_bias.labels(model, figure).set(v)


def _drift_metrics(reg: CollectorRegistry, model: str, columns: list[dict[str, Any]]) -> None:
    labels = ["model", "feature", "metric"]
    drift = Gauge(
        "modeltap_monitor_drift", "Drift of a column against the baseline.", labels, registry=reg
    )
    prev = Gauge(
        "modeltap_monitor_previous_drift",
        "Drift of a column against the previous window.",
        labels,
        registry=reg,
    )
    threshold = Gauge(
        "modeltap_monitor_drift_threshold",
        "Threshold of a column's judged drift figure (KS numeric, L-infinity categorical).",
        ["model", "feature"],
        registry=reg,
    )
    unseen = Gauge(
        "modeltap_monitor_unseen_share",
        "Share of a column's values outside the baseline's top categories.",
        ["model", "feature"],
        registry=reg,
    )
    for col in columns:
        name = str(col.get("name"))
        for key, gauge in (("drift", drift), ("previous_drift", prev)):
            d = col.get(key)
            if not isinstance(d, dict):
                continue
            for metric in DRIFT_METRICS:
                value = real_number(d.get(metric))
                if value is not None:
                    gauge.labels(model, name, metric).set(value)
        d = col.get("drift")
        if isinstance(d, dict):
            t = real_number(d.get("threshold"))
            if t is not None:
                threshold.labels(model, name).set(t)
            u = real_number(d.get("unseen_share"))
            if u is not None:
                unseen.labels(model, name).set(u)


def push_metrics(
    gateway_url: str,
    *,
    job: str,
    model: str,
    summary: dict[str, Any],
    columns: list[dict[str, Any]],
    violations: list[dict[str, Any]],
    grouping: dict[str, str] | None = None,
    timeout: float = 10.0,
    quality: dict[str, Any] | None = None,
) -> None:
    """Push the run's metrics to the Pushgateway at ``gateway_url``.

    >>> push_metrics("http://pushgateway:9091", job="modeltap_monitor", model="ranker",
    ...              summary=summary, columns=result.columns, violations=result.violations)
    """
    extra = dict(grouping or {})
    if {"job", "model"} & set(extra):
        raise ValueError("grouping must not set 'job' or 'model' (they are the grouping key)")
    if not job or not model:
        raise ValueError("job and model must be non-empty (they are the grouping key)")
    scheme = urllib.parse.urlsplit(gateway_url).scheme
    if "://" in gateway_url and scheme not in ("http", "https"):
        raise PublishError(f"Pushgateway {redact_url(gateway_url)}: not an http(s) URL")
    reg, ok = build_registry(
        model=model, summary=summary, columns=columns, violations=violations, quality=quality
    )
    url, handler = _handler(gateway_url)
    send = push_to_gateway if ok else pushadd_to_gateway
    try:
        send(
            url,
            job=job,
            registry=reg,
            grouping_key={"model": model, **extra},
            timeout=timeout,
            handler=handler,
        )
    except (OSError, ValueError) as exc:  # urllib's URLError/HTTPError are OSErrors
        raise PublishError(
            f"Pushgateway {redact_url(gateway_url)}: push failed: {_reason(exc)}"
        ) from exc
    log.info("pushed monitor metrics for model %s to %s", model, redact_url(gateway_url))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ValueError):  # urllib's message would repeat the URL, secrets included
        return "invalid URL"
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return f"HTTP {code} {getattr(exc, 'reason', '')}".strip()
    reason = getattr(exc, "reason", None)
    return str(reason if reason is not None else exc) or type(exc).__name__


def mrkdwn_escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn gives meaning to."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _code(text: str) -> str:
    # mrkdwn has no escape for a backtick inside a code span; a quote keeps the span intact.
    return "`" + mrkdwn_escape(_cut(text, 200).replace("`", "'")) + "`"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def webhook_payload(
    *,
    summary: dict[str, Any],
    violations: list[dict[str, Any]],
    report_location: str | None = None,
) -> dict[str, Any]:
    """The Slack-compatible message for a run (``text`` fallback plus ``blocks``)."""
    model = str(summary.get("model") or "all models")
    status = str(summary.get("status") or ("violations" if violations else "clean"))
    title = f"modeltap monitor: {model}: {len(violations)} violation(s)"
    fields = []
    for key in ("window_start", "window_end", "rows", "baseline_rows", "records", "bad_lines"):
        if summary.get(key) is not None:
            label = key.replace("_", " ")
            fields.append(
                {"type": "mrkdwn", "text": f"*{label}*\n{mrkdwn_escape(str(summary[key]))}"}
            )
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(title, _HEADER_LIMIT)}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"*status*: {mrkdwn_escape(status)}"},
            **({"fields": fields[:10]} if fields else {}),
        },
    ]
    for v in violations[:MAX_WEBHOOK_VIOLATIONS]:
        seg = f" [{mrkdwn_escape(str(v['segment']))}]" if v.get("segment") else ""
        text = (
            f"*{mrkdwn_escape(str(v.get('constraint_check_type', '?')))}* "
            f"{_code(str(v.get('feature_name', '?')))}{seg}\n"
            f"{mrkdwn_escape(_cut(str(v.get('description', '')), _MAX_DESCRIPTION))}"
        )
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    more = len(violations) - MAX_WEBHOOK_VIOLATIONS
    if more > 0:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"… and {more} more"}]}
        )
    if report_location:
        if report_location.startswith(("http://", "https://")):
            where = f"<{mrkdwn_escape(report_location)}|open the report>"
        else:
            where = _code(report_location)
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"report: {where}"}]}
        )
    return {"text": mrkdwn_escape(title), "blocks": blocks}


def post_webhook(
    url: str,
    *,
    summary: dict[str, Any],
    violations: list[dict[str, Any]],
    report_location: str | None = None,
    timeout: float = 10.0,
) -> None:
    """POST the run's summary and violations as Slack-compatible JSON to ``url``."""
    payload = webhook_payload(
        summary=summary, violations=violations, report_location=report_location
    )
    where = redact_url(url)
    try:
        resp = httpx.post(url, json=payload, timeout=timeout)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise PublishError(f"webhook {where}: post failed: {type(exc).__name__}: {exc}") from exc
    if not resp.is_success:
        body = _cut(resp.text.strip().replace("\n", " "), 200)
        raise PublishError(f"webhook {where}: HTTP {resp.status_code}: {body}")
    log.info("posted %d violation(s) to webhook %s", len(violations), where)
