"""Model quality from labelled pairs, checked against scikit-learn on random data."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pytest
from sklearn import metrics as skm

from capture.profile import DatasetProfile
from monitor_job import quality
from monitor_job.quality import (
    Pair,
    bias_report,
    by_version,
    compute,
    evaluate,
    infer_task,
    quality_violations,
    series,
)

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
HOUR = 3600.0


def assert_binary_metrics_match_sklearn(m: dict[str, Any], y: np.ndarray, p: np.ndarray) -> None:
    """Binary metrics at threshold 0.5 equal scikit-learn's on labels ``y``, scores ``p``."""
    pred = (p >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["log_loss"] == pytest.approx(skm.log_loss(y, p))
    assert m["positive_rate"] == pytest.approx(pred.mean())


def pair(
    label: Any,
    prediction: Any = None,
    *,
    score: float | None = None,
    event: str = "e",
    item: str | None = None,
    rank: int | None = None,
    position: int | None = None,
    version: str | None = "1",
    time: float = T0,
) -> Pair:
    return Pair(
        event_id=event,
        item_id=item,
        label=label,
        prediction=prediction,
        score=score,
        rank=rank,
        position=position,
        version=version,
        time=time,
        label_time=time + 60,
    )


def binary_data(n: int, seed: int, skill: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """Labels 0/1 and informative probabilities of class 1."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    logit = skill * (y - 0.5) + rng.normal(0, 1.2, n)
    return y, 1 / (1 + np.exp(-logit))


def assert_clean_json(doc: Any) -> None:
    """orjson-serialisable, and no NaN/inf anywhere (orjson writes them as null)."""
    raw = orjson.dumps(doc)
    assert orjson.loads(raw) == doc


# -- classification ---------------------------------------------------------


def test_binary_matches_sklearn() -> None:
    y, p = binary_data(800, seed=1)
    pairs = [pair(int(a), float(b), score=float(b)) for a, b in zip(y, p, strict=True)]
    m = compute(pairs, "classification")
    assert m["task"] == "classification" and m["average"] == "binary" and m["positive"] == "1"
    assert m["n"] == 800 and m["invalid"] == 0 and m["probabilities"] == 800
    assert_binary_metrics_match_sklearn(m, y, p)
    assert m["label_positive_rate"] == pytest.approx(y.mean())
    assert m["mean_score"] == pytest.approx(p.mean())
    assert 0 <= m["calibration_error"] <= 1
    assert_clean_json(m)


def test_binary_label_spellings_agree() -> None:
    """True == 1 == "1" == "true" == "yes"; the probability may come as the prediction."""
    y, p = binary_data(300, seed=2)
    ref = compute(
        [pair(int(a), None, score=float(b)) for a, b in zip(y, p, strict=True)], "classification"
    )
    spellings = [
        lambda a: bool(a),
        lambda a: str(int(a)),
        lambda a: "true" if a else "false",
        lambda a: "Yes" if a else "NO",
        lambda a: float(a),
    ]
    for spell in spellings:
        pairs = [pair(spell(a), float(b)) for a, b in zip(y, p, strict=True)]
        m = compute(pairs, "classification")
        for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"):
            assert m[key] == pytest.approx(ref[key]), (key, spell(1))


def test_auc_with_ties_and_threshold() -> None:
    y, p = binary_data(500, seed=3)
    p = np.round(p, 1)  # many ties
    pairs = [pair(int(a), None, score=float(b)) for a, b in zip(y, p, strict=True)]
    m = compute(pairs, "classification", threshold=0.7)
    pred = (p >= 0.7).astype(int)
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    with pytest.raises(ValueError, match="threshold"):
        compute(pairs, "classification", threshold=1.5)


def test_binary_class_predictions_and_positive() -> None:
    rng = np.random.default_rng(4)
    y = rng.choice(["cat", "dog"], 400)
    pred = np.where(rng.random(400) < 0.8, y, rng.choice(["cat", "dog"], 400))
    pairs = [pair(str(a), str(b)) for a, b in zip(y, pred, strict=True)]
    m = compute(pairs, "classification")
    assert m["positive"] == "dog"  # the larger class
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred, pos_label="dog"))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred, pos_label="dog"))
    assert m["roc_auc"] is None and m["log_loss"] is None and m["calibration_error"] is None
    m2 = compute(pairs, "classification", positive="cat")
    assert m2["positive"] == "cat"
    assert m2["f1"] == pytest.approx(skm.f1_score(y, pred, pos_label="cat"))
    assert m2["accuracy"] == pytest.approx(m["accuracy"])
    # a class named "positive" is the positive one
    named = compute([pair("positive", "negative"), pair("negative", "negative")], "classification")
    assert named["positive"] == "positive" and named["recall"] == 0.0


def test_one_class_window_is_binary_and_auc_none() -> None:
    """Only positive labels: still binary (0/1), AUC undefined, recall defined."""
    pairs = [pair(1, 0.9), pair(1, 0.3), pair(True, 0.8)]
    m = compute(pairs, "classification")
    assert m["average"] == "binary" and m["classes"] == 2
    assert m["roc_auc"] is None
    assert m["recall"] == pytest.approx(2 / 3) and m["precision"] == 1.0
    assert m["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.3, 0.8])))
    # only negatives and no predicted positives: no precision, no recall, no F1 (not 0)
    neg = compute([pair(0, 0.1), pair(False, 0.2)], "classification")
    assert neg["precision"] is None and neg["recall"] is None and neg["f1"] is None
    assert neg["accuracy"] == 1.0


def test_multiclass_macro_matches_sklearn() -> None:
    rng = np.random.default_rng(5)
    classes = np.array(["a", "b", "c", "d"])
    y = rng.choice(classes[:3], 600)  # "d" only ever predicted
    pred = np.where(rng.random(600) < 0.6, y, rng.choice(classes, 600))
    pairs = [pair(str(a), str(b)) for a, b in zip(y, pred, strict=True)]
    m = compute(pairs, "classification")
    assert m["average"] == "macro" and m["classes"] == 4 and m["positive"] is None
    kw: dict[str, Any] = {"average": "macro", "zero_division": 0}
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred, **kw))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred, **kw))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred, **kw))
    assert m["roc_auc"] is None and m["log_loss"] is None and m["positive_rate"] is None
    # integer class ids, some as strings and floats: one class each
    yi = rng.integers(0, 5, 300)
    pi = np.where(rng.random(300) < 0.7, yi, rng.integers(0, 5, 300))
    spelled = [
        pair(str(int(a)) if i % 3 else float(a), int(b))
        for i, (a, b) in enumerate(zip(yi, pi, strict=True))
    ]
    mi = compute(spelled, "classification")
    assert mi["classes"] == 5
    assert mi["f1"] == pytest.approx(skm.f1_score(yi, pi, **kw))


def test_calibration_error_hand_made() -> None:
    # bins: [0.1, 0.2): p 0.15, 0.15 / y 0, 1 -> |0.5 - 0.15| = 0.35, weight 2/6
    #       [0.5, 0.6): p 0.55 / y 0 -> 0.55, weight 1/6
    #       [0.8, 0.9): p 0.85, 0.85 / y 1, 1 -> 0.15, weight 2/6
    #       [0.9, 1.0]: p 1.0 / y 1 -> 0 (1.0 falls in the last bin), weight 1/6
    probs = [0.15, 0.15, 0.55, 0.85, 0.85, 1.0]
    labels = [0, 1, 0, 1, 1, 1]
    m = compute(
        [pair(y, None, score=p) for y, p in zip(labels, probs, strict=True)], "classification"
    )
    assert m["calibration_error"] == pytest.approx((2 * 0.35 + 0.55 + 2 * 0.15 + 0) / 6)
    # log loss clips p = 1.0: finite
    assert math.isfinite(m["log_loss"])
    perfect = compute([pair(1, None, score=1.0), pair(0, None, score=0.0)], "classification")
    assert perfect["calibration_error"] == 0.0 and perfect["roc_auc"] == 1.0
    assert perfect["log_loss"] == pytest.approx(-math.log(1 - 1e-15))


# -- regression -------------------------------------------------------------


def test_regression_matches_sklearn() -> None:
    rng = np.random.default_rng(6)
    y = rng.normal(50, 20, 700).round(1)
    y[:40] = 0.0  # mape skips these
    pred = y + rng.normal(2, 5, 700)
    pairs = [pair(float(a), float(b)) for a, b in zip(y, pred, strict=True)]
    m = compute(pairs, "regression")
    assert m["task"] == "regression" and m["n"] == 700 and m["invalid"] == 0
    assert m["mae"] == pytest.approx(skm.mean_absolute_error(y, pred))
    assert m["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(y, pred)))
    nz = y != 0
    assert m["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y[nz], pred[nz]))
    assert m["bias"] == pytest.approx(float(np.mean(pred - y)))
    assert m["mean_prediction"] == pytest.approx(pred.mean())
    assert m["mean_label"] == pytest.approx(y.mean())
    assert_clean_json(m)
    zeros = compute([pair(0, 1.0), pair(0.0, 2)], "regression")
    assert zeros["mape"] is None and zeros["mae"] == 1.5


def test_regression_numeric_strings_count() -> None:
    m = compute([pair("3.5", 3.0), pair(2, "2.5")], "regression")
    assert m["n"] == 2 and m["mae"] == pytest.approx(0.5)


# -- ranking ----------------------------------------------------------------


def ranking_pairs(
    seed: int, requests: int, how: str
) -> tuple[list[Pair], list[tuple[list[float], list[float]]]]:
    """Random requests (2-15 items, relevance 0-3, unlabelled items None) and,
    per request, (relevances, scores) for sklearn."""
    rng = np.random.default_rng(seed)
    pairs: list[Pair] = []
    ref = []
    for r in range(requests):
        n = int(rng.integers(2, 16))
        scores = rng.permutation(n) + rng.random(n) * 0.5  # distinct: no ties
        rels = rng.choice([0, 0, 0, 1, 2, 3], n).astype(float)
        if r % 7 == 0:
            rels[:] = 0  # a request where nothing was relevant
        order = np.argsort(-scores)
        rank_of = np.empty(n, dtype=int)
        rank_of[order] = np.arange(1, n + 1)
        for i in range(n):
            label: Any = None if rels[i] == 0 and i % 2 else int(rels[i])
            if rels[i] == 1 and i % 3 == 0:
                label = True
            pairs.append(
                pair(
                    label,
                    float(scores[i]),
                    score=float(scores[i]) if how == "score" else None,
                    rank=int(rank_of[i]) if how == "rank" else None,
                    position=i,
                    event=f"req-{r}",
                    item=f"item-{i}",
                    time=T0 + r,
                )
            )
        ref.append((rels.tolist(), scores.tolist()))
    return pairs, ref


@pytest.mark.parametrize("how", ["score", "rank"])
@pytest.mark.parametrize("k", [3, 10])
def test_ranking_ndcg_matches_sklearn(how: str, k: int) -> None:
    pairs, ref = ranking_pairs(7, 120, how)
    m = compute(pairs, "ranking", k=k)
    expected = np.mean([skm.ndcg_score([rel], [sc], k=k) for rel, sc in ref])
    assert m["task"] == "ranking" and m["k"] == k
    assert m["requests"] == 120 and m["n"] == len(pairs) and m["invalid"] == 0
    assert m["ndcg_at_k"] == pytest.approx(expected)
    assert_clean_json(m)


def test_ranking_by_position_and_exact_mrr_hit_rate() -> None:
    # request a: relevances in order [0, 0, 2] -> RR 1/3, hit@2 0
    # request b: [1, 0] -> RR 1, hit@2 1
    # request c: [0, None] -> RR 0, hit 0, NDCG 0 (counted, as sklearn)
    rows = {"a": [0, 0, 2], "b": [1, 0], "c": [0, None]}
    pairs = [
        pair(rel, None, event=ev, position=i, item=str(i))
        for ev, rels in rows.items()
        for i, rel in enumerate(rels)
    ]
    m = compute(pairs[::-1], "ranking", k=2)  # order of the pairs does not matter
    assert m["requests"] == 3 and m["n"] == 7
    assert m["mrr"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert m["hit_rate_at_k"] == pytest.approx(1 / 3)
    ndcg_b = 1.0
    assert m["ndcg_at_k"] == pytest.approx((0 + ndcg_b + 0) / 3)
    m3 = compute(pairs, "ranking", k=3)
    ndcg_a = (2 / math.log2(4)) / (2 / math.log2(2))
    assert m3["ndcg_at_k"] == pytest.approx((ndcg_a + 1 + 0) / 3)
    assert m3["hit_rate_at_k"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="k must"):
        compute(pairs, "ranking", k=0)


def test_ranking_order_rank_over_score() -> None:
    """Rank wins over score; score (descending) over position."""
    by_rank = [
        pair(1, None, score=0.1, rank=1, position=2, event="r"),
        pair(0, None, score=0.9, rank=2, position=0, event="r"),
    ]
    assert compute(by_rank, "ranking")["mrr"] == 1.0
    by_score = [
        pair(1, None, score=0.1, position=0, event="r"),
        pair(0, None, score=0.9, position=1, event="r"),
    ]
    assert compute(by_score, "ranking")["mrr"] == 0.5


# -- task inference ---------------------------------------------------------


def test_infer_task() -> None:
    assert infer_task([pair(True, 0.3), pair(False, 0.6)]) == "classification"
    assert infer_task([pair("cat", "dog"), pair("dog", "dog")]) == "classification"
    assert infer_task([pair(i % 5, 1) for i in range(100)]) == "classification"
    assert infer_task([pair(float(i), 1.0) for i in range(21)]) == "regression"  # 21 values
    assert infer_task([pair(i + 0.5, 1.0) for i in range(3)]) == "regression"
    assert infer_task([pair("3.7", 1.0), pair("2.5", 2.0)]) == "regression"  # CSV text
    assert infer_task([pair("1", 1), pair("0", 0)]) == "classification"
    listed = [pair(1, None, event="a", position=0), pair(0, None, event="a", position=1)]
    assert infer_task(listed) == "ranking"
    # positions, but one item per request: not a ranking
    single = [pair(1, 0.9, event="a", position=0), pair(0, 0.2, event="b", position=0)]
    assert infer_task(single) == "classification"
    assert infer_task([pair(1.5, 1.0)], hint="ranking") == "ranking"
    with pytest.raises(ValueError, match="task must be"):
        infer_task([], hint="clustering")
    with pytest.raises(ValueError, match="task must be"):
        compute([], "clustering")
    assert infer_task([]) == "classification"


# -- bad input --------------------------------------------------------------


def test_wrong_typed_labels_are_invalid_never_raise() -> None:
    reg = [
        pair(1.0, 1.5),
        pair('{"a": 1}', 2.0),
        pair({"a": 1}, 2.0),
        pair(True, 2.0),
        pair(2.0, [1, 2]),
        pair(float("nan"), 1.0),
        pair(3.0, "inf"),
        pair(None, 1.0),
    ]
    m = compute(reg, "regression")
    assert m["n"] == 1 and m["invalid"] == 7 and m["mae"] == 0.5
    cls = [
        pair(1, 0.9),
        pair(None, 0.2),
        pair({"x": 1}, 0.4),
        pair(0, None),
        pair("", 1),
        pair(1, {"p": 1}),
    ]
    m = compute(cls, "classification")
    assert m["n"] == 1 and m["invalid"] == 5 and m["accuracy"] == 1.0
    rank = [
        pair(1, None, event="a", position=0),
        pair({"grade": 3}, None, event="a", position=1),
        pair("very", None, event="a", position=2),
        pair(None, None, event="a", position=3),
    ]
    m = compute(rank, "ranking")
    assert m["n"] == 2 and m["invalid"] == 2 and m["requests"] == 1 and m["mrr"] == 1.0
    for task in quality.TASKS:
        empty = compute([], task)
        assert empty["n"] == 0 and empty["invalid"] == 0
        assert_clean_json(empty)
        junk = compute([pair(object(), object(), score=math.nan)], task)
        assert junk["invalid"] == 1 and junk["n"] == 0


# -- violations -------------------------------------------------------------


def metrics_with(**kw: Any) -> dict[str, Any]:
    return {"task": "classification", "n": 1204, "invalid": 0, **kw}


def test_drop_beyond_threshold_is_one_violation() -> None:
    m = metrics_with(accuracy=0.78, roc_auc=0.94, f1=0.7)
    v, notes = quality_violations(m, {"accuracy": 0.91, "roc_auc": 0.95})
    assert v == [
        {
            "feature_name": "accuracy",
            "constraint_check_type": "model_quality_check",
            "description": "accuracy 0.78 is 0.13 below the holdout's 0.91 (max drop 0.05) "
            "over 1,204 labelled predictions",
        }
    ]
    assert notes == []
    seg, _ = quality_violations(m, {"accuracy": 0.91}, segment="model.version=2")
    assert seg[0]["segment"] == "model.version=2"


def test_within_threshold_and_min_pairs() -> None:
    m = metrics_with(accuracy=0.87)
    assert quality_violations(m, {"accuracy": 0.91}) == ([], [])
    # a per-metric override makes the same drop a violation
    v, _ = quality_violations(m, {"accuracy": 0.91}, {"metrics": {"accuracy": {"max_drop": 0.02}}})
    assert [x["feature_name"] for x in v] == ["accuracy"]
    small = {**m, "n": 150, "accuracy": 0.5}
    v, notes = quality_violations(small, {"accuracy": 0.91}, {"floors": {"accuracy": 0.8}})
    assert v == [] and len(notes) == 1
    assert "150 labelled predictions" in notes[0] and "min_pairs 200" in notes[0]
    v, notes = quality_violations(small, {"accuracy": 0.91}, {"min_pairs": 100})
    assert len(v) == 1 and notes == []


def test_floor_without_holdout_and_lower_is_better() -> None:
    m = metrics_with(accuracy=0.79, calibration_error=0.09, log_loss=0.5)
    v, _ = quality_violations(m, None, {"floors": {"accuracy": 0.8}})
    assert len(v) == 1 and v[0]["feature_name"] == "accuracy"
    assert "below the floor 0.8" in v[0]["description"]
    # holdout drop and floor on one metric: one violation saying both
    v, _ = quality_violations(m, {"accuracy": 0.9}, {"floors": {"accuracy": 0.8}})
    assert len(v) == 1 and "holdout" in v[0]["description"] and "floor" in v[0]["description"]
    # log loss: relative rise 10%; calibration error: absolute 0.05
    v, _ = quality_violations(m, {"log_loss": 0.46, "calibration_error": 0.05})
    assert v == []
    v, _ = quality_violations(m, {"log_loss": 0.4, "calibration_error": 0.02})
    assert [x["feature_name"] for x in v] == ["calibration_error", "log_loss"]
    assert "25% above the holdout's 0.4 (max rise 10%)" in v[1]["description"]
    reg = {"task": "regression", "n": 500, "invalid": 0, "mae": 3.0}
    v, _ = quality_violations(reg, None, {"floors": {"mae": 2.5}})
    assert "above the limit 2.5" in v[0]["description"]


def test_unjudgeable_metrics_get_notes() -> None:
    m = metrics_with(accuracy=0.9, roc_auc=None)
    v, notes = quality_violations(m, {"roc_auc": 0.95, "mean_score": 0.3, "accuracy": 0.9})
    assert v == []
    assert any("roc_auc cannot be computed" in n for n in notes)
    assert any("mean_score" in n for n in notes)
    rank = {"task": "ranking", "n": 5000, "requests": 120, "ndcg_at_k": 0.1}
    v, notes = quality_violations(rank, {"ndcg_at_k": 0.5})
    assert v == [] and "120 requests" in notes[0]
    with pytest.raises(ValueError, match="max_drop"):
        quality_violations(m, {"accuracy": 0.95}, {"max_drop": "a lot"})


# -- series and versions ----------------------------------------------------


def degrading_pairs() -> list[Pair]:
    """48 hours of predictions; the model is right 90% of the time for a day,
    then 60%, one prediction every 2 minutes."""
    rng = np.random.default_rng(8)
    out = []
    for i in range(48 * 30):
        t = T0 + i * 120
        y = int(rng.integers(0, 2))
        right = rng.random() < (0.9 if t < T0 + 24 * HOUR else 0.6)
        out.append(pair(y, y if right else 1 - y, time=t, version="1" if i % 2 else "2"))
    return out


def test_series_bucket_falls_before_cumulative() -> None:
    pairs = degrading_pairs()
    s = series(pairs, "classification", bucket_s=6 * HOUR, start=T0, end=T0 + 48 * HOUR)
    assert len(s) == 8
    assert s[0]["start"] == "2026-01-01T00:00:00+00:00"
    assert s[-1]["end"] == "2026-01-03T00:00:00+00:00"
    assert sum(b["n"] for b in s) == len(pairs)
    assert s[-1]["cumulative"]["n"] == len(pairs)
    first, fifth = s[0], s[4]  # the first bucket after the model degraded
    assert first["accuracy"] == pytest.approx(first["cumulative"]["accuracy"])
    assert fifth["accuracy"] < 0.7 < 0.8 < fifth["cumulative"]["accuracy"]
    assert s[-1]["cumulative"]["accuracy"] == pytest.approx(
        compute(pairs, "classification")["accuracy"]
    )
    assert_clean_json(s)


def test_series_empty_buckets_and_errors() -> None:
    pairs = [pair(1, 1, time=T0 + 10), pair(0, 1, time=T0 + 3 * HOUR + 5)]
    s = series(pairs, "classification", bucket_s=HOUR, start=T0, end=T0 + 4 * HOUR)
    assert [b["n"] for b in s] == [1, 0, 0, 1]
    assert s[1]["accuracy"] is None and s[1]["cumulative"]["n"] == 1
    assert s[3]["cumulative"]["accuracy"] == 0.5
    assert series(pairs, "classification", bucket_s=HOUR, start=T0, end=T0) == []
    with pytest.raises(ValueError, match="bucket_s"):
        series(pairs, "classification", bucket_s=0, start=T0, end=T0 + HOUR)
    with pytest.raises(ValueError, match="buckets"):
        series(pairs, "classification", bucket_s=1, start=T0, end=T0 + 30 * 86400)


def test_by_version() -> None:
    pairs = [*degrading_pairs(), pair(1, 0, version=None), pair(None, 1, version="3")]
    v = by_version(pairs, "classification")
    assert sorted(v) == ["1", "2", "3", "unknown"]
    assert v["unknown"]["n"] == 1 and v["unknown"]["accuracy"] == 0.0
    assert v["3"]["n"] == 0 and v["3"]["invalid"] == 1
    assert v["1"]["n"] + v["2"]["n"] == len(pairs) - 2
    assert v["1"]["positive"] == v["unknown"]["positive"] == "1"


# -- bias -------------------------------------------------------------------


def profile(rows: list[dict[str, Any]]) -> DatasetProfile:
    prof = DatasetProfile()
    prof.update_rows(rows)
    return prof


def test_bias_report_probabilities_against_label_column() -> None:
    rng = np.random.default_rng(9)
    base = profile([{"x": float(v), "churned": int(v > 0.7)} for v in rng.random(2000)])
    probs = rng.beta(2, 3, 3000)
    cur = profile([{"x": 1.0, "prediction": float(p)} for p in probs])
    constraints = {"monitoring_config": {"modeltap": {"label_column": "churned"}}}
    b = bias_report(base, constraints, cur)
    assert b["column"] == "prediction" and b["baseline_column"] == "churned"
    assert b["current_mean"] == pytest.approx(probs.mean())
    assert b["current_positive_rate"] == pytest.approx((probs >= 0.5).mean(), abs=0.02)
    share = base.columns["churned"].mean
    assert b["baseline_mean"] == pytest.approx(share)
    assert b["baseline_positive_rate"] == pytest.approx(share)
    assert b["mean_shift"] == pytest.approx(b["current_mean"] - b["baseline_mean"])
    assert b["positive_rate_shift"] == pytest.approx(
        b["current_positive_rate"] - b["baseline_positive_rate"]
    )
    assert_clean_json(b)
    # no label column named: the baseline side is unknown
    b2 = bias_report(base, {}, cur)
    assert b2["baseline_column"] is None and b2["baseline_mean"] is None
    assert b2["mean_shift"] is None and b2["current_mean"] == b["current_mean"]


def test_bias_report_bool_predictions_same_column() -> None:
    base = profile([{"prediction": i % 4 == 0} for i in range(400)])  # 25% True
    cur = profile([{"prediction": i % 2 == 0, "score": 0.3} for i in range(600)])  # 50%
    b = bias_report(base, {}, cur)
    assert b["column"] == "prediction" and b["baseline_column"] == "prediction"
    assert b["current_positive_rate"] == pytest.approx(0.5)
    assert b["baseline_positive_rate"] == pytest.approx(0.25)
    assert b["positive_rate_shift"] == pytest.approx(0.25)
    assert b["current_mean"] == pytest.approx(0.5)
    # score when there is no prediction; prediction.* after that; {} with none
    assert bias_report(base, {}, profile([{"score": 0.7}]))["column"] == "score"
    sub = profile([{"prediction.label": "cat", "prediction.prob": 0.2}])
    assert bias_report(base, {}, sub)["column"] == "prediction.label"
    assert bias_report(base, {}, profile([{"x": 1}])) == {}
    # a regression output: a mean, no positive rate
    reg = bias_report(profile([{"prediction": 10.0}]), {}, profile([{"prediction": 12.5}]))
    assert reg["mean_shift"] == pytest.approx(2.5) and reg["current_positive_rate"] is None


# -- evaluate ---------------------------------------------------------------


JOIN = {
    "labels": 1500,
    "matched": 1440,
    "unmatched": 50,
    "duplicates": 4,
    "wrong_model": 6,
    "invalid": 0,
    "predictions": 3000,
    "labelled_share": 0.48,
}


def test_evaluate_full() -> None:
    pairs = degrading_pairs()
    cur = profile([{"prediction": p.prediction} for p in pairs])
    base = profile([{"prediction": i % 2} for i in range(100)])
    doc = evaluate(
        pairs,
        join=JOIN,
        holdout={"accuracy": 0.9, "roc_auc": 0.95},
        config={"floors": {"f1": 0.5}},
        start=T0,
        end=T0 + 48 * HOUR,
        baseline=base,
        constraints={},
        current=cur,
    )
    assert doc["task"] == "classification" and doc["pairs"] == len(pairs)
    assert doc["join"] == JOIN
    assert doc["metrics"]["n"] == len(pairs)
    assert len(doc["series"]) == 48  # hourly: the window is two days, not more
    assert sorted(doc["by_version"]) == ["1", "2"]
    assert doc["deltas"]["accuracy"] == pytest.approx(doc["metrics"]["accuracy"] - 0.9)
    assert doc["deltas"]["roc_auc"] is None  # no probabilities
    assert [v["feature_name"] for v in doc["violations"]] == ["accuracy"]
    assert any("roc_auc" in n for n in doc["notes"])
    assert doc["bias"]["column"] == "prediction" and doc["bias"]["baseline_mean"] == 0.5
    assert_clean_json(doc)
    longer = evaluate(pairs, join={}, holdout=None, config=None, start=T0, end=T0 + 3 * 86400)
    assert len(longer["series"]) == 3 and longer["violations"] == [] and longer["bias"] == {}


def test_evaluate_no_pairs_and_config_options() -> None:
    cur = profile([{"prediction": 0.7}])
    doc = evaluate(
        [],
        join={"labels": 0},
        holdout={"accuracy": 0.9},
        config=None,
        start=T0,
        end=T0 + HOUR,
        baseline=profile([{"prediction": 0.2}]),
        current=cur,
    )
    assert doc["task"] is None and doc["metrics"] == {} and doc["violations"] == []
    assert doc["notes"] == ["no labels received in the window: model quality not measured"]
    quiet = evaluate([], join={"labels": 0}, holdout=None, config=None, start=T0, end=T0 + HOUR)
    assert quiet["notes"] == []  # labels not in use: nothing to say on every run
    lost = evaluate([], join={"labels": 3}, holdout=None, config=None, start=T0, end=T0 + HOUR)
    assert lost["notes"] == [
        "3 labels received in the window, none joined to a captured prediction "
        "(see the join counts)"
    ]
    assert doc["bias"]["current_mean"] == pytest.approx(0.7)
    assert_clean_json(doc)
    pairs = [pair(1, None, score=0.6), pair(0, None, score=0.4)]
    doc = evaluate(
        pairs,
        join={},
        holdout=None,
        config={"threshold": 0.65, "positive": 1},
        start=T0,
        end=T0 + HOUR,
        task="classification",
    )
    assert doc["metrics"]["positive_rate"] == 0.0 and doc["metrics"]["positive"] == "1"
    assert doc["metrics"]["accuracy"] == 0.5
    ranking = evaluate(
        [pair(1, None, event="a", position=0), pair(0, None, event="a", position=1)],
        join={},
        holdout={"ndcg_at_k": 1.0},
        config={"k": 1, "min_pairs": 1},
        start=T0,
        end=T0 + HOUR,
    )
    assert ranking["task"] == "ranking" and ranking["metrics"]["k"] == 1
    assert ranking["deltas"] == {"ndcg_at_k": 0.0} and ranking["violations"] == []
