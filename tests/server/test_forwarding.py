"""The proxy forwards transparently and captures every exchange."""

import gzip
import json

import httpx
import orjson
import pytest

from tests.server.conftest import run_proxy
from tests.servers import free_port
from tests.support import all_records, wait_for


def records(proxy, expected=1):
    """The proxy's records, once ``expected`` (default: every request so far) are in.

    The proxy submits after the last byte went out, so a client can be done
    a moment before the exchange is queued.
    """
    stats = proxy.app.capturer.stats
    assert wait_for(lambda: stats.get("offered") >= expected, timeout=10)
    assert proxy.app.capturer.flush(timeout=10)
    return all_records(proxy.sink)


def test_predict_is_forwarded_captured_and_tagged(proxy, model_url):
    body = {"instances": [[0.5, 1.0], [-2.0, 3.0]]}
    direct = httpx.post(model_url + "/v1/models/toy:predict", json=body)
    r = httpx.post(
        proxy.url + "/v1/models/toy:predict", json=body, headers={"X-Request-ID": "req-42"}
    )
    assert r.status_code == 200 and r.content == direct.content
    assert r.headers["x-request-id"] == "req-42"
    assert r.headers["x-model-version"] == "1"
    (rec,) = records(proxy)
    assert rec["event_id"] == "req-42" and rec["status"] == 200
    assert rec["model"] == {"name": "toy", "version": "1", "variant": None}
    assert rec["parse"]["adapter"] == "kserve_v1"
    assert [row["prediction"] for row in rec["rows"]] == direct.json()["predictions"]


def test_generated_event_id_is_returned(proxy):
    r = httpx.post(proxy.url + "/v1/models/toy:predict", json={"instances": [[1]]})
    event_id = r.headers["x-request-id"]
    assert len(event_id) == 36
    assert records(proxy)[0]["event_id"] == event_id


def test_binary_body_query_and_method_pass_byte_for_byte(proxy):
    payload = bytes(range(256)) * 100
    r = httpx.put(
        proxy.url + "/echo?a=1&b=%2F%20x",
        content=payload,
        headers={"content-type": "application/octet-stream", "X-Custom": "kept"},
    )
    assert r.content == payload
    seen = json.loads(r.headers["x-echo-headers"])
    assert seen["x-custom"] == "kept" and seen["content-type"] == "application/octet-stream"
    assert "user-agent" in seen and seen["user-agent"].startswith("python-httpx")  # the caller's
    assert "accept-encoding" in seen  # the caller's own, not added by the proxy
    assert seen["x-forwarded-for"] == "127.0.0.1" and seen["x-forwarded-proto"] == "http"
    assert seen["x-forwarded-host"].startswith("127.0.0.1:")
    (rec,) = records(proxy)
    assert rec["request"]["method"] == "PUT" and rec["request"]["query"] == "a=1&b=%2F%20x"
    assert rec["request"]["size"] == len(payload)


def test_proxy_adds_no_headers_of_its_own(proxy):
    raw = b"plain"
    with httpx.Client(headers={}) as c:
        req = c.build_request("POST", proxy.url + "/echo", content=raw)
        for h in ("user-agent", "accept-encoding", "accept"):
            req.headers.pop(h, None)
        seen = json.loads(c.send(req).headers["x-echo-headers"])
    assert "user-agent" not in seen and "accept-encoding" not in seen
    assert "content-type" not in seen


def test_gzip_response_is_not_decompressed(proxy, model_url):
    with httpx.Client() as c:
        r = c.get(proxy.url + "/gzip", headers={"accept-encoding": "gzip"})
        direct = c.get(model_url + "/gzip", headers={"accept-encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip"
    assert r.content == direct.content  # httpx decodes both the same way
    assert json.loads(r.content)["predictions"][0] == 0.5


def test_status_codes_pass_and_errors_are_captured(proxy):
    for code in (201, 204, 400, 404, 500, 503):
        assert httpx.get(proxy.url + f"/status/{code}").status_code == code
    statuses = sorted(r["status"] for r in records(proxy, expected=6))
    assert statuses == [201, 204, 400, 404, 500, 503]


def test_streaming_response_is_forwarded_as_it_arrives(proxy):
    with httpx.stream("GET", proxy.url + "/stream?n=4&delay=0.2") as r:
        chunks = []
        import time

        t0 = time.monotonic()
        for chunk in r.iter_raw():
            chunks.append((time.monotonic() - t0, chunk))
    text = b"".join(c for _, c in chunks).decode()
    assert text == "".join(f"data: token-{i}\n\n" for i in range(4))
    assert chunks[0][0] < 0.15  # the first event arrived before the stream ended
    (rec,) = records(proxy)
    assert rec["response"]["body"]["data"] == text


def test_lookups_are_stripped_for_the_client_and_captured(proxy, model_url):
    req = {"user_id": "u3", "items": [{"id": "a"}, {"id": "b"}]}
    r = httpx.post(proxy.url + "/rank", json=req)
    direct = httpx.post(model_url + "/rank", json=req)
    assert "_modeltap" in direct.json() and "x-modeltap-lookups" in direct.headers
    assert "_modeltap" not in r.json() and "x-modeltap-lookups" not in r.headers
    assert r.json()["scores"] == direct.json()["scores"]
    assert int(r.headers["content-length"]) == len(r.content)
    (rec,) = records(proxy)
    assert rec["lookups"] == {"ltv": 4.5, "segment": "gold"}
    assert [row.get("lookups") for row in rec["rows"]] == [{"stock": 0}, {"stock": 1}]


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (b"\xff\xfe\xfd not utf8", "application/json"),
        (b"{broken json", "application/json"),
        (b"", None),
        (b"a,b\n1,2\n", "text/csv"),
    ],
)
def test_bad_input_is_forwarded_unchanged_and_kept(proxy, body, ctype):
    headers = {"content-type": ctype} if ctype else {}
    r = httpx.post(proxy.url + "/echo", content=body, headers=headers)
    assert r.status_code == 200 and r.content == body
    (rec,) = records(proxy)
    assert rec["request"]["size"] == len(body)


def test_oversized_body_forwarded_in_full_captured_cut(model_url, tmp_path):
    big = b"x" * (3 * 1024 * 1024)
    with run_proxy(model_url, tmp_path / "c", max_body_bytes=1024) as p:
        r = httpx.post(
            p.url + "/echo", content=big, headers={"content-type": "text/plain"}, timeout=30
        )
        assert r.content == big
        (rec,) = records(p)
    assert rec["request"]["body"]["truncated"] and rec["request"]["size"] == len(big)
    assert rec["response"]["size"] == len(big) and len(rec["response"]["body"]["data"]) <= 1024


def test_upstream_down_answers_502_and_is_captured(tmp_path):
    with run_proxy(f"http://127.0.0.1:{free_port()}", tmp_path / "c") as p:
        r = httpx.post(p.url + "/v1/models/toy:predict", json={"instances": [[1]]})
        assert r.status_code == 502 and r.json()["event_id"] == r.headers["x-request-id"]
        (rec,) = records(p)
    assert rec["status"] == 502 and rec["error"].startswith("upstream unreachable")
    assert rec["request"]["body"]["data"] == {"instances": [[1]]}


def test_upstream_timeout_answers_504_and_is_captured(model_url, tmp_path):
    with run_proxy(model_url, tmp_path / "c", upstream_timeout_s=0.3) as p:
        r = httpx.get(p.url + "/slow?s=2", timeout=10)
        assert r.status_code == 504 and r.json()["error"] == "upstream timeout"
        (rec,) = records(p)
    assert rec["status"] == 504 and rec["latency_ms"] >= 300


def test_gzip_request_body_is_forwarded_compressed(proxy):
    raw = gzip.compress(orjson.dumps({"instances": [[1]]}))
    r = httpx.post(
        proxy.url + "/echo",
        content=raw,
        headers={"content-encoding": "gzip", "content-type": "application/json"},
    )
    assert r.content == raw


def test_huge_headers_and_non_ascii_header_bytes_pass(proxy):
    big = "v" * 20_000
    r = httpx.post(proxy.url + "/echo", content=b"x", headers={"X-Big": big})
    assert r.status_code == 200
    assert json.loads(r.headers["x-echo-headers"])["x-big"] == big
    utf8 = "café ✓".encode()
    r = httpx.post(proxy.url + "/echo", content=b"y", headers={"X-Utf8": utf8})
    # the model's echo decodes header bytes as latin-1: equal means the same bytes arrived
    assert json.loads(r.headers["x-echo-headers"])["x-utf8"] == utf8.decode("latin-1")
    assert len(records(proxy, expected=2)) == 2
