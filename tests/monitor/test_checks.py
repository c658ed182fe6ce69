"""Synthetic windows with one known change each: exactly the expected checks
fire on the expected column, and an unchanged window fires nothing, at 1,000
and at 1,000,000 rows (profiles built through the columnar fast path)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from capture.profile import DatasetProfile
from monitor_job.checks import run_checks
from monitor_job.stats import constraints_json

Columns = dict[str, Any]


def frame(n: int, seed: int) -> Columns:
    rng = np.random.default_rng(seed)
    return {
        "age": rng.normal(40.0, 10.0, n),
        "tenure": rng.normal(0.0, 1.0, n),
        "income": rng.normal(50.0, 5.0, n),
        "items": rng.integers(0, 10, n),
        "amount": rng.lognormal(3.0, 0.5, n),  # dollars
        "channel": rng.choice(
            np.array(["web", "ios", "android"], dtype=object), n, p=[0.5, 0.3, 0.2]
        ),
        "region": rng.choice(np.array(["eu", "us", "apac"], dtype=object), n),
        "user_id": rng.integers(0, 10**12, n),  # id-like: no distribution alarms
    }


def profile(cols: Columns) -> DatasetProfile:
    n = len(next(iter(cols.values())))
    prof = DatasetProfile()
    prof.update_columns(cols, n)
    return prof


@pytest.fixture(scope="module")
def baseline() -> tuple[DatasetProfile, dict[str, Any]]:
    prof = profile(frame(50_000, seed=1))
    return prof, constraints_json(prof)


def fired(base: tuple[DatasetProfile, dict[str, Any]], current: Columns) -> set[tuple[str, str]]:
    result = run_checks(base[0], base[1], profile(current))
    return {(v["feature_name"], v["constraint_check_type"]) for v in result.violations}


@pytest.mark.parametrize("n", [1_000, 1_000_000])
def test_identical_distribution_raises_nothing(baseline: Any, n: int) -> None:
    assert fired(baseline, frame(n, seed=n)) == set()


def _with_nulls(cols: Columns, name: str, share: float) -> None:
    values = cols[name].astype(object)
    values[: int(len(values) * share)] = None
    cols[name] = values


def _new_category(cols: Columns) -> None:
    ch = cols["channel"]
    ch[: len(ch) * 15 // 100] = "tv"  # 15% unseen in training (threshold 10%)


def _type_change(cols: Columns) -> None:
    cols["items"] = np.array([f"n{v}" for v in cols["items"]], dtype=object)


CHANGES: dict[str, tuple[Callable[[Columns], None], set[tuple[str, str]]]] = {
    "mean shift": (
        lambda c: c.__setitem__("age", c["age"] + 5.0),  # half a standard deviation
        {("age", "baseline_drift_check")},
    ),
    "scale change": (
        lambda c: c.__setitem__("tenure", c["tenure"] * 2.5),
        # wider: the shape moves, and values fall outside the training range
        {("tenure", "baseline_drift_check"), ("tenure", "numeric_range_check")},
    ),
    "nulls injected": (
        lambda c: _with_nulls(c, "income", 0.2),
        {("income", "completeness_check")},
    ),
    "type change": (_type_change, {("items", "data_type_check")}),
    "dropped column": (lambda c: c.pop("region"), {("region", "missing_column_check")}),
    "added column": (
        lambda c: c.__setitem__("coupon", np.ones(len(c["age"]))),
        {("coupon", "extra_column_check")},
    ),
    "new category": (
        _new_category,
        # 15% outside the domain, and OTHER's share moves by 0.15 (L-infinity > 0.1)
        {("channel", "categorical_values_check"), ("channel", "baseline_drift_check")},
    ),
    "stuck id": (
        lambda c: c["user_id"].__setitem__(slice(0, len(c["user_id"]) // 4), 0),
        {("user_id", "baseline_drift_check")},
    ),
    "few ids": (
        lambda c: c.__setitem__("user_id", c["user_id"] % 500),
        {("user_id", "baseline_drift_check")},
    ),
    "unit change": (
        lambda c: c.__setitem__("amount", c["amount"] * 100),  # dollars -> cents
        {("amount", "baseline_drift_check"), ("amount", "numeric_range_check")},
    ),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_each_change_raises_exactly_its_checks(baseline: Any, change: str) -> None:
    apply, expected = CHANGES[change]
    cols = frame(20_000, seed=7)
    apply(cols)
    assert fired(baseline, cols) == expected


def test_small_windows_do_not_alarm_on_a_small_shift(baseline: Any) -> None:
    cols = frame(150, seed=9)  # under min_rows (200): distribution checks are skipped
    cols["age"] = cols["age"] + 5.0
    assert fired(baseline, cols) == set()
