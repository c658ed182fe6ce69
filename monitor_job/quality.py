"""Model quality: captured predictions joined with their ground-truth labels.

``monitor_job.groundtruth`` joins posted labels to captured prediction rows
and hands over ``Pair``s; this module scores them, compares the scores with
the baseline's holdout metrics and says what changed. numpy only (no
scikit-learn at run time; the tests check every figure against it).

Task (``infer_task``): the caller's ``hint`` wins (``ValueError`` when it is
not one of ``TASKS``). Otherwise ``ranking`` when pairs carry ``rank`` or
``position`` and some ``event_id`` has more than one pair (a request with a
list of items); ``classification`` when most labels are bools or strings, or
when the numeric labels are integral with at most 20 distinct values (class
ids, 0/1); ``regression`` otherwise. A string that parses as a number counts
as that number (SageMaker's CSV ground truth arrives as text: "3.7" is a
regression target, "1" a class id). No labels at all: ``classification``.

Classification:

- Labels and predicted classes are compared after canonicalising:
  True == 1 == 1.0 == "1" == "true" == "yes" (and False == 0 == "false" ==
  "no"; only these four words ignore case); other strings are
  case-sensitive class names. A label that is None, NaN, an empty string, a
  list or an object cannot be scored: the pair counts in ``invalid``.
- Probability of the positive class: ``score`` when it is a number in
  [0, 1], else ``prediction`` when it is a float in [0, 1] (an int 0/1 is a
  class, not a probability). Predicted class: probability >= ``threshold``
  (default 0.5, the usual decision rule), else ``prediction`` itself. A pair
  with neither a usable probability nor a predicted class is ``invalid``.
- Binary when the classes (labels and predicted classes together) are two,
  or are only 0/1 (a window with positive labels only is still binary), or
  are one class while probabilities are given; multi-class otherwise.
- Positive class: the ``positive`` argument, else 1 (True, "1", "true",
  "yes") when present, else a class named "positive" (any case), else the
  largest class (numbers ordered as numbers, then strings). The class set
  and the positive class are fixed over all the pairs given, so a bucket or
  a version with one class only is still scored against the same positive.
- Metrics: ``accuracy``; ``precision``, ``recall``, ``f1`` of the positive
  class (binary) or their macro average over the classes present in the
  labels or the predictions (multi-class, as sklearn's ``average="macro"``,
  where a class's undefined precision counts 0). In the binary case an
  undefined figure is None, not sklearn's 0: a window without positive
  labels has no recall, and alarming on a 0 there would be a false alarm.
  From the probabilities (binary only, None otherwise): ``roc_auc``
  (Mann-Whitney with average ranks for ties; None with one class),
  ``log_loss`` (probabilities clipped to [1e-15, 1 - 1e-15], as sklearn),
  ``calibration_error`` (expected calibration error: 10 equal-width bins
  over [0, 1], each |mean label - mean probability| weighted by its share of
  pairs), ``mean_score``; and ``positive_rate`` (predicted positives),
  ``label_positive_rate``. Also ``average`` ("binary" | "macro"),
  ``classes``, ``positive`` and ``probabilities`` (pairs with one).

Regression: ``mae``, ``rmse``, ``mape`` (a fraction, as sklearn's; pairs
whose label is 0 are skipped, None when none is left), ``bias`` (mean of
prediction - label: > 0 over-predicts), ``mean_prediction``,
``mean_label``. A label or prediction that is not a finite number (bools
included: True is not a target value) is ``invalid``; a numeric string
("3.5") counts as its number.

Ranking: pairs grouped by ``event_id`` (a request). Relevance = the label
(True/False -> 1/0, None -> 0 for an item nobody labelled, numbers as
they are; anything else makes the pair invalid and it is left out of its
request). Items are ordered by ``rank`` ascending when every item of the
request has one, else by ``score`` descending when every item has one, else
by ``position`` (ties keep the pairs' order). Per request: NDCG@k with
linear gain rel / log2(i + 2) (sklearn's ``ndcg_score``), MRR (1 / the
1-based place of the first item with relevance > 0, 0 if none; not cut at
k) and hit rate@k (1 when a relevant item is in the top k); averaged over
requests. A request whose relevances are all 0 counts, with NDCG 0 (as
sklearn's ``ndcg_score``, which the tests compare against): dropping them
would hide a model that stopped surfacing anything relevant. Keys: ``n``
(pairs), ``requests``, ``ndcg_at_k``, ``mrr``, ``hit_rate_at_k``, ``k``
(default 10, the usual first page).

Every metric dict has ``task``, ``n`` and ``invalid``; values are plain
ints, floats, strings or None, never NaN (orjson-ready).

``series`` cuts [start, end) into buckets by prediction time and gives each
bucket's metrics beside the cumulative metrics from ``start`` to the
bucket's end: a model that degrades shows in the bucket figure long before
the cumulative one moves. Empty buckets have n = 0 and None metrics; at most
``MAX_BUCKETS`` buckets. ``evaluate`` picks daily buckets for windows over
two days, hourly ones otherwise (a day of hourly points, a month of daily).

``quality_violations`` compares the metrics with the holdout metrics the
user gave at baseline time. Defaults, all overridable in ``config``
(``{"min_pairs": 200, "max_drop": 0.05, "max_rise": 0.1,
"metrics": {"accuracy": {"max_drop": 0.02}}, "floors": {"accuracy": 0.8}}``):

- Higher-is-better metrics (``HIGHER_IS_BETTER``) violate when
  holdout - current > ``max_drop`` (0.05 absolute: five points of accuracy
  or AUC is a drop worth a look, one point is daily noise).
- Lower-is-better ones (``mae``, ``rmse``, ``mape``, ``log_loss``) violate
  when current > holdout * (1 + ``max_rise``) (0.10 relative: errors have
  the target's unit, so only a relative rise means the same everywhere).
  ``calibration_error`` uses an absolute rise of 0.05 instead (its holdout
  can be ~0, where any relative rise alarms); only a per-metric
  ``max_rise`` changes it, and that too is absolute.
- ``floors``: the worst acceptable value, judged with or without a holdout:
  below it for a higher-is-better metric, above it (a ceiling, then) for a
  lower-is-better one. One violation per metric; a metric beyond both its
  holdout drop and its floor says both.
- ``min_pairs`` (200): with fewer labelled predictions (requests, for
  ranking: the unit its averages run over) nothing is judged, and a note
  says so. The binomial standard error of an accuracy near 0.9 is
  sqrt(0.9 * 0.1 / n): 0.030 at n = 100, whose two-SE band (0.06) is wider
  than the 0.05 drop alarmed on; at n = 200 it is 0.021, so a 0.05 drop is
  2.4 SE away from noise.
- Metrics absent from both the holdout and the floors are not judged; a
  holdout metric this window cannot compute (AUC of a single-class window,
  a metric of another task) gets a note instead.

``evaluate`` reads ``k``, ``positive`` and ``threshold`` from ``config``
too. ``bias_report`` needs no labels: the prediction column's mean and
positive rate in the window's full profile against the baseline's (its own
prediction column, else its label column).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from capture.profile import ColumnProfile, DatasetProfile, canonical

TASKS = ("classification", "regression", "ranking")
HIGHER_IS_BETTER = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "ndcg_at_k",
    "mrr",
    "hit_rate_at_k",
)
LOWER_IS_BETTER = ("mae", "rmse", "mape", "log_loss", "calibration_error")
ABSOLUTE_RISE = {"calibration_error": 0.05}  # metrics whose rise is absolute, with its default
DEFAULT_CONFIG: dict[str, Any] = {
    "min_pairs": 200,
    "max_drop": 0.05,
    "max_rise": 0.10,
    "metrics": {},
    "floors": {},
}
HEADLINE = {
    "classification": ("accuracy", "roc_auc"),
    "regression": ("mae",),
    "ranking": ("ndcg_at_k",),
}
MAX_INTEGRAL_CLASSES = 20
CLIP = 1e-15
CALIBRATION_BINS = 10
MAX_BUCKETS = 10_000
DAY = 86400.0
HOUR = 3600.0
UNKNOWN_VERSION = "unknown"
CHECK = "model_quality_check"
_TRUE_WORDS = {"true": "1", "yes": "1", "false": "0", "no": "0"}
_POSITIVE_KEYS = {"1", "true", "yes"}
_BINARY_KEYS = {"0", "1", "true", "false", "yes", "no"}


@dataclass(frozen=True)
class Pair:
    """One captured prediction row with its ground-truth label."""

    event_id: str
    item_id: str | None
    label: Any  # bool | int | float | str as posted; None only for unlabelled ranking items
    prediction: Any  # predicted class, probability of the positive class, or a value
    score: float | None  # probability of the positive class, or a ranking score
    rank: int | None  # ranking: 1 = top
    position: int | None  # ranking: 0-based position in the request
    version: str | None  # model version
    time: float  # prediction time, epoch s
    label_time: float  # label time, epoch s


# -- values ------------------------------------------------------------------


def real_number(v: Any) -> float | None:
    """A finite int/float (not bool) as float, else None."""
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        return None
    try:
        x = float(v)
    except OverflowError:
        return None
    return x if math.isfinite(x) else None


def _number(v: Any) -> float | None:
    """A finite number, or a string holding one ("3.5"); None for anything else."""
    if isinstance(v, str):
        s = v.strip()
        if not s or "_" in s or len(s) > 64:
            return None
        try:
            x = float(s)
        except ValueError:
            return None
        return x if math.isfinite(x) else None
    return real_number(v)


def _class_key(v: Any) -> str | None:
    """The class a label or prediction stands for (True == 1 == "1" == "true"), or None."""
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return "1" if v else "0"
    if isinstance(v, (int, float, np.integer, np.floating)):
        if isinstance(v, (float, np.floating)) and not math.isfinite(float(v)):
            return None
        return canonical(v)
    if isinstance(v, str):
        if not v:
            return None
        word = _TRUE_WORDS.get(v.lower()) if len(v) <= 5 else None
        return word if word is not None else canonical(v)
    return None


def _class_order(key: str) -> tuple[int, float, str]:
    x = _number(key)
    return (0, x, "") if x is not None else (1, 0.0, key)


def _score_prob(v: Any) -> float | None:
    x = real_number(v)
    return x if x is not None and 0.0 <= x <= 1.0 else None


def _pred_prob(v: Any) -> float | None:
    if isinstance(v, (float, np.floating)):
        x = float(v)
        if 0.0 <= x <= 1.0:
            return x
    return None


def _f(x: Any) -> float | None:
    """A plain finite float or None (no numpy scalars, no NaN in the output)."""
    if x is None:
        return None
    y = float(x)
    return y if math.isfinite(y) else None


def _version(v: Any) -> str:
    return UNKNOWN_VERSION if v is None else str(v)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def _fmt(x: float) -> str:
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}" if a >= 1e-3 or a == 0 else f"{x:.2e}"


def _time(v: Any) -> float:
    x = real_number(v)
    return x if x is not None else math.nan


# -- prepared pairs: arrays built once, metrics of any subset ---------------


class _Scored:
    """Pairs made into arrays once (one unit per pair, or per request for
    ranking); ``metrics`` scores any subset of the units."""

    task = ""

    def __init__(self) -> None:
        self.time = np.zeros(0)
        self.version = np.zeros(0, dtype=str)
        self.bad_time = np.zeros(0)
        self.bad_version = np.zeros(0, dtype=str)

    def _set_index(
        self, times: list[float], versions: list[str], bad_t: list[float], bad_v: list[str]
    ) -> None:
        self.time = np.asarray(times, dtype=float)
        self.version = np.asarray(versions, dtype=str)
        self.bad_time = np.asarray(bad_t, dtype=float)
        self.bad_version = np.asarray(bad_v, dtype=str)

    def metrics(self, sel: np.ndarray, invalid: int) -> dict[str, Any]:
        raise NotImplementedError

    def all(self) -> dict[str, Any]:
        return self.metrics(np.ones(len(self.time), dtype=bool), len(self.bad_time))


class _Classification(_Scored):
    task = "classification"

    def __init__(self, pairs: Sequence[Pair], positive: Any, threshold: float) -> None:
        super().__init__()
        pos_key = None
        if positive is not None:
            pos_key = _class_key(positive)
            if pos_key is None:
                raise ValueError(f"positive class {positive!r} is not a usable class value")
        rows: list[tuple[str, float | None, str | None, Pair]] = []
        bad_t: list[float] = []
        bad_v: list[str] = []
        for p in pairs:
            lab = _class_key(p.label)
            prob = _score_prob(p.score)
            if prob is None:
                prob = _pred_prob(p.prediction)
            cp = _class_key(p.prediction)
            if lab is None or (prob is None and cp is None):
                bad_t.append(_time(p.time))
                bad_v.append(_version(p.version))
                continue
            rows.append((lab, prob, cp, p))
        classes = {r[0] for r in rows} | {r[2] for r in rows if r[1] is None and r[2] is not None}
        if pos_key is not None:
            classes.add(pos_key)
        any_prob = any(r[1] is not None for r in rows)
        self.binary = (
            len(classes) == 2
            or (bool(classes) and classes <= {"0", "1"})
            or (len(classes) == 1 and any_prob)
        )
        if self.binary and classes <= {"0", "1"}:
            classes = {"0", "1"}
        if pos_key is None and self.binary:
            named = sorted(c for c in classes if c.lower() == "positive")
            if "1" in classes:
                pos_key = "1"
            elif named:
                pos_key = named[0]
            else:
                pos_key = max(classes, key=_class_order)
        self.positive = pos_key if self.binary else None
        self.n_classes = len(classes)
        times: list[float] = []
        versions: list[str] = []
        if self.binary:
            y, yhat, probs = [], [], []
            for lab, prob, cp, p in rows:
                y.append(lab == pos_key)
                yhat.append(prob >= threshold if prob is not None else cp == pos_key)
                probs.append(math.nan if prob is None else prob)
                times.append(_time(p.time))
                versions.append(_version(p.version))
            self.y = np.asarray(y, dtype=bool)
            self.yhat = np.asarray(yhat, dtype=bool)
            self.p = np.asarray(probs, dtype=float)
        else:
            order = sorted(classes | {r[2] for r in rows if r[2] is not None}, key=_class_order)
            code = {c: i for i, c in enumerate(order)}
            self.k = len(order)
            lc, pc = [], []
            for lab, _prob, cp, p in rows:
                if cp is None:  # a probability alone names no class among several
                    bad_t.append(_time(p.time))
                    bad_v.append(_version(p.version))
                    continue
                lc.append(code[lab])
                pc.append(code[cp])
                times.append(_time(p.time))
                versions.append(_version(p.version))
            self.n_classes = len(order)
            self.lc = np.asarray(lc, dtype=np.int64)
            self.pc = np.asarray(pc, dtype=np.int64)
        self._set_index(times, versions, bad_t, bad_v)

    def metrics(self, sel: np.ndarray, invalid: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": self.task,
            "n": 0,
            "invalid": int(invalid),
            "average": "binary" if self.binary else "macro",
            "classes": self.n_classes,
            "positive": self.positive,
            "accuracy": None,
            "precision": None,
            "recall": None,
            "f1": None,
            "roc_auc": None,
            "log_loss": None,
            "calibration_error": None,
            "mean_score": None,
            "positive_rate": None,
            "label_positive_rate": None,
            "probabilities": 0,
        }
        if self.binary:
            self._binary(out, sel)
        else:
            self._multiclass(out, sel)
        return out

    def _binary(self, out: dict[str, Any], sel: np.ndarray) -> None:
        y, yhat, p = self.y[sel], self.yhat[sel], self.p[sel]
        n = int(y.size)
        out["n"] = n
        if not n:
            return
        tp = int(np.sum(y & yhat))
        fp = int(np.sum(~y & yhat))
        fn = int(np.sum(y & ~yhat))
        out["accuracy"] = _f(np.mean(y == yhat))
        out["precision"] = tp / (tp + fp) if tp + fp else None
        out["recall"] = tp / (tp + fn) if tp + fn else None
        out["f1"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
        out["positive_rate"] = _f(np.mean(yhat))
        out["label_positive_rate"] = _f(np.mean(y))
        has = ~np.isnan(p)
        out["probabilities"] = int(has.sum())
        if not has.any():
            return
        yy, pp = y[has], p[has]
        out["mean_score"] = _f(pp.mean())
        out["roc_auc"] = _roc_auc(yy, pp)
        clipped = np.clip(pp, CLIP, 1 - CLIP)
        out["log_loss"] = _f(-np.mean(np.where(yy, np.log(clipped), np.log1p(-clipped))))
        bins = np.minimum((pp * CALIBRATION_BINS).astype(np.int64), CALIBRATION_BINS - 1)
        gap = np.bincount(bins, weights=yy.astype(float), minlength=CALIBRATION_BINS)
        gap -= np.bincount(bins, weights=pp, minlength=CALIBRATION_BINS)
        out["calibration_error"] = _f(np.abs(gap).sum() / pp.size)

    def _multiclass(self, out: dict[str, Any], sel: np.ndarray) -> None:
        lc, pc = self.lc[sel], self.pc[sel]
        n = int(lc.size)
        out["n"] = n
        if not n:
            return
        k = self.k
        right = lc == pc
        tp = np.bincount(lc[right], minlength=k).astype(float)
        true = np.bincount(lc, minlength=k).astype(float)
        pred = np.bincount(pc, minlength=k).astype(float)
        present = (true > 0) | (pred > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            prec = np.where(pred > 0, tp / pred, 0.0)[present]
            rec = np.where(true > 0, tp / true, 0.0)[present]
            f1 = np.where(pred + true > 0, 2 * tp / (pred + true), 0.0)[present]
        out["accuracy"] = _f(right.mean())
        out["precision"] = _f(prec.mean())
        out["recall"] = _f(rec.mean())
        out["f1"] = _f(f1.mean())


def _roc_auc(y: np.ndarray, p: np.ndarray) -> float | None:
    """Area under the ROC curve: the Mann-Whitney U with average ranks for ties."""
    npos = int(y.sum())
    nneg = int(y.size - npos)
    if not npos or not nneg:
        return None
    _, inv, counts = np.unique(p, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    avg = ends - (counts - 1) / 2.0  # 1-based average rank of each distinct value
    ranks = avg[inv.reshape(-1)]
    u = ranks[y].sum() - npos * (npos + 1) / 2.0
    return _f(u / (npos * nneg))


class _Regression(_Scored):
    task = "regression"

    def __init__(self, pairs: Sequence[Pair]) -> None:
        super().__init__()
        y, yhat, times, versions, bad_t, bad_v = [], [], [], [], [], []
        for p in pairs:
            a, b = _number(p.label), _number(p.prediction)
            if a is None or b is None:
                bad_t.append(_time(p.time))
                bad_v.append(_version(p.version))
                continue
            y.append(a)
            yhat.append(b)
            times.append(_time(p.time))
            versions.append(_version(p.version))
        self.y = np.asarray(y, dtype=float)
        self.yhat = np.asarray(yhat, dtype=float)
        self._set_index(times, versions, bad_t, bad_v)

    def metrics(self, sel: np.ndarray, invalid: int) -> dict[str, Any]:
        y, yhat = self.y[sel], self.yhat[sel]
        n = int(y.size)
        out: dict[str, Any] = {
            "task": self.task,
            "n": n,
            "invalid": int(invalid),
            "mae": None,
            "rmse": None,
            "mape": None,
            "bias": None,
            "mean_prediction": None,
            "mean_label": None,
        }
        if not n:
            return out
        with np.errstate(over="ignore", invalid="ignore"):
            err = yhat - y
            out["mae"] = _f(np.mean(np.abs(err)))
            out["rmse"] = _f(np.sqrt(np.mean(err * err)))
            nz = y != 0
            out["mape"] = _f(np.mean(np.abs(err[nz]) / np.abs(y[nz]))) if nz.any() else None
            out["bias"] = _f(np.mean(err))
            out["mean_prediction"] = _f(np.mean(yhat))
            out["mean_label"] = _f(np.mean(y))
        return out


def _relevance(v: Any) -> float | None:
    if v is None:
        return 0.0
    if isinstance(v, (bool, np.bool_)):
        return 1.0 if v else 0.0
    return _number(v)


def _order_key(how: str, p: Pair, i: int) -> tuple[float, float, int]:
    pos = real_number(p.position)
    pos_key = pos if pos is not None else math.inf
    if how == "rank":
        return (real_number(p.rank) or 0.0, pos_key, i)
    if how == "score":
        return (-(real_number(p.score) or 0.0), pos_key, i)
    return (pos_key, 0.0, i)


def _request_scores(rels: Sequence[float], k: int) -> tuple[float, float, float]:
    """(NDCG@k, reciprocal rank, hit@k) of one request's relevances in ranked order."""
    r = np.asarray(rels, dtype=float)
    discount = 1.0 / np.log2(np.arange(2, min(k, r.size) + 2))
    dcg = float(np.sum(r[:k] * discount))
    ideal = float(np.sum(np.sort(r)[::-1][:k] * discount))
    ndcg = dcg / ideal if ideal > 0 else 0.0
    hits = np.flatnonzero(r > 0)
    rr = 1.0 / (hits[0] + 1) if hits.size else 0.0
    hit = 1.0 if hits.size and hits[0] < k else 0.0
    return ndcg, float(rr), hit


class _Ranking(_Scored):
    task = "ranking"

    def __init__(self, pairs: Sequence[Pair], k: int) -> None:
        super().__init__()
        self.k = k
        groups: dict[str, list[tuple[int, Pair, float]]] = {}
        bad_t: list[float] = []
        bad_v: list[str] = []
        for i, p in enumerate(pairs):
            rel = _relevance(p.label)
            if rel is None:
                bad_t.append(_time(p.time))
                bad_v.append(_version(p.version))
                continue
            groups.setdefault(str(p.event_id), []).append((i, p, rel))
        ndcg, rr, hit, npairs, times, versions = [], [], [], [], [], []
        for items in groups.values():
            if all(real_number(p.rank) is not None for _, p, _ in items):
                how = "rank"
            elif all(real_number(p.score) is not None for _, p, _ in items):
                how = "score"
            else:
                how = "position"
            items.sort(key=lambda t: _order_key(how, t[1], t[0]))
            a, b, c = _request_scores([rel for _, _, rel in items], k)
            ndcg.append(a)
            rr.append(b)
            hit.append(c)
            npairs.append(len(items))
            times.append(min(_time(p.time) for _, p, _ in items))
            versions.append(_version(items[0][1].version))
        self.ndcg = np.asarray(ndcg, dtype=float)
        self.rr = np.asarray(rr, dtype=float)
        self.hit = np.asarray(hit, dtype=float)
        self.npairs = np.asarray(npairs, dtype=np.int64)
        self._set_index(times, versions, bad_t, bad_v)

    def metrics(self, sel: np.ndarray, invalid: int) -> dict[str, Any]:
        ndcg = self.ndcg[sel]
        requests = int(ndcg.size)
        some = requests > 0
        return {
            "task": self.task,
            "n": int(self.npairs[sel].sum()),
            "invalid": int(invalid),
            "requests": requests,
            "k": self.k,
            "ndcg_at_k": _f(ndcg.mean()) if some else None,
            "mrr": _f(self.rr[sel].mean()) if some else None,
            "hit_rate_at_k": _f(self.hit[sel].mean()) if some else None,
        }


def _task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    return task


def _prepare(
    pairs: Sequence[Pair],
    task: str,
    *,
    k: int = 10,
    positive: Any = None,
    threshold: float = 0.5,
) -> _Scored:
    if _task(task) == "classification":
        t = real_number(threshold)
        if t is None or not 0.0 <= t <= 1.0:
            raise ValueError(f"threshold must be a number in [0, 1], not {threshold!r}")
        return _Classification(pairs, positive, t)
    if task == "regression":
        return _Regression(pairs)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, not {k!r}")
    return _Ranking(pairs, int(k))


# -- public API ------------------------------------------------------------


def infer_task(pairs: Sequence[Pair], hint: str | None = None) -> str:
    """The task the pairs come from; ``hint`` wins (``ValueError`` if not a task)."""
    if hint is not None:
        return _task(hint)
    per_event = Counter(p.event_id for p in pairs)
    listed = any(p.rank is not None or p.position is not None for p in pairs)
    if listed and any(c > 1 for c in per_event.values()):
        return "ranking"
    textual = numeric = 0
    values: set[float] = set()
    integral = True
    for p in pairs:
        lab = p.label
        if lab is None:
            continue
        if isinstance(lab, (bool, np.bool_)):
            textual += 1
            continue
        x = _number(lab)
        if x is None:
            textual += isinstance(lab, str)
            continue
        numeric += 1
        integral = integral and x.is_integer()
        if len(values) <= MAX_INTEGRAL_CLASSES:
            values.add(x)
    if textual >= numeric:
        return "classification"
    if integral and len(values) <= MAX_INTEGRAL_CLASSES:
        return "classification"
    return "regression"


def compute(
    pairs: Sequence[Pair],
    task: str,
    *,
    k: int = 10,
    positive: Any = None,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """The task's metrics over all ``pairs`` (see the module docstring)."""
    return _prepare(pairs, task, k=k, positive=positive, threshold=threshold).all()


def series(
    pairs: Sequence[Pair],
    task: str,
    *,
    bucket_s: float,
    start: float,
    end: float,
    **kw: Any,
) -> list[dict[str, Any]]:
    """Per-bucket metrics of [start, end) by prediction time, each with the
    cumulative metrics from ``start`` to the bucket's end."""
    _buckets(bucket_s, start, end)  # bad arguments fail before any work
    return _series(_prepare(pairs, task, **kw), bucket_s, start, end)


def _buckets(bucket_s: float, start: float, end: float) -> int:
    step, lo, hi = real_number(bucket_s), real_number(start), real_number(end)
    if step is None or step <= 0:
        raise ValueError(f"bucket_s must be a positive number of seconds, not {bucket_s!r}")
    if lo is None or hi is None:
        raise ValueError(f"start and end must be finite epoch seconds, not {start!r}, {end!r}")
    if not hi > lo:
        return 0
    buckets = math.ceil((hi - lo) / step)
    if buckets > MAX_BUCKETS:
        raise ValueError(
            f"{buckets:,} buckets of {step:g}s in the window (max {MAX_BUCKETS:,}): "
            "use longer buckets"
        )
    return buckets


def _series(data: _Scored, step: float, start: float, end: float) -> list[dict[str, Any]]:
    buckets = _buckets(step, start, end)
    t, bt = data.time, data.bad_time
    out = []
    for i in range(buckets):
        lo, hi = start + i * step, min(start + (i + 1) * step, end)
        sel = (t >= lo) & (t < hi)
        cum = (t >= start) & (t < hi)
        bad = int(np.sum((bt >= lo) & (bt < hi)))
        bad_cum = int(np.sum((bt >= start) & (bt < hi)))
        entry: dict[str, Any] = {"start": _iso(lo), "end": _iso(hi)}
        entry.update(data.metrics(sel, bad))
        entry["cumulative"] = data.metrics(cum, bad_cum)
        out.append(entry)
    return out


def by_version(pairs: Sequence[Pair], task: str, **kw: Any) -> dict[str, dict[str, Any]]:
    """The metrics per model version (None -> "unknown"), the class set shared."""
    return _by_version(_prepare(pairs, task, **kw))


def _by_version(data: _Scored) -> dict[str, dict[str, Any]]:
    names = sorted(set(data.version.tolist()) | set(data.bad_version.tolist()))
    return {v: data.metrics(data.version == v, int(np.sum(data.bad_version == v))) for v in names}


def _cfg_number(value: Any, what: str) -> float:
    x = real_number(value)
    if x is None or x < 0:
        raise ValueError(f"model quality config {what} must be a number >= 0, not {value!r}")
    return x


def _quality_config(config: dict[str, Any] | None) -> dict[str, Any]:
    cfg = dict(DEFAULT_CONFIG)
    for key, value in (config or {}).items():
        if value is not None:
            cfg[key] = value
    for key in ("metrics", "floors"):
        if not isinstance(cfg[key], dict):
            raise ValueError(f"model quality config {key!r} must be an object, not {cfg[key]!r}")
    return cfg


def quality_violations(
    metrics: dict[str, Any],
    holdout: dict[str, float] | None,
    config: dict[str, Any] | None = None,
    *,
    segment: str | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """(violations, notes): the metrics against the holdout's and the floors."""
    cfg = _quality_config(config)
    min_pairs = _cfg_number(cfg["min_pairs"], "min_pairs")
    holdout = holdout or {}
    floors: dict[str, Any] = cfg["floors"]
    per_metric: dict[str, Any] = cfg["metrics"]
    violations: list[dict[str, Any]] = []
    notes: list[str] = []
    if not metrics or not (holdout or floors):
        return violations, notes
    ranking = metrics.get("task") == "ranking"
    size = metrics.get("requests") if ranking else metrics.get("n")
    unit = "requests" if ranking else "labelled predictions"
    count = int(size) if isinstance(size, int) else 0
    where = f" in {segment}" if segment else ""
    if count < min_pairs:
        notes.append(
            f"{count:,} {unit}{where} (< min_pairs {min_pairs:g}): model quality not judged, "
            "the metrics' sampling noise is larger than the drops alarmed on"
        )
        return violations, notes
    over = f"over {count:,} {unit}"
    for name in sorted(set(holdout) | set(floors)):
        higher = name in HIGHER_IS_BETTER
        if not higher and name not in LOWER_IS_BETTER:
            notes.append(f"{name}: not a judged quality metric{where}; ignored")
            continue
        cur = real_number(metrics.get(name))
        if cur is None:
            notes.append(f"{name} cannot be computed{where} in this window; not judged")
            continue
        own = per_metric.get(name) or {}
        if not isinstance(own, dict):
            raise ValueError(f"model quality config metrics.{name} must be an object")
        found: list[str] = []
        h = real_number(holdout.get(name)) if name in holdout else None
        if name in holdout and h is None:
            notes.append(f"holdout {name} {holdout.get(name)!r} is not a number; not compared")
        if h is not None and higher:
            limit = _cfg_number(own.get("max_drop", cfg["max_drop"]), f"{name} max_drop")
            if h - cur > limit:
                found.append(
                    f"{name} {_fmt(cur)} is {_fmt(h - cur)} below the holdout's {_fmt(h)} "
                    f"(max drop {limit:g})"
                )
        elif h is not None and name in ABSOLUTE_RISE:
            limit = _cfg_number(own.get("max_rise", ABSOLUTE_RISE[name]), f"{name} max_rise")
            if cur - h > limit:
                found.append(
                    f"{name} {_fmt(cur)} is {_fmt(cur - h)} above the holdout's {_fmt(h)} "
                    f"(max rise {limit:g})"
                )
        elif h is not None:
            limit = _cfg_number(own.get("max_rise", cfg["max_rise"]), f"{name} max_rise")
            if cur > h * (1 + limit):
                rise = f"{(cur - h) / h:.0%}" if h > 0 else f"{_fmt(cur - h)}"
                found.append(
                    f"{name} {_fmt(cur)} is {rise} above the holdout's {_fmt(h)} "
                    f"(max rise {limit:.0%})"
                )
        if name in floors:
            floor = real_number(floors[name])
            if floor is None:
                raise ValueError(f"model quality floor for {name} must be a number")
            if higher and cur < floor:
                found.append(f"{name} {_fmt(cur)} is below the floor {floor:g}")
            elif not higher and cur > floor:
                found.append(f"{name} {_fmt(cur)} is above the limit {floor:g}")
        if found:
            v: dict[str, Any] = {
                "feature_name": name,
                "constraint_check_type": CHECK,
                "description": "; ".join(found) + f" {over}",
            }
            if segment:
                v["segment"] = segment
            violations.append(v)
    return violations, notes


def _present(col: ColumnProfile) -> int:
    return max(0, col.count - col.nulls - col.nan)


def _prediction_column(prof: DatasetProfile) -> str | None:
    cols = prof.columns
    for name in ("prediction", "score"):
        if name in cols and _present(cols[name]):
            return name
    for name in sorted(cols):
        if name.startswith("prediction.") and _present(cols[name]):
            return name
    return None


def _is_probability(col: ColumnProfile) -> bool:
    lo, hi = col.min, col.max
    return bool(col.numeric_count) and lo is not None and hi is not None and lo >= 0 and hi <= 1


def _column_bias(col: ColumnProfile | None) -> tuple[float | None, float | None]:
    """(mean, positive rate) of a prediction or label column; None where unknown."""
    if col is None:
        return None, None
    present = _present(col)
    if not present:
        return None, None
    mean = col.mean if col.numeric_count else None
    rate = None
    top = col.top(8)
    keys = {k.lower() for k, _ in top}
    if top and keys <= _BINARY_KEYS and col.distinct() < 2.5:
        positives = sum(c for k, c in top if k.lower() in _POSITIVE_KEYS)
        rate = min(1.0, positives / present)
        if mean is None:
            mean = rate  # booleans: the share of True
    elif _is_probability(col):  # the share at or above 0.5
        below = col.cdf([0.5], inclusive=False)
        rate = 1.0 - below[0] if below else None
    return _f(mean), _f(rate)


def bias_report(
    baseline: DatasetProfile, constraints: dict[str, Any], current: DatasetProfile
) -> dict[str, Any]:
    """Prediction bias without labels: the window's prediction column against the
    baseline's (same column, else the baseline's label column); {} without one."""
    name = _prediction_column(current)
    if name is None:
        return {}
    base_name: str | None = None
    base_col = baseline.columns.get(name)
    if base_col is not None and _present(base_col):
        base_name = name
    else:
        mc = constraints.get("monitoring_config") if isinstance(constraints, dict) else None
        mt = mc.get("modeltap") if isinstance(mc, dict) else None
        label = mt.get("label_column") if isinstance(mt, dict) else None
        if isinstance(label, str) and label in baseline.columns:
            base_name = label
    cur_mean, cur_rate = _column_bias(current.columns[name])
    base_mean, base_rate = _column_bias(
        baseline.columns.get(base_name) if base_name is not None else None
    )
    return {
        "column": name,
        "baseline_column": base_name,
        "current_mean": cur_mean,
        "baseline_mean": base_mean,
        "current_positive_rate": cur_rate,
        "baseline_positive_rate": base_rate,
        "mean_shift": _f(cur_mean - base_mean)
        if cur_mean is not None and base_mean is not None
        else None,
        "positive_rate_shift": _f(cur_rate - base_rate)
        if cur_rate is not None and base_rate is not None
        else None,
    }


def _default_bucket(start: float, end: float) -> float:
    """Daily buckets for windows over two days, hourly ones otherwise."""
    return DAY if end - start > 2 * DAY else HOUR


def evaluate(
    pairs: Sequence[Pair],
    *,
    join: dict[str, Any],
    holdout: dict[str, float] | None,
    config: dict[str, Any] | None,
    start: float,
    end: float,
    bucket_s: float | None = None,
    task: str | None = None,
    baseline: DatasetProfile | None = None,
    constraints: dict[str, Any] | None = None,
    current: DatasetProfile | None = None,
) -> dict[str, Any]:
    """Everything the run reports about model quality, JSON-ready."""
    cfg = config or {}
    kw: dict[str, Any] = {
        "k": cfg.get("k", 10),
        "positive": cfg.get("positive"),
        "threshold": cfg.get("threshold", 0.5),
    }
    bias = (
        bias_report(baseline or DatasetProfile(), constraints or {}, current)
        if current is not None
        else {}
    )
    out: dict[str, Any] = {
        "task": None,
        "pairs": len(pairs),
        "join": dict(join),
        "metrics": {},
        "by_version": {},
        "series": [],
        "holdout": dict(holdout) if holdout else holdout,
        "deltas": {},
        "violations": [],
        "notes": [],
        "bias": bias,
    }
    if not pairs:
        # Silent when labels are simply not used (no holdout, none received):
        # a note on every run would teach people to skip the notes.
        received = int(real_number(join.get("labels")) or 0)
        if received:
            out["notes"].append(
                f"{received:,} labels received in the window, none joined to a captured "
                "prediction (see the join counts)"
            )
        elif holdout or join.get("invalid"):
            out["notes"].append("no labels received in the window: model quality not measured")
        return out
    name = infer_task(pairs, task)
    data = _prepare(pairs, name, **kw)
    metrics = data.all()
    out["task"] = name
    out["metrics"] = metrics
    out["by_version"] = _by_version(data)
    step = bucket_s if bucket_s is not None else _default_bucket(start, end)
    out["series"] = _series(data, step, start, end)
    deltas: dict[str, float | None] = {}
    for metric, h in (holdout or {}).items():
        cur, base = real_number(metrics.get(metric)), real_number(h)
        deltas[metric] = _f(cur - base) if cur is not None and base is not None else None
    out["deltas"] = deltas
    if metrics["invalid"]:
        out["notes"].append(
            f"{metrics['invalid']:,} labelled predictions have a label or prediction "
            f"this {name} task cannot score; left out"
        )
    violations, notes = quality_violations(metrics, holdout, config)
    out["violations"] = violations
    out["notes"].extend(notes)
    return out
