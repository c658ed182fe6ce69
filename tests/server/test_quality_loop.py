"""Issue 6's user story end to end: a real proxy in front of the toy model,
predictions made, labels posted later through ``/_modeltap/ground-truth`` by
the ``X-Request-ID`` the proxy returned, then ``modeltap-monitor run``: the
model-quality metrics equal scikit-learn's on the same pairs."""

from __future__ import annotations

import csv
import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from sklearn import metrics as skm

from monitor_job.cli import main
from tests.monitor.test_cli import run_cli
from tests.monitor.test_quality import assert_binary_metrics_match_sklearn
from tests.server.conftest import run_proxy

AUTH = {"Authorization": "Bearer s3cret-token"}


def window() -> list[str]:
    now = datetime.now(timezone.utc)
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    return ["--start", start.isoformat(), "--end", end.isoformat()]


def baseline(tmp_path: Path, holdout: dict[str, float]) -> Path:
    rng = np.random.default_rng(3)
    data = tmp_path / "train.csv"
    with data.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["x", "label"])
        for x in rng.normal(0, 2, 2000):
            w.writerow([round(float(x), 4), int(rng.random() < 1 / (1 + math.exp(-x)))])
    (tmp_path / "holdout.json").write_bytes(orjson.dumps(holdout))
    out = tmp_path / "baseline"
    args = ["baseline", "--data", str(data), "--out", str(out), "--label", "label"]
    assert main([*args, "--holdout-metrics", str(tmp_path / "holdout.json")]) == 0
    return out


def post_labels(url: str, labels: list[dict]) -> dict:
    body = b"\n".join(orjson.dumps(x) for x in labels)
    r = httpx.post(url + "/_modeltap/ground-truth", content=body, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()


def test_classification_quality_from_posted_labels(model_url, tmp_path):
    rng = np.random.default_rng(11)
    sink = tmp_path / "captures"
    ys, ps, labels = [], [], []
    with run_proxy(model_url, sink, admin_token="s3cret-token") as proxy, httpx.Client() as client:
        for x in rng.normal(0, 2, 400):
            r = client.post(
                proxy.url + "/v1/models/toy:predict", json={"instances": [{"x": float(x)}]}
            )
            p = r.json()["predictions"][0]
            y = int(rng.random() < p)
            ys.append(y)
            ps.append(p)
            labels.append({"event_id": r.headers["x-request-id"], "label": y})
        # later: the outcomes are known; one sent twice, one for nothing we saw, one bad
        labels.append(dict(labels[0]))
        labels.append({"event_id": "never-seen", "label": 1})
        out = post_labels(proxy.url, [*labels, {"event_id": "bad", "label": [1]}])
        assert (out["accepted"], out["rejected"]) == (402, 1)
        assert proxy.app.capturer.flush(timeout=10)

    base = baseline(tmp_path, {"accuracy": 0.99, "roc_auc": 0.85})
    report = tmp_path / "report"
    code = run_cli(sink, base, report, *window(), "--model", "toy", "--no-previous")
    stats = orjson.loads((report / "statistics.json").read_bytes())
    q = stats["modeltap"]["model_quality"]
    assert q["task"] == "classification"
    join = q["join"]
    assert (join["matched"], join["unmatched"], join["duplicates"]) == (400, 1, 1)
    assert join["labelled_share"] == 1.0
    m = q["metrics"]
    y, p = np.array(ys), np.array(ps)
    assert m["n"] == 400
    assert_binary_metrics_match_sklearn(m, y, p)
    # the holdout's accuracy of 0.99 is out of reach: a model_quality_check; AUC is fine
    assert code == 1
    violations = orjson.loads((report / "constraint_violations.json").read_bytes())["violations"]
    quality = [v for v in violations if v["constraint_check_type"] == "model_quality_check"]
    assert [v["feature_name"] for v in quality] == ["accuracy"]
    html = (report / "report.html").read_text()
    assert "Model quality" in html and f"{m['accuracy']:.3f}"[:4] in html


def test_ranking_quality_with_known_ndcg(model_url, tmp_path):
    sink = tmp_path / "captures"
    items = [{"id": k} for k in "abcde"]
    with run_proxy(model_url, sink, admin_token="s3cret-token") as proxy:
        r1 = httpx.post(proxy.url + "/rank", json={"user_id": "u1", "items": items})
        r2 = httpx.post(proxy.url + "/rank", json={"user_id": "u2", "items": items})
        scores = np.array([r1.json()["scores"], r2.json()["scores"]])
        # toy scores by position: 0.0, 0.37, 0.74, 0.11, 0.48 (+ltv/1e4): ranked c, e, b, d, a
        assert [np.argsort(s)[::-1].tolist() for s in scores] == [[2, 4, 1, 3, 0]] * 2
        post_labels(
            proxy.url,
            [
                {"event_id": r1.headers["x-request-id"], "item_id": "a", "label": 1},  # last
                {"event_id": r2.headers["x-request-id"], "item_id": "c", "label": 1},  # top
                {"event_id": r2.headers["x-request-id"], "item_id": "b", "label": 0},
            ],
        )
        assert proxy.app.capturer.flush(timeout=10)
    base = baseline(tmp_path, {"ndcg_at_k": 0.9})
    report = tmp_path / "report"
    run_cli(sink, base, report, *window(), "--model", "toy", "--no-previous", "--task", "ranking")
    q = orjson.loads((report / "statistics.json").read_bytes())["modeltap"]["model_quality"]
    m = q["metrics"]
    assert m["requests"] == 2 and m["n"] == 10
    ndcg1 = 1 / math.log2(6)  # the one relevant item ranked 5th of 5
    assert m["ndcg_at_k"] == pytest.approx((ndcg1 + 1.0) / 2)
    assert m["mrr"] == pytest.approx((1 / 5 + 1) / 2)
    rel = np.array([[1, 0, 0, 0, 0], [0, 0, 1, 0, 0]])
    assert m["ndcg_at_k"] == pytest.approx(skm.ndcg_score(rel, scores), abs=1e-9)
    assert q["join"]["matched"] == 3
