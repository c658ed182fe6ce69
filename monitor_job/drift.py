"""Distances between two column profiles: KS, PSI, Jensen-Shannon, L-infinity.

Every function compares a baseline ``ColumnProfile`` with a current one and
returns an effect size, never a p-value (at production volume every p-value
is tiny; see facts.md "Drift at production volume"). They read the sketches
only, so profiles of any size compare in constant time, and they return
None when a side has nothing to compare (no numbers, or no values at all).

- ``ks_distance``: max |CDF_base - CDF_cur| over the union of both KLL
  sketches' retained items, each CDF built from the items' weights.
  datasketches' own ``ks_test`` returns only a bool.
- ``ks_noise_floor``: the distance two samples of one distribution reach by
  chance (c = 1.63: the 1% critical value of the two-sample KS test).
- ``binned``: PSI and JS distance (base 2, the square root of the divergence)
  on bins cut at the baseline's deciles; ties collapse bins, so a column of
  three values gets about three bins. Empty bins get ``EPSILON`` in PSI.
- ``categorical``: L-infinity over the baseline's ``top_n`` categories plus
  ``"__other__"``, and the share of current values whose key the baseline's
  frequent-items sketch never holds (a lower bound when the current sketch
  has dropped rare keys).

Example::

    d = ks_distance(base.columns["age"], cur.columns["age"])
    if d is not None and d - ks_noise_floor(n, m) > 0.1: ...
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from capture.profile import ColumnProfile

EPSILON = 1e-4
OTHER = "__other__"


def _weighted(col: ColumnProfile) -> tuple[np.ndarray, np.ndarray]:
    """Sorted retained items of the KLL sketch and their cumulative shares."""
    pairs = list(col.kll)  # (item, weight) pairs
    items = np.fromiter((p[0] for p in pairs), dtype=np.float64, count=len(pairs))
    weights = np.fromiter((p[1] for p in pairs), dtype=np.float64, count=len(pairs))
    order = np.argsort(items, kind="stable")
    cum = np.cumsum(weights[order])
    return items[order], cum / cum[-1]


def _ecdf(items: np.ndarray, cum: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Share of items <= each x."""
    idx = np.searchsorted(items, x, side="right")
    return np.where(idx > 0, cum[np.maximum(idx - 1, 0)], 0.0)


def ks_distance(base: ColumnProfile, cur: ColumnProfile) -> float | None:
    """Kolmogorov-Smirnov distance of the numbers; None if either has none."""
    if base.kll.is_empty() or cur.kll.is_empty():
        return None
    bi, bc = _weighted(base)
    ci, cc = _weighted(cur)
    points = np.union1d(bi, ci)
    return float(np.max(np.abs(_ecdf(bi, bc, points) - _ecdf(ci, cc, points))))


def ks_noise_floor(n: int, m: int, c: float = 1.63) -> float:
    """c * sqrt((n + m) / (n * m)); infinite when a side is empty."""
    if n <= 0 or m <= 0:
        return math.inf
    return c * math.sqrt((n + m) / (n * m))


def binned(base: ColumnProfile, cur: ColumnProfile, bins: int = 10) -> tuple[float, float] | None:
    """(PSI, JS distance) on bins cut at the baseline's quantiles; None if a side has no numbers."""
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    if base.kll.is_empty() or cur.kll.is_empty():
        return None
    edges = np.unique(base.quantiles([i / bins for i in range(1, bins)])).tolist()
    p = _shares(base.pmf(edges))
    q = _shares(cur.pmf(edges))
    pe, qe = np.maximum(p, EPSILON), np.maximum(q, EPSILON)
    psi = float(np.sum((qe - pe) * np.log(qe / pe)))
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log2(p / m), 0.0) + np.where(q > 0, q * np.log2(q / m), 0.0)
    js = math.sqrt(min(max(float(terms.sum()) / 2, 0.0), 1.0))
    return psi, js


def _shares(masses: list[float]) -> np.ndarray:
    a = np.clip(np.asarray(masses, dtype=np.float64), 0.0, None)
    total = a.sum()
    return a / total if total > 0 else a


def _present(col: ColumnProfile) -> int:
    """Values that have a categorical key: not null, not NaN."""
    return col.count - col.nulls - col.nan


def categorical(base: ColumnProfile, cur: ColumnProfile, top_n: int = 20) -> dict[str, Any] | None:
    """L-infinity over the baseline's top_n categories plus ``"__other__"``,
    and the current share of keys the baseline never held; None if a side is empty."""
    nb, nc = _present(base), _present(cur)
    if nb <= 0 or nc <= 0:
        return None
    base_top = base.top(top_n)
    b = {k: min(c / nb, 1.0) for k, c in base_top}
    c_ = {k: min(cur.freq.get_estimate(k) / nc, 1.0) for k, _ in base_top}
    b[OTHER] = max(0.0, 1.0 - sum(b.values()))
    c_[OTHER] = max(0.0, 1.0 - sum(c_.values()))
    linf = max(abs(b[k] - c_[k]) for k in b)
    known = {k for k, _ in base.top(1 << 30)}
    unseen = sum(n for k, n in cur.top(1 << 30) if k not in known)
    return {"linf": linf, "unseen_share": min(unseen / nc, 1.0), "base": b, "cur": c_}
