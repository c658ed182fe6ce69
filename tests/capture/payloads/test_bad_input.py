"""Bad input never raises and never loses the record: it is kept with a note."""

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capture.capturer import Capturer
from capture.payloads import PayloadExtractor
from capture.payloads.base import MAX_ROWS
from capture.record import RecordConfig
from tests.capture.payloads.helpers import run
from tests.capture.test_record import exchange
from tests.support import all_records

PATHS = ["/v1/models/m:predict", "/v2/models/m/infer", "/invocations", "/rank", "/x"]


def test_malformed_json_is_kept_raw_with_a_note():
    r = run(b'{"instances": [[1, 2]', {"predictions": [1]})
    assert r["rows"] == [] and "not valid JSON" in r["parse"]["error"]
    assert r["request"]["body"] == {"size": 21, "encoding": "text", "data": '{"instances": [[1, 2]'}


def test_nan_and_infinity_literals_are_read_leniently():
    r = run(b'{"instances": [[NaN, Infinity, -Infinity, 1.5]]}', {"predictions": [0.5]})
    assert r["parse"] == {"adapter": "kserve_v1", "error": None}
    feats = r["rows"][0]["features"]
    assert feats["f3"] == 1.5
    line = orjson.loads(orjson.dumps(r))  # NaN/inf become null in the record
    assert line["rows"][0]["features"]["f0"] is None


def test_deeply_nested_json_is_noted_not_raised():
    deep = b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    r = run(deep, {"predictions": []})
    assert r["parse"]["error"] and "deeply" in r["parse"]["error"]


def test_huge_arrays_are_cut_with_a_note():
    n = MAX_ROWS + 500
    r = run(
        {"instances": [[i] for i in range(n)]},
        {"predictions": list(range(n))},
        config=RecordConfig(max_body_bytes=10 << 20),
    )
    assert len(r["rows"]) == MAX_ROWS and r["rows"][-1]["prediction"] == MAX_ROWS - 1
    assert f"{n} instances cut to {MAX_ROWS}" in r["parse"]["error"]
    r = run({"instances": [list(range(5000))]}, {"predictions": [1]})
    assert len(r["rows"][0]["features"]) == 2000 and "features cut" in r["parse"]["error"]


def test_body_cut_at_capture_is_not_parsed_but_noted():
    r = run(
        {"instances": [[1] * 100]},
        {"predictions": [1]},
        config=RecordConfig(max_body_bytes=50),
        extractor=PayloadExtractor(max_parse_bytes=50),
    )  # both from MODELTAP_MAX_BODY_BYTES
    assert r["rows"] == [] and "cut at capture; not parsed" in r["parse"]["error"]
    assert r["request"]["body"]["truncated"] is True


def test_non_utf8_and_empty_bodies():
    r = run(b"\xff\xfe\x00garbage", b"\x00\x01", req_headers=[("content-type", "application/json")])
    assert r["rows"] == [] and r["request"]["body"]["encoding"] == "base64"
    assert r["parse"]["error"] == "no adapter understood the payload"
    r = run(b"", b"", req_headers=[], resp_headers=[])
    assert r["parse"] == {"adapter": None, "error": None} and r["request"]["body"] is None


def test_rows_still_extracted_when_bodies_are_not_kept():
    r = run(
        {"instances": [[1, 2]]}, {"predictions": [3]}, config=RecordConfig(capture_bodies=False)
    )
    assert r["request"]["body"] is None and r["rows"] == [
        {"features": {"f0": 1, "f1": 2}, "prediction": 3}
    ]


def test_huge_body_through_the_capturer(tmp_path):
    big = b'{"instances": [' + b",".join([b"[1.0, 2.0]"] * 2_000_000) + b"]}"
    with Capturer(sink=str(tmp_path)) as cap:
        assert cap.submit(exchange(request_body=big, request_size=len(big)))
    (r,) = all_records(tmp_path)
    assert r["request"]["body"]["truncated"] is True and r["request"]["size"] == len(big)
    assert len(r["request"]["body"]["data"]) <= 256 * 1024


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=8), c, max_size=5),
    max_leaves=30,
)
keys = st.sampled_from(
    [
        "instances",
        "inputs",
        "predictions",
        "outputs",
        "items",
        "scores",
        "dataframe_split",
        "dataframe_records",
        "_modeltap",
        "shape",
        "data",
    ]
)
shaped = st.dictionaries(keys, json_values, max_size=4)
headers = st.lists(
    st.tuples(
        st.sampled_from(["content-type", "inference-header-content-length", "x-modeltap-lookups"]),
        st.text(max_size=20),
    ),
    max_size=3,
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    req=shaped | json_values,
    resp=shaped | json_values,
    path=st.sampled_from(PATHS),
    req_h=headers,
    resp_h=headers,
)
def test_no_adapter_raises_on_any_json(req, resp, path, req_h, resp_h):
    r = run(req, resp, path=path, req_headers=req_h, resp_headers=resp_h)
    assert isinstance(r["rows"], list) and "parse" in r


@settings(max_examples=300, deadline=None)
@given(
    req=st.binary(max_size=300),
    resp=st.binary(max_size=100),
    path=st.sampled_from(PATHS),
    req_h=headers,
)
def test_no_adapter_raises_on_any_bytes(req, resp, path, req_h):
    r = run(req, resp, path=path, req_headers=req_h)
    assert isinstance(r["rows"], list)


@settings(max_examples=150, deadline=None)
@given(
    shape=st.lists(st.integers(-2, 6), max_size=3),
    datatype=st.sampled_from(["FP32", "FP16", "BF16", "BYTES", "INT8", "BOOL", "X"]),
    data=st.lists(st.integers(0, 255) | st.floats() | st.text(max_size=3), max_size=12),
    binary=st.binary(max_size=40),
    size=st.integers(-3, 50),
)
def test_oip_tensors_of_any_shape_never_raise(shape, datatype, data, binary, size):
    tensor = {"name": "x", "shape": shape, "datatype": datatype, "data": data}
    r = run({"inputs": [tensor]}, {"outputs": [tensor]}, path="/v2/models/m/infer")
    assert isinstance(r["rows"], list)
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"binary_data_size": size},
                }
            ]
        }
    )
    r = run(
        head + binary,
        b"",
        path="/v2/models/m/infer",
        req_headers=[("inference-header-content-length", str(len(head)))],
    )
    assert isinstance(r["rows"], list)


@pytest.mark.parametrize("scores", [None, "0.5", [None, None], [float("inf"), 1], {"a": 1}])
def test_odd_ranking_scores(scores):
    r = run({"items": ["a", "b"]}, {"scores": scores}, path="/rank")
    assert [row["item_id"] for row in r["rows"]] == ["a", "b"]
