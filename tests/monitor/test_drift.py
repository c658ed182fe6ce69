"""Drift distances against answers computed independently from the raw samples."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from capture.profile import BASELINE_KLL_K, ColumnProfile
from monitor_job.drift import OTHER, binned, categorical, ks_distance, ks_noise_floor

N = 100_000


def _num(x: np.ndarray, k: int = 200) -> ColumnProfile:
    col = ColumnProfile(k)
    col.update_numeric(np.asarray(x, dtype=np.float64))
    return col


def _cat(values: list[Any]) -> ColumnProfile:
    col = ColumnProfile()
    col.update(values)
    return col


def _exact_ks(a: np.ndarray, b: np.ndarray) -> float:
    """Two-sample KS statistic of raw samples, right-continuous ECDFs."""
    a, b = np.sort(a), np.sort(b)
    points = np.concatenate([a, b])
    fa = np.searchsorted(a, points, side="right") / a.size
    fb = np.searchsorted(b, points, side="right") / b.size
    return float(np.max(np.abs(fa - fb)))


def _exact_binned(a: np.ndarray, b: np.ndarray, bins: int = 10) -> tuple[float, float]:
    """PSI and base-2 JS distance on the raw baseline's decile bins."""
    edges = np.unique(np.quantile(a, [i / bins for i in range(1, bins)]))
    p = np.bincount(np.searchsorted(edges, a, side="left"), minlength=edges.size + 1) / a.size
    q = np.bincount(np.searchsorted(edges, b, side="left"), minlength=edges.size + 1) / b.size
    pe, qe = np.maximum(p, 1e-4), np.maximum(q, 1e-4)
    psi = float(np.sum((qe - pe) * np.log(qe / pe)))
    m = (p + q) / 2

    def kl(x: np.ndarray) -> float:
        return float(np.sum(x[x > 0] * np.log2(x[x > 0] / m[x > 0])))

    return psi, math.sqrt((kl(p) + kl(q)) / 2)


@pytest.fixture(scope="module")
def normals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    return {
        "base": rng.normal(0, 1, N),
        "same": rng.normal(0, 1, N),
        "shift25": rng.normal(0.25, 1, N),
        "shift50": rng.normal(0.5, 1, N),
    }


@pytest.mark.parametrize("which", ["same", "shift25", "shift50"])
@pytest.mark.parametrize("k", [200, BASELINE_KLL_K])
def test_ks_matches_the_exact_statistic(normals: dict[str, np.ndarray], which: str, k: int) -> None:
    exact = _exact_ks(normals["base"], normals[which])
    base, cur = _num(normals["base"], k), _num(normals[which])
    d = ks_distance(base, cur)
    assert d is not None
    # each CDF is off by at most its sketch's rank error (99% bound): ~0.02 together
    bound = base.kll.normalized_rank_error(False) + cur.kll.normalized_rank_error(False)
    assert abs(d - exact) < bound


def test_ks_of_a_half_sigma_shift_is_the_known_effect(normals: dict[str, np.ndarray]) -> None:
    d = ks_distance(_num(normals["base"], BASELINE_KLL_K), _num(normals["shift50"]))
    assert d == pytest.approx(0.20, abs=0.02)  # facts.md: KS ~0.20 at 0.5 sigma


def test_ks_on_identical_data_is_below_the_noise_floor(normals: dict[str, np.ndarray]) -> None:
    x = normals["base"]
    d = ks_distance(_num(x, BASELINE_KLL_K), _num(x[::-1].copy(), BASELINE_KLL_K))
    assert d is not None and d < 0.014  # facts.md: k=200 sketches' floor at 1M rows


def test_ks_with_ties_is_exact_for_small_columns() -> None:
    base = _num(np.array([0.0] * 50 + [1.0] * 50))
    cur = _num(np.array([0.0] * 80 + [1.0] * 20))
    assert ks_distance(base, cur) == pytest.approx(0.3)


def test_noise_floor_formula() -> None:
    assert ks_noise_floor(1000, 1000) == pytest.approx(1.63 * math.sqrt(2 / 1000))
    assert ks_noise_floor(100, 400, c=1.36) == pytest.approx(1.36 * math.sqrt(500 / 40_000))
    assert ks_noise_floor(0, 10) == math.inf


@pytest.mark.parametrize("which", ["same", "shift25", "shift50"])
def test_binned_matches_the_exact_computation(normals: dict[str, np.ndarray], which: str) -> None:
    # k=1000 on both sides: the sketches' share of the difference stays < 0.005
    got = binned(_num(normals["base"], BASELINE_KLL_K), _num(normals[which], BASELINE_KLL_K))
    assert got is not None
    psi, js = _exact_binned(normals["base"], normals[which])
    assert got[0] == pytest.approx(psi, abs=0.01)
    assert got[1] == pytest.approx(js, abs=0.02)


def test_binned_half_sigma_shift_is_the_known_effect(normals: dict[str, np.ndarray]) -> None:
    got = binned(_num(normals["base"], BASELINE_KLL_K), _num(normals["shift50"]))
    assert got is not None
    assert got[0] == pytest.approx(0.24, abs=0.03)  # facts.md: PSI ~0.24
    assert got[1] == pytest.approx(0.21, abs=0.02)  # facts.md: JS ~0.21


def test_binned_on_identical_data_is_below_the_noise_floor(normals: dict[str, np.ndarray]) -> None:
    x = normals["base"]
    got = binned(_num(x, BASELINE_KLL_K), _num(x[::-1].copy(), BASELINE_KLL_K))
    assert got is not None
    assert got[0] < 0.0025 and got[1] < 0.021  # facts.md: k=200 sketches' floors at 1M rows


def test_binned_collapses_tied_deciles_into_one_bin_per_value() -> None:
    """A column of three values gets three bins: the answer is the PSI and JS
    of those three shares, not of ten bins with duplicated edges."""
    base = np.repeat([0.0, 1.0, 2.0], [200, 500, 300])
    cur = np.repeat([0.0, 1.0, 2.0], [300, 500, 200])
    b, c = _num(base, BASELINE_KLL_K), _num(cur, BASELINE_KLL_K)
    assert not b.kll.is_estimation_mode()  # 1,000 values: exact shares
    p, q = np.array([0.2, 0.5, 0.3]), np.array([0.3, 0.5, 0.2])
    m = (p + q) / 2
    js = math.sqrt((np.sum(p * np.log2(p / m)) + np.sum(q * np.log2(q / m))) / 2)
    assert binned(b, c) == pytest.approx((float(np.sum((q - p) * np.log(q / p))), js))


def test_empty_bins_give_finite_distances() -> None:
    base, cur = np.arange(1000.0), np.full(1000, 5000.0)  # all in the top bin
    got = binned(_num(base), _num(cur))
    assert got is not None and math.isfinite(got[0])
    psi, js = _exact_binned(base, cur)
    assert got == pytest.approx((psi, js), rel=0.02)  # PSI ~8: ln(1/epsilon) magnifies


def test_nothing_to_compare_gives_none() -> None:
    nums, empty, words = _num(np.arange(10.0)), ColumnProfile(), _cat(["a", "b", None])
    assert ks_distance(nums, empty) is None and ks_distance(empty, nums) is None
    assert ks_distance(nums, words) is None
    assert binned(nums, empty) is None and binned(words, nums) is None
    assert categorical(words, empty) is None
    assert categorical(_cat([None, None]), words) is None


def test_categorical_linf_on_known_shares() -> None:
    base = _cat(["a"] * 50 + ["b"] * 30 + ["c"] * 20 + [None] * 40)
    cur = _cat(["a"] * 30 + ["b"] * 30 + ["c"] * 20 + ["d"] * 20)
    got = categorical(base, cur, top_n=2)
    assert got is not None
    assert got["base"] == pytest.approx({"a": 0.5, "b": 0.3, OTHER: 0.2})  # nulls excluded
    assert got["cur"] == pytest.approx({"a": 0.3, "b": 0.3, OTHER: 0.4})
    assert got["linf"] == pytest.approx(0.2)
    assert got["unseen_share"] == pytest.approx(0.2)  # "d" only
    wide = categorical(base, cur, top_n=20)
    assert wide is not None
    assert wide["cur"] == pytest.approx({"a": 0.3, "b": 0.3, "c": 0.2, OTHER: 0.2})
    assert wide["linf"] == pytest.approx(0.2)


def test_categorical_keys_are_canonical() -> None:
    """1, 1.0 and "1" are one category on either side."""
    got = categorical(_cat([1, 2, 1, 2]), _cat(["1", 2.0, 1.0, "2"]))
    assert got is not None
    assert got["linf"] == 0.0 and got["unseen_share"] == 0.0


def test_categorical_identical_high_cardinality_stays_near_zero() -> None:
    rng = np.random.default_rng(9)
    values = [f"id{v}" for v in rng.zipf(1.3, 50_000)]
    got = categorical(_cat(values), _cat(values[::-1]))
    assert got is not None and got["linf"] < 0.01
