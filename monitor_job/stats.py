"""``statistics.json`` and ``constraints.json`` in SageMaker Model Monitor's shape.

SageMaker users can read both files with what they already have; what
SageMaker's schema has no field for sits beside its fields under names of
our own (documented here, kept stable):

statistics.json, per feature: SageMaker's ``numerical_statistics`` or
``string_statistics`` (``common.num_present``/``num_missing``, mean, sum,
std_dev, min, max, ``distribution.kll.buckets`` or
``distribution.categorical.buckets``), plus ``modeltap``: NaN and inf
counts, the observed value kinds, distinct count and quantiles.

constraints.json, per feature: ``name``, ``inferred_type``, ``completeness``,
``num_constraints.is_non_negative`` (SageMaker) plus ``num_constraints.min``/
``max`` (the baseline's range), ``string_constraints.domains`` for
categoricals, ``kind`` (``numeric``, ``categorical``, ``high_cardinality``,
``id_like``: how the column is compared, see below) and
``monitoringConfigOverrides`` (per-feature ``comparison_threshold``,
``categorical_comparison_threshold``, ``enabled``). ``monitoring_config``
keeps SageMaker's keys and adds ``modeltap`` for the checks SageMaker lacks.

How a column's kind is inferred (edit ``kind`` in constraints.json to
change it):

- ``numeric``: inferred Integral or Fractional. Distribution drift = KS
  distance between the two KLL sketches (SageMaker's 0.1 by default), PSI
  and Jensen-Shannon reported beside it.
- ``categorical``: a String column with at most ``DOMAIN_MAX`` distinct
  values: the domain is stored; drift is L-infinity over the baseline's top
  categories plus OTHER; unseen values are checked against the domain.
- ``high_cardinality``: a String column with more distinct values than a
  domain can hold: L-infinity on top categories + OTHER only (over all
  categories the no-drift noise is large: facts.md measured 0.15 on a Zipf
  column), no domain.
- ``id_like``: String or Integral with distinct/present > ``ID_RATIO``
  (user ids, request ids): no distribution alarm at all, only checks that
  no single value took over (a stuck default id) and that the distinct share
  did not halve (a few ids replaying).
"""

from __future__ import annotations

import copy
import math
from typing import Any

from capture.profile import ColumnProfile, DatasetProfile

DOMAIN_MAX = 500  # below the frequent-items sketch's exact range (~768 values)
ID_RATIO = 0.9
ID_MIN_ROWS = 1000
QUANTILE_RANKS = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
NUMERIC_TYPES = ("Integral", "Fractional")

DEFAULT_MONITORING: dict[str, Any] = {
    "evaluate_constraints": "Enabled",
    "emit_metrics": "Enabled",
    # share of present values whose type does not fit the baseline's type
    "datatype_check_threshold": 0.1,
    # share of present values outside a categorical domain
    "domain_content_threshold": 0.1,
    "distribution_constraints": {
        "perform_comparison": "Enabled",
        "comparison_threshold": 0.1,
        "comparison_method": "Robust",
        "categorical_comparison_threshold": 0.1,
        "categorical_drift_method": "LInfinity",
    },
    "modeltap": {
        # below this many present values in the window, drift is not judged
        "min_rows": 200,
        # a distance must also exceed the two-sample noise floor (c = 1.63, ~1%)
        "noise_floor": "Enabled",
        # completeness may fall this much (absolute) below the baseline's
        "completeness_tolerance": 0.01,
        # share of values outside the baseline's [min, max] that raises numeric_range_check
        "range_threshold": 0.01,
        # categories compared by L-infinity (the rest are OTHER)
        "top_n": 20,
        # id_like: no single value may take more than this share (nor 10x the baseline's)
        "id_top_share_max": 0.05,
        # volume_check: rows per hour expected (None: only the previous window is compared)
        "volume": {"expected_rows_per_hour": None, "min_ratio": 0.5, "max_ratio": 2.0},
        # columns holding the model's output: compared with the baseline's when it has
        # them, else with the previous window (prediction_drift_check)
        "prediction_columns": ["prediction", "score"],
        "ignore_columns": [],
    },
}


def column_kind(col: ColumnProfile) -> str:
    inferred = col.inferred_type()
    present = col.count - col.nulls
    if (
        inferred in ("Integral", "String")
        and present >= ID_MIN_ROWS
        and col.distinct() > ID_RATIO * present
    ):
        return "id_like"
    if inferred in NUMERIC_TYPES:
        return "numeric"
    if col.distinct() <= DOMAIN_MAX:
        return "categorical"
    return "high_cardinality"


def _num(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _kll_buckets(col: ColumnProfile, n: int = 10) -> list[dict[str, float]]:
    lo, hi = _num(col.min), _num(col.max)
    if lo is None or hi is None or col.numeric_count == 0:
        return []
    if hi == lo:
        return [{"lower_bound": lo, "upper_bound": hi, "count": float(col.numeric_count)}]
    edges = [lo + (hi - lo) * i / n for i in range(n + 1)]
    cdf = [0.0, *col.cdf(edges[1:-1]), 1.0]
    return [
        {
            "lower_bound": edges[i],
            "upper_bound": edges[i + 1],
            "count": round((cdf[i + 1] - cdf[i]) * col.numeric_count, 3),
        }
        for i in range(n)
    ]


def feature_statistics(name: str, col: ColumnProfile, top: int = 20) -> dict[str, Any]:
    """One entry of statistics.json ``features``."""
    common = {"num_present": col.count - col.nulls, "num_missing": col.nulls}
    inferred = col.inferred_type()
    extra: dict[str, Any] = {
        "nan": col.nan,
        "inf": col.inf,
        "types": dict(col.types),
        "distinct_count": round(col.distinct(), 1),
    }
    entry: dict[str, Any] = {"name": name, "inferred_type": inferred}
    if inferred in NUMERIC_TYPES:
        qs = col.quantiles(QUANTILE_RANKS)
        extra["quantiles"] = {
            f"p{round(r * 100):02d}": q for r, q in zip(QUANTILE_RANKS, qs, strict=True)
        }
        entry["numerical_statistics"] = {
            "common": common,
            "mean": _num(col.mean),
            "sum": _num(col.sum),
            "std_dev": _num(col.std),
            "min": _num(col.min),
            "max": _num(col.max),
            "distribution": {"kll": {"buckets": _kll_buckets(col)}},
        }
    else:
        entry["string_statistics"] = {
            "common": common,
            "distinct_count": round(col.distinct(), 1),
            "distribution": {
                "categorical": {
                    "buckets": [{"value": v, "count": c} for v, c in col.top(top)],
                }
            },
        }
    entry["modeltap"] = extra
    return entry


def statistics_json(profile: DatasetProfile, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """statistics.json for a profile (the baseline's or a window's)."""
    doc: dict[str, Any] = {
        "version": 0.0,
        "dataset": {"item_count": profile.rows},
        "features": [feature_statistics(n, c) for n, c in sorted(profile.columns.items())],
    }
    if extra:
        doc["modeltap"] = extra
    return doc


def feature_constraints(name: str, col: ColumnProfile, rows: int) -> dict[str, Any]:
    """One entry of constraints.json ``features``, inferred from the baseline."""
    present = col.count - col.nulls
    kind = column_kind(col)
    entry: dict[str, Any] = {
        "name": name,
        "inferred_type": col.inferred_type(),
        "completeness": round(min(1.0, present / rows), 6) if rows else 0.0,
        "kind": kind,
    }
    if kind == "numeric" or (kind == "id_like" and entry["inferred_type"] in NUMERIC_TYPES):
        lo = _num(col.min)
        entry["num_constraints"] = {
            "is_non_negative": lo is not None and lo >= 0,
            "min": lo,
            "max": _num(col.max),
        }
    if kind == "categorical":
        entry["string_constraints"] = {"domains": sorted(v for v, _ in col.top(DOMAIN_MAX))}
    entry["monitoringConfigOverrides"] = {}
    return entry


def constraints_json(profile: DatasetProfile, ignore: list[str] | None = None) -> dict[str, Any]:
    """An editable constraints.json inferred from the baseline profile."""
    monitoring = copy.deepcopy(DEFAULT_MONITORING)
    monitoring["modeltap"]["ignore_columns"] = sorted(ignore or [])
    return {
        "version": 0.0,
        "features": [
            feature_constraints(n, c, profile.rows) for n, c in sorted(profile.columns.items())
        ],
        "monitoring_config": monitoring,
    }


def monitoring_config(constraints: dict[str, Any]) -> dict[str, Any]:
    """The constraints' monitoring_config over the defaults (a user may delete keys)."""
    merged = copy.deepcopy(DEFAULT_MONITORING)
    _merge(merged, constraints.get("monitoring_config") or {})
    return merged


def _merge(into: dict[str, Any], over: dict[str, Any]) -> None:
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
