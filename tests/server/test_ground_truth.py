"""``POST /_modeltap/ground-truth`` on a running proxy: labels posted by the
``X-Request-ID`` the proxy returned land in the sink under ``ground_truth/``."""

import httpx
import orjson

from tests.server.conftest import run_proxy
from tests.server.test_admin import scrape
from tests.support import read_objects

AUTH = {"Authorization": "Bearer s3cret-token"}


def post(proxy, body, **kw):
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return httpx.post(proxy.url + "/_modeltap/ground-truth", content=data, **kw)


def label_records(sink):
    return [
        r for k, lines in read_objects(sink).items() if k.startswith("ground_truth/") for r in lines
    ]


def test_labels_by_the_returned_event_id(proxy):
    ids = []
    for x in (0.5, -2.0, 3.0):
        r = httpx.post(proxy.url + "/v1/models/toy:predict", json={"instances": [[x]]})
        ids.append(r.headers["x-request-id"])
    body = b"\n".join(orjson.dumps({"event_id": e, "label": i % 2}) for i, e in enumerate(ids))
    r = post(proxy, body, headers={**AUTH, "Content-Type": "application/x-ndjson"})
    assert r.status_code == 200
    assert r.json() == {"accepted": 3, "rejected": 0, "dropped": 0, "errors": []}
    assert proxy.app.capturer.flush(timeout=10)
    labels = label_records(proxy.sink)
    assert sorted((x["event_id"], x["label"]) for x in labels) == sorted(
        (e, i % 2) for i, e in enumerate(ids)
    )
    assert {x["model"]["name"] for x in labels} == {"toy"}
    # the posting itself is not an exchange with the model
    assert proxy.app.capturer.stats.get("offered") == 3 + 3
    m = scrape(proxy.url)
    assert m[("modeltap_capture_labels_accepted_total", (("model", "toy"),))] == 3


def test_partly_valid_batch_keeps_the_valid_labels_and_says_why_not_the_rest(proxy):
    r = post(
        proxy,
        [{"event_id": "a", "label": 1}, {"event_id": "b", "label": [1]}, {"label": 0}],
        headers=AUTH,
    )
    assert r.status_code == 200
    out = r.json()
    assert (out["accepted"], out["rejected"]) == (1, 2)
    assert [e["index"] for e in out["errors"]] == [1, 2]
    assert "event_id missing" in out["errors"][1]["error"]
    assert scrape(proxy.url)[("modeltap_capture_labels_rejected_total", (("model", "toy"),))] == 2


def test_nothing_valid_is_a_400_and_nothing_is_written(proxy):
    for body in (b"", b"\xff\xfe garbage", b"[]", orjson.dumps({"event_id": "a"})):
        r = post(proxy, body, headers=AUTH)
        assert r.status_code == 400, body
        assert r.json()["accepted"] == 0
    proxy.app.capturer.flush(timeout=10)
    assert label_records(proxy.sink) == []


def test_model_from_the_query_and_unsafe_names_refused(proxy):
    r = post(proxy, {"event_id": "a", "label": 1}, headers=AUTH, params={"model": "ranker"})
    assert r.status_code == 200
    r = post(proxy, {"event_id": "a", "label": 1}, headers=AUTH, params={"model": "../x"})
    assert r.status_code == 400 and "model" in r.json()["errors"][0]["error"]
    proxy.app.capturer.flush(timeout=10)
    assert [x["model"]["name"] for x in label_records(proxy.sink)] == ["ranker"]
    assert all(k.startswith(("ground_truth/ranker/", "toy/")) for k in read_objects(proxy.sink))


def test_token_required_and_oversized_bodies_refused(proxy, model_url, tmp_path):
    assert post(proxy, {"event_id": "a", "label": 1}).status_code == 401
    bad = {"Authorization": "Bearer nope"}
    assert post(proxy, {"event_id": "a", "label": 1}, headers=bad).status_code == 401
    from server.app import MAX_LABEL_BODY_BYTES

    huge = b'{"event_id": "a", "label": 1}\n' * (MAX_LABEL_BODY_BYTES // 30 + 10)
    r = post(proxy, huge, headers=AUTH)
    assert r.status_code == 413
    with run_proxy(model_url, tmp_path / "other") as p:  # no token configured
        r = post(p, {"event_id": "a", "label": 1}, headers=AUTH)
    assert r.status_code == 403


def test_buffer_full_is_a_503_to_resend(model_url, tmp_path):
    with run_proxy(
        model_url,
        tmp_path / "c",
        admin_token="s3cret-token",
        buffer_max_bytes=4000,
        flush_max_bytes=4000,
    ) as p:
        body = b"\n".join(orjson.dumps({"event_id": f"e{i}", "label": 1}) for i in range(50))
        r = post(p, body, headers=AUTH)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        out = r.json()
        assert out["dropped"] > 0 and out["accepted"] + out["dropped"] == 50
        assert p.app.capturer.stats.dropped("buffer_full") == out["dropped"]
