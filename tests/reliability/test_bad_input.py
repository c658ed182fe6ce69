"""Bad input at a real proxy (uvicorn on loopback in front of the toy model
process): the admin API fuzzed from its own OpenAPI document (schemathesis),
label batches of arbitrary bytes and JSON (hypothesis), and hostile request
shapes that must still reach the model unchanged.

What the forwarding tests already cover is not repeated here
(tests/server/test_forwarding.py: invalid UTF-8 and broken JSON bodies,
binary bodies, a 3 MiB body, 20 kB and non-ASCII header values, gzip)."""

from __future__ import annotations

import json

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import positive_data_acceptance

from tests.server.conftest import run_proxy

TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def proxy(toy_model, tmp_path_factory):
    with run_proxy(toy_model.url, tmp_path_factory.mktemp("fuzz") / "c", admin_token=TOKEN) as p:
        yield p


def test_admin_api_answers_every_request_as_documented(proxy):
    """Fuzzed from the proxy's own ``/_modeltap/openapi.json``: no 5xx but
    the documented ones (503/504), every status, content type and body as
    the schema says, with the token and without it. Valid-looking label
    batches may still be refused (400): entries are validated one by one
    beyond what a schema says (simple model names, finite numbers...), so
    the positive-data check does not apply."""
    schema = schemathesis.openapi.from_url(proxy.url + "/_modeltap/openapi.json")
    fuzzed = []
    for result in schema.get_all_operations():
        operation = result.ok()
        fuzzed.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case):
            for headers in (AUTH, {}):
                case.call_and_validate(
                    base_url=proxy.url, headers=headers, excluded_checks=[positive_data_acceptance]
                )

        fuzz()
    assert {"POST /_modeltap/ground-truth", "POST /_modeltap/flush"} <= set(fuzzed), fuzzed


json_docs = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda kids: (
        st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=10), kids, max_size=5)
    ),
    max_leaves=20,
)
label_like = st.fixed_dictionaries(
    {"event_id": st.text(max_size=40) | st.integers(), "label": json_docs},
    optional={"item_id": json_docs, "time": json_docs, "model": st.text(max_size=20)},
)
bodies = (
    st.binary(max_size=2000)
    | json_docs.map(lambda d: json.dumps(d).encode())
    | st.lists(label_like, max_size=8).map(lambda ls: json.dumps(ls).encode())
    | st.lists(label_like, max_size=8).map(lambda ls: "\n".join(json.dumps(x) for x in ls).encode())
)


@given(body=bodies)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_any_label_batch_is_answered_and_accounted_for(proxy, body):
    before = proxy.app.capturer.stats.snapshot()
    r = httpx.post(proxy.url + "/_modeltap/ground-truth", content=body, headers=AUTH)
    assert r.status_code in (200, 400), r.text
    summary = r.json()
    after = proxy.app.capturer.stats.snapshot()
    assert after["labels_accepted"] - before["labels_accepted"] == summary["accepted"]
    assert after["labels_rejected"] - before["labels_rejected"] == summary["rejected"]
    assert (r.status_code == 200) == (summary["accepted"] > 0)
    assert summary["accepted"] + summary["rejected"] >= 1  # nothing goes unaccounted


@pytest.mark.parametrize(
    ("method", "target", "headers", "body"),
    [
        ("POST", "/echo", {"X-Many": ",".join(["v"] * 4000)}, b"\x00\xff" * 10),
        (
            "PATCH",
            "/echo?%FF%FE=%00&&a=%zz",
            {"content-type": "text/plain; charset=latin-1"},
            "caf\xe9 \x80\x81".encode("latin-1"),
        ),
        ("DELETE", "/echo?p=/%2e%2e/%2F..&x", {}, b'{"instances": [[NaN, Infinity]]}'),
        (
            "POST",
            "/echo",
            {"content-type": "application/json"},
            b'\xef\xbb\xbf{"a": 1}' + b"\xc3\x28" * 50,
        ),
        (
            "POST",
            "/echo",
            {"content-encoding": "gzip", "content-type": "application/json"},
            b"\x1f\x8b\x08\x00not really gzip",
        ),
    ],
)
def test_hostile_requests_reach_the_model_byte_for_byte(proxy, method, target, headers, body):
    r = httpx.request(method, proxy.url + target, content=body, headers=headers, timeout=10)
    assert r.status_code == 200 and r.content == body
    seen = json.loads(r.headers["x-echo-headers"])
    for k, v in headers.items():
        assert seen[k.lower()] == v
    assert proxy.app.capturer.flush(timeout=10)


def test_many_headers_and_a_huge_multi_value_header_pass(proxy):
    headers = [(f"X-H{i}", "v" * 100) for i in range(200)]
    r = httpx.post(proxy.url + "/echo", content=b"z", headers=headers)
    assert r.status_code == 200
    seen = json.loads(r.headers["x-echo-headers"])
    assert all(seen[f"x-h{i}"] == "v" * 100 for i in range(200))
