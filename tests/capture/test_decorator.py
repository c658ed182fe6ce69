import asyncio
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler

import httpx
import pytest

import capture
from capture.sampler import Sampler
from tests.servers import threaded_http_server, uvicorn_server
from tests.support import all_records

STORE = {f"u{i}": {"ltv": float(i), "segment": "gold" if i % 2 else "basic"} for i in range(100)}


def test_ranking_model_with_online_store_lookups(tmp_path):
    with capture.Capturer(sink=str(tmp_path), model="ranker") as cap:

        @cap.capture
        def predict(request):
            user = STORE[request["user_id"]]
            capture.current().lookups(user, items={"b": {"stock": 0}})
            capture.current().features(hour=13)
            return {"scores": [0.2, 0.9]}

        out = predict({"user_id": "u3", "items": [{"id": "a", "p": 1}, {"id": "b", "p": 2}]})
        assert out == {"scores": [0.2, 0.9]}
    (r,) = all_records(tmp_path)
    assert r["model"]["name"] == "ranker" and r["parse"] == {"adapter": "ranking", "error": None}
    assert r["lookups"] == {"ltv": 3.0, "segment": "gold"}
    assert r["context"]["user_id"] == "u3" and r["context"]["hour"] == 13
    assert [(x["item_id"], x["rank"]) for x in r["rows"]] == [("a", 2), ("b", 1)]
    assert r["rows"][1]["lookups"] == {"stock": 0} and r["source"] == "decorator"


def test_plain_feature_function_async_method_and_explicit_prediction(tmp_path):
    with capture.Capturer(sink=str(tmp_path)) as cap:

        class Model:
            @cap.capture(model="fraud")
            async def score(self, features):
                capture.current().prediction({"label": 1, "p": 0.8})
                await asyncio.sleep(0)
                return 0.8

            @cap.capture
            def plain(self, features):
                return 0.1

        m = Model()
        assert asyncio.run(m.score({"amount": 5.0})) == 0.8
        assert m.plain({"amount": 1.0}) == 0.1
    recs = {r["model"]["name"]: r for r in all_records(tmp_path)}
    assert recs["fraud"]["rows"] == [
        {"features": {"amount": 5.0}, "prediction": {"label": 1, "p": 0.8}}
    ]
    assert recs["model"]["rows"] == [{"features": {"amount": 1.0}, "prediction": 0.1}]


def test_exceptions_are_recorded_then_reraised_untouched(tmp_path):
    boom = ValueError("bad input")
    with capture.Capturer(sink=str(tmp_path)) as cap:

        @cap.capture
        def predict(x):
            raise boom

        with pytest.raises(ValueError) as info:
            predict({"a": 1})
        assert info.value is boom
    (r,) = all_records(tmp_path)
    assert r["status"] == 500 and r["error"] == "ValueError: bad input"


def test_unsampled_calls_are_skipped_but_errors_and_slow_ones_kept(tmp_path):
    with capture.Capturer(sink=str(tmp_path), sample_rate=0.0, slow_threshold_s=0.05) as cap:
        seen = []

        @cap.capture
        def predict(x):
            seen.append(capture.current().active)
            capture.current().lookups(a=1)  # a no-op when not sampled
            if x == "fail":
                raise RuntimeError("model down")
            if x == "slow":
                time.sleep(0.06)
            return x

        for _ in range(20):
            assert predict("ok") == "ok"
        with pytest.raises(RuntimeError):
            predict("fail")
        predict("slow")
    assert not any(seen)
    reasons = sorted(r["sampling"]["reason"] for r in all_records(tmp_path))
    assert reasons == ["error", "slow"]
    s = cap.stats.snapshot()
    assert s["offered"] == 22 and s["sampled_out"] == 20 and s["kept"] == 2


def test_sampled_calls_that_fail_or_are_slow_say_so(tmp_path):
    with capture.Capturer(sink=str(tmp_path), sample_rate=1.0, slow_threshold_s=0.05) as cap:

        @cap.capture
        def predict(x):
            if x == "fail":
                raise RuntimeError("model down")
            if x == "slow":
                time.sleep(0.06)
            return x

        predict("ok")
        with pytest.raises(RuntimeError):
            predict("fail")
        predict("slow")
    reasons = sorted(r["sampling"]["reason"] for r in all_records(tmp_path))
    assert reasons == ["error", "sampled", "slow"]


def test_key_makes_the_proxy_decision(tmp_path):
    with capture.Capturer(sink=str(tmp_path), sample_rate=0.5) as cap:

        @cap.capture(key=lambda req: req["user"])
        def predict(req):
            return 1

        for i in range(200):
            predict({"user": f"user-{i}"})
    kept = {r["rows"][0]["features"]["user"] for r in all_records(tmp_path)}
    assert kept == {f"user-{i}" for i in range(200) if Sampler(0.5).hit(f"user-{i}")}


def test_capture_problems_never_reach_the_model(tmp_path):
    cap = capture.Capturer(sink=str(tmp_path))
    half = capture.Capturer(sink=str(tmp_path / "half"), sample_rate=0.5)

    @half.capture(key=lambda req: req["missing"])
    def keyed(req):
        return "fine"

    @cap.capture
    def predict(req):
        capture.current().lookups(weird=object(), raw=b"\xff")
        return {"ok": True}

    assert keyed({}) == "fine"  # the key function failed: call not sampled, result intact
    half.close()
    assert half.stats.get("sampled_out") == 1
    assert predict({"a": 1}) == {"ok": True}
    cap.close()
    assert predict({"a": 2}) == {"ok": True}  # after close: dropped and counted, not raised
    assert cap.stats.dropped("shutdown") == 1
    (r,) = all_records(tmp_path)
    assert r["lookups"]["raw"] == "/w==" and r["lookups"]["weird"].startswith("<object")


def test_current_outside_a_call_is_a_no_op():
    ctx = capture.current()
    assert not ctx.active and ctx.event_id is None
    ctx.lookups(a=1)
    ctx.prediction(3)


def test_threads_keep_their_own_context(tmp_path):
    with capture.Capturer(sink=str(tmp_path)) as cap:

        @cap.capture
        def predict(req):
            capture.current().lookups(STORE[req["user_id"]])
            time.sleep(0.001)  # let other threads interleave
            capture.current().features(echo=req["user_id"])
            return {"user": req["user_id"]}

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: predict({"user_id": f"u{i % 100}"}), range(400)))
    recs = all_records(tmp_path)
    assert len(recs) == 400
    for r in recs:
        user = r["context"]["echo"]
        assert r["lookups"] == STORE[user] and r["rows"][0]["features"]["user_id"] == user


def test_in_a_threaded_http_server(tmp_path):
    """A thread-per-request server, as Flask and Django run."""
    cap = capture.Capturer(sink=str(tmp_path), model="flaskish")

    @cap.capture
    def predict(req):
        capture.current().lookups(STORE[req["user_id"]])
        return {"score": STORE[req["user_id"]]["ltv"] / 100}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            out = json.dumps(predict(body)).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    with threaded_http_server(Handler) as url:

        def call(i):
            return httpx.post(url, json={"user_id": f"u{i}"}).json()["score"]

        with ThreadPoolExecutor(8) as pool:
            scores = list(pool.map(call, range(100)))
    cap.close()
    assert scores == [i / 100 for i in range(100)]
    recs = all_records(tmp_path)
    assert len(recs) == 100
    for r in recs:
        assert r["lookups"] == STORE[r["rows"][0]["features"]["user_id"]]


def test_in_an_async_server_with_concurrent_requests(tmp_path):
    cap = capture.Capturer(sink=str(tmp_path), model="asyncish")

    @cap.capture
    async def predict(req):
        capture.current().lookups(STORE[req["user_id"]])
        await asyncio.sleep(0.005)  # other requests run here
        capture.current().features(seen=req["user_id"])
        return {"score": 1}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        out = json.dumps(await predict(json.loads(body))).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": out})

    async def client(url):
        async with httpx.AsyncClient() as c:
            await asyncio.gather(*(c.post(url, json={"user_id": f"u{i}"}) for i in range(60)))

    with uvicorn_server(app) as url:
        asyncio.run(client(url))
    cap.close()
    recs = all_records(tmp_path)
    assert len(recs) == 60
    for r in recs:
        assert r["lookups"] == STORE[r["context"]["seen"]]


def test_thread_safety_of_the_shared_null_context():
    results = []

    def worker():
        results.append(capture.current().active)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [False] * 4
