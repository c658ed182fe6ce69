"""The checks: a window's profile against the baseline's, as violations.

Violations use SageMaker's fields (``feature_name``, ``constraint_check_type``,
``description``); dataset-level ones name the feature ``(dataset)``, and a
violation found in a segment carries ``segment`` (e.g. ``model.version=2``).

Checks (SageMaker's six, then ours):

- ``missing_column_check``: a baseline column never seen in the window.
- ``extra_column_check``: a window column the baseline lacks (the capture's
  own columns, such as ``position`` or ``model.version``, are never extra).
- ``data_type_check``: more than ``datatype_check_threshold`` of the present
  values are of a kind the baseline's type does not admit (an integral value
  fits a Fractional column; a number does not fit a String one).
- ``completeness_check``: present/rows fell more than
  ``completeness_tolerance`` below the constraint's ``completeness``.
- ``baseline_drift_check``: numeric KS distance, or categorical L-infinity
  over the baseline's top categories + OTHER, above its threshold and above
  the two-sample noise floor, with at least ``min_rows`` values on the
  window's side; PSI and JS are reported beside KS, never alarmed on alone.
  ID-like columns instead alarm when one value takes a share no id should,
  or when the distinct share halves (ids no longer unique).
- ``categorical_values_check``: more than ``domain_content_threshold`` of
  the present values are outside the categorical domain.
- ``numeric_range_check``: more than ``range_threshold`` of the values lie
  outside the baseline's [min, max] (negative values in a non-negative
  column included).
- ``volume_check``: no rows at all; rows per hour outside
  [min_ratio, max_ratio] times the expected rate, or the previous window's.
  Rows are counted as traffic: a row of a record the sampler kept at rate
  r counts 1/r times (``Partial.traffic_rows``), so sampling at 10%, or
  moving from 100% to 10% between two windows, is not a volume change.
- ``prediction_drift_check``: the model's output columns, against the
  baseline's when it has them, else against the previous window.

Why effect sizes: at production volumes every p-value is tiny, and alerts
that never stop are ignored; the noise floor and ``min_rows`` keep small
windows from alarming on sampling noise instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from capture.profile import ColumnProfile, DatasetProfile
from monitor_job import drift
from monitor_job.stats import monitoring_config

ORIGINS = ("context.", "lookups.")
META_COLUMNS = frozenset({"model.version", "item_id", "position", "rank"})
AGGREGATES = frozenset({"context.list_length", "context.top1_score", "context.top1_margin"})
DATASET = "(dataset)"
ALLOWED_KINDS = {
    "Integral": {"integral"},
    "Fractional": {"integral", "fractional"},
    "String": {"string", "boolean"},
}


def origin(name: str) -> str:
    """Where a flattened column came from: features, context, lookups, prediction or meta."""
    if name in META_COLUMNS:
        return "meta"
    if name in ("prediction", "score") or name.startswith("prediction."):
        return "prediction"
    for prefix in ORIGINS:
        if name.startswith(prefix):
            return prefix[:-1]
    return "features"


def match_columns(baseline: set[str], current: set[str]) -> dict[str, str]:
    """Window column -> baseline column: same name, else the name without its origin."""
    out: dict[str, str] = {}
    taken = set(baseline & current)
    for name in current:
        if name in baseline:
            out[name] = name
            continue
        for prefix in ORIGINS:
            bare = name.removeprefix(prefix)
            if bare != name and bare in baseline and bare not in taken:
                out[name] = bare
                taken.add(bare)
                break
    return out


@dataclass
class CheckResult:
    violations: list[dict[str, Any]] = field(default_factory=list)
    columns: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Ctx:
    cfg: dict[str, Any]
    result: CheckResult
    segment: str | None

    def violate(self, feature: str, check: str, description: str) -> None:
        v = {"feature_name": feature, "constraint_check_type": check, "description": description}
        if self.segment:
            v["segment"] = self.segment
        self.result.violations.append(v)


def _present(col: ColumnProfile) -> int:
    return col.count - col.nulls


def _distances(
    kind: str, base: ColumnProfile, cur: ColumnProfile, cfg: dict[str, Any], threshold: float
) -> dict[str, Any]:
    """Effect sizes of one column pair and the figure judged against ``threshold``."""
    out: dict[str, Any] = {"threshold": threshold, "noise_floor": None, "judged": None}
    if kind == "numeric":
        ks = drift.ks_distance(base, cur)
        binned = drift.binned(base, cur)
        out.update(ks=ks, psi=binned[0] if binned else None, js=binned[1] if binned else None)
        out["judged"] = ks
        n, m = base.numeric_count, cur.numeric_count
    else:
        cat = drift.categorical(base, cur, int(cfg["modeltap"]["top_n"]))
        if cat is not None:
            out.update(linf=cat["linf"], unseen_share=cat["unseen_share"])
            out["judged"] = cat["linf"]
        n, m = _present(base), _present(cur)
    if n and m:
        out["noise_floor"] = drift.ks_noise_floor(n, m)
    out["values"] = m
    return out


def _judge(ctx: _Ctx, name: str, check: str, d: dict[str, Any], what: str) -> None:
    value, floor = d.get("judged"), d.get("noise_floor")
    if value is None or d["values"] < int(ctx.cfg["modeltap"]["min_rows"]):
        return
    use_floor = ctx.cfg["modeltap"].get("noise_floor") == "Enabled" and floor is not None
    if value > d["threshold"] and not (use_floor and value <= floor):
        metric = "KS distance" if "ks" in d else "L-infinity distance"
        extra = (
            f" (PSI {d['psi']:.3f}, JS {d['js']:.3f})"
            if d.get("psi") is not None and d.get("js") is not None
            else ""
        )
        floor_txt = f", noise floor {floor:.3f}" if floor is not None else ""
        ctx.violate(
            name,
            check,
            f"{metric} {value:.3f} from {what} exceeds {d['threshold']}{extra}"
            f"{floor_txt}, {d['values']} values",
        )


def _type_check(ctx: _Ctx, name: str, inferred: str, cur: ColumnProfile) -> None:
    allowed = ALLOWED_KINDS.get(inferred)
    present = _present(cur)
    if allowed is None or not present:
        return
    wrong = {k: n for k, n in cur.types.items() if k != "null" and k not in allowed and n}
    share = sum(wrong.values()) / present
    if share > float(ctx.cfg["datatype_check_threshold"]):
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(wrong.items()))
        ctx.violate(
            name,
            "data_type_check",
            f"baseline type {inferred}, but {share:.1%} of {present} values are not ({kinds})",
        )


def _range_check(ctx: _Ctx, name: str, num: dict[str, Any], cur: ColumnProfile) -> None:
    lo, hi = num.get("min"), num.get("max")
    if num.get("is_non_negative") and (lo is None or lo < 0):
        lo = 0.0
    if cur.numeric_count == 0 or cur.min is None or cur.max is None:
        return
    below = cur.cdf([lo], inclusive=False)[0] if lo is not None and cur.min < lo else 0.0
    above = 1.0 - cur.cdf([hi])[0] if hi is not None and cur.max > hi else 0.0
    share = below + above
    if share > float(ctx.cfg["modeltap"]["range_threshold"]):
        ctx.violate(
            name,
            "numeric_range_check",
            f"{share:.1%} of values outside the baseline's range [{lo}, {hi}] "
            f"(window min {cur.min}, max {cur.max})",
        )


def _domain_check(ctx: _Ctx, name: str, domain: list[Any], cur: ColumnProfile) -> None:
    present = _present(cur)
    if not present or not domain:
        return
    known = {str(v) for v in domain}
    listed = cur.top(4 * len(known) + 100)
    unseen = [(v, c) for v, c in listed if v not in known]
    share = (sum(c for _, c in unseen) + max(0, present - sum(c for _, c in listed))) / present
    if share > float(ctx.cfg["domain_content_threshold"]):
        examples = ", ".join(repr(v)[:40] for v, _ in unseen[:5])
        ctx.violate(
            name,
            "categorical_values_check",
            f"{share:.1%} of {present} values are outside the baseline's domain "
            f"of {len(known)} values (e.g. {examples})",
        )


def _id_check(ctx: _Ctx, name: str, base: ColumnProfile, cur: ColumnProfile) -> None:
    present = _present(cur)
    top = cur.top(1)
    if present < int(ctx.cfg["modeltap"]["min_rows"]) or not top:
        return
    value, count = top[0]
    share = count / present
    base_top = base.top(1)
    base_share = base_top[0][1] / max(1, _present(base)) if base_top else 0.0
    if share > max(float(ctx.cfg["modeltap"]["id_top_share_max"]), 10 * base_share):
        ctx.violate(
            name,
            "baseline_drift_check",
            f"id-like column: {value!r:.40} is {share:.1%} of {present} values "
            f"(baseline's most frequent value: {base_share:.2%})",
        )
        return
    # Distinct count: ids that stop being (nearly) unique, e.g. a handful of
    # test accounts replaying. HLL's error (~2%) is far inside the factor 2.
    ratio = min(1.0, cur.distinct() / present)
    base_ratio = min(1.0, base.distinct() / max(1, _present(base)))
    if ratio < 0.5 * base_ratio:
        ctx.violate(
            name,
            "baseline_drift_check",
            f"id-like column: {ratio:.1%} of {present} values are distinct "
            f"(baseline: {base_ratio:.1%})",
        )


def run_checks(
    baseline: DatasetProfile,
    constraints: dict[str, Any],
    current: DatasetProfile,
    *,
    previous: DatasetProfile | None = None,
    window_hours: float | None = None,
    segment: str | None = None,
    traffic_rows: float | None = None,
    previous_traffic_rows: float | None = None,
) -> CheckResult:
    """Every check of the window ``current``; ``segment`` limits to per-column checks.

    ``traffic_rows`` and ``previous_traffic_rows``: the rows of traffic each
    window stands for (``Partial.traffic_rows``), for the volume check;
    the profiles' own row counts when not given."""
    cfg = monitoring_config(constraints)
    mt = cfg["modeltap"]
    result = CheckResult()
    ctx = _Ctx(cfg, result, segment)
    ignore = set(mt.get("ignore_columns") or [])
    preds = set(mt.get("prediction_columns") or [])
    dist = cfg["distribution_constraints"]
    compare = dist.get("perform_comparison", "Enabled") == "Enabled"
    features = {
        f["name"]: f
        for f in constraints.get("features", [])
        if isinstance(f, dict) and isinstance(f.get("name"), str)
    }
    matches = match_columns(set(features), set(current.columns))
    by_base = {b: c for c, b in matches.items()}
    if segment is None:
        _volume(ctx, current, previous, window_hours, traffic_rows, previous_traffic_rows)
    if current.rows == 0:
        return result
    if current.rows < int(mt["min_rows"]):
        result.notes.append(
            f"{current.rows} rows in the window (< min_rows {mt['min_rows']}): drift not judged"
        )

    for name, feat in features.items():
        over = feat.get("monitoringConfigOverrides") or {}
        if name in ignore or over.get("enabled") is False:
            continue
        kind = str(feat.get("kind") or "numeric")
        cur_name = by_base.get(name)
        if cur_name is None:
            if segment is None:
                ctx.violate(name, "missing_column_check", "column is in the baseline, not here")
                result.columns.append(_column(name, name, "missing", None, None))
            continue
        cur = current.columns[cur_name]
        base = baseline.columns.get(name)
        present = _present(cur)
        completeness = present / current.rows
        expected = float(feat.get("completeness", 0.0))
        tol = float(mt["completeness_tolerance"])
        if completeness < expected - tol:
            ctx.violate(
                cur_name,
                "completeness_check",
                f"completeness {completeness:.4f} below the baseline's {expected:.4f} "
                f"(tolerance {tol})",
            )
        _type_check(ctx, cur_name, str(feat.get("inferred_type")), cur)
        if isinstance(feat.get("num_constraints"), dict) and kind == "numeric":
            _range_check(ctx, cur_name, feat["num_constraints"], cur)
        domain = (feat.get("string_constraints") or {}).get("domains")
        if kind == "categorical" and isinstance(domain, list):
            _domain_check(ctx, cur_name, domain, cur)
        d = prev_d = None
        if base is not None and kind != "id_like" and compare:
            key = (
                "comparison_threshold" if kind == "numeric" else "categorical_comparison_threshold"
            )
            threshold = float(over.get(key, dist[key]))
            d = _distances(kind, base, cur, cfg, threshold)
            check = "prediction_drift_check" if cur_name in preds else "baseline_drift_check"
            _judge(ctx, cur_name, check, d, "the baseline")
            if previous is not None and cur_name in previous.columns:
                prev_d = _distances(kind, previous.columns[cur_name], cur, cfg, threshold)
        elif base is not None and kind == "id_like":
            _id_check(ctx, cur_name, base, cur)
        result.columns.append(_column(cur_name, name, kind, d, prev_d))

    matched = set(matches)
    for name in sorted(set(current.columns) - matched):
        col = current.columns[name]
        if name in ignore or not _present(col):
            continue
        if name in preds and previous is not None and name in previous.columns:
            kind = "numeric" if col.inferred_type() in ("Integral", "Fractional") else "categorical"
            threshold = float(
                dist[
                    "comparison_threshold"
                    if kind == "numeric"
                    else "categorical_comparison_threshold"
                ]
            )
            d = _distances(kind, previous.columns[name], col, cfg, threshold)
            _judge(ctx, name, "prediction_drift_check", d, "the previous window")
            result.columns.append(_column(name, None, kind, None, d))
        elif (
            name not in META_COLUMNS
            and name not in AGGREGATES
            and name not in preds
            and segment is None
        ):
            ctx.violate(name, "extra_column_check", "column is not in the baseline")
            result.columns.append(_column(name, None, "extra", None, None))
    return result


def _column(
    name: str,
    base_name: str | None,
    kind: str,
    d: dict[str, Any] | None,
    prev: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "name": name,
        "baseline_name": base_name,
        "kind": kind,
        "drift": d,
        "previous_drift": prev,
        "origin": origin(name),
    }


def _volume(
    ctx: _Ctx,
    current: DatasetProfile,
    previous: DatasetProfile | None,
    hours: float | None,
    traffic: float | None,
    previous_traffic: float | None,
) -> None:
    vol = ctx.cfg["modeltap"]["volume"]
    lo, hi = float(vol["min_ratio"]), float(vol["max_ratio"])
    if current.rows == 0:
        ctx.violate(DATASET, "volume_check", "no rows in the window")
        return
    rows = current.rows if traffic is None else traffic
    said = _rows_said(current.rows, rows)
    expected = vol.get("expected_rows_per_hour")
    if expected and hours:
        ratio = rows / (float(expected) * hours)
        if not lo <= ratio <= hi:
            ctx.violate(
                DATASET,
                "volume_check",
                f"{rows / hours:.0f} rows/hour{said} is {ratio:.2f}x the expected "
                f"{expected} (allowed {lo}-{hi}x)",
            )
    min_rows = int(ctx.cfg["modeltap"]["min_rows"])
    if previous is not None and previous.rows >= min_rows:  # enough sampled rows to judge
        before = previous.rows if previous_traffic is None else previous_traffic
        ratio = rows / before
        if not lo <= ratio <= hi:
            ctx.violate(
                DATASET,
                "volume_check",
                f"{rows:.0f} rows{said} is {ratio:.2f}x the previous window's {before:.0f}"
                f"{_rows_said(previous.rows, before)} (allowed {lo}-{hi}x)",
            )


def _rows_said(sampled: int, traffic: float) -> str:
    """How a row count was had, when sampling weighted it."""
    return "" if traffic == sampled else f" of traffic (from {sampled} sampled)"
