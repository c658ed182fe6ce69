"""OIP v2 (JSON and binary tensors, built by Triton's own client), ranking,
and online-store lookups."""

import ml_dtypes
import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from capture.payloads.base import header
from capture.record import RecordConfig
from capture.types import Exchange
from tests.capture.payloads.helpers import run

OIP_PATH = "/v2/models/fraud/infer"


def binary_response(outputs):
    """An OIP binary-extension response body; checked below with Triton's parser."""
    header = {"model_name": "fraud", "model_version": "4", "outputs": []}
    blobs = []
    for name, arr, dtype in outputs:
        raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header["outputs"].append(
            {
                "name": name,
                "shape": list(arr.shape),
                "datatype": dtype,
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        blobs.append(raw)
    head = orjson.dumps(header)
    return head + b"".join(blobs), len(head)


def test_oip_json_tensors_named_and_multi_column():
    req = {
        "inputs": [
            {"name": "amount", "shape": [2], "datatype": "FP32", "data": [10.5, 99.0]},
            {"name": "emb", "shape": [2, 3], "datatype": "FP64", "data": [[1, 2, 3], [4, 5, 6]]},
            {"name": "country", "shape": [2, 1], "datatype": "BYTES", "data": ["NL", "DE"]},
        ]
    }
    resp = {
        "model_name": "fraud",
        "model_version": "4",
        "outputs": [{"name": "p", "shape": [2, 1], "datatype": "FP32", "data": [0.1, 0.9]}],
    }
    r = run(req, resp, path=OIP_PATH)
    assert r["parse"] == {"adapter": "oip_v2", "error": None}
    assert r["rows"] == [
        {
            "features": {"amount": 10.5, "emb_0": 1, "emb_1": 2, "emb_2": 3, "country": "NL"},
            "prediction": 0.1,
        },
        {
            "features": {"amount": 99.0, "emb_0": 4, "emb_1": 5, "emb_2": 6, "country": "DE"},
            "prediction": 0.9,
        },
    ]
    assert r["model"]["version"] == "4"


def test_oip_binary_extension_all_datatypes_from_the_triton_client():
    arrays = {
        "f32": (np.array([[1.5, -2.0], [3.25, 4.0]], dtype=np.float32), "FP32"),
        "f16": (np.array([0.5, -1.25], dtype=np.float16), "FP16"),
        "f64": (np.array([1e-300, 2.5]), "FP64"),
        "i8": (np.array([-3, 7], dtype=np.int8), "INT8"),
        "i64": (np.array([2**40, -1], dtype=np.int64), "INT64"),
        "u16": (np.array([65535, 1], dtype=np.uint16), "UINT16"),
        "b": (np.array([True, False]), "BOOL"),
        "txt": (np.array(["héllo".encode(), b"x"], dtype=np.object_), "BYTES"),
    }
    inputs = []
    for name, (arr, dtype) in arrays.items():
        inp = triton.InferInput(name, list(arr.shape), dtype)
        inp.set_data_from_numpy(arr, binary_data=True)
        inputs.append(inp)
    bf = triton.InferInput("bf", [2], "BF16")
    bf.set_data_from_numpy(np.array([1.5, -2.0], dtype=ml_dtypes.bfloat16), binary_data=True)
    inputs.append(bf)
    body, json_size = triton.InferenceServerClient.generate_request_body(
        inputs, outputs=[triton.InferRequestedOutput("p", binary_data=True)]
    )
    resp, resp_len = binary_response([("p", np.array([0.25, 0.75], dtype=np.float32), "FP32")])
    parsed = triton.InferenceServerClient.parse_response_body(resp, header_length=resp_len)
    assert parsed.as_numpy("p").tolist() == [0.25, 0.75]  # our response is valid OIP

    r = run(
        body,
        resp,
        path=OIP_PATH,
        req_headers=[
            ("content-type", "application/octet-stream"),
            ("Inference-Header-Content-Length", str(json_size)),
        ],
        resp_headers=[
            ("content-type", "application/octet-stream"),
            ("inference-header-content-length", str(resp_len)),
        ],
    )
    assert r["parse"] == {"adapter": "oip_v2", "error": None}
    first, second = (row["features"] for row in r["rows"])
    assert first["f32_0"] == 1.5 and first["f32_1"] == -2.0 and second["f32_0"] == 3.25
    assert [first["f16"], second["f16"]] == [0.5, -1.25]
    assert [first["i64"], second["i64"]] == [2**40, -1]
    assert [first["u16"], first["i8"], first["b"], second["b"]] == [65535, -3, True, False]
    assert [first["txt"], second["txt"]] == ["héllo", "x"]
    assert [first["bf"], second["bf"]] == [1.5, -2.0]
    assert [row["prediction"] for row in r["rows"]] == [0.25, 0.75]


@pytest.mark.parametrize(
    ("tensor", "note"),
    [
        ({"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}, "needs 4 values"),
        ({"name": "x", "shape": [1], "datatype": "COMPLEX9", "data": [1]}, "unknown datatype"),
        ({"name": "x", "shape": "2", "datatype": "FP32", "data": [1, 2]}, "not a list of sizes"),
    ],
)
def test_oip_bad_tensors_are_noted_and_the_rest_kept(tensor, note):
    ok = {"name": "ok", "shape": [1], "datatype": "INT32", "data": [7]}
    r = run({"inputs": [ok, tensor]}, {"outputs": []}, path=OIP_PATH)
    assert note in r["parse"]["error"]
    if "needs" in note or "sizes" in note:
        assert r["rows"] == [{"features": {"ok": 7}}]


def test_oip_binary_header_with_wrong_lengths():
    inp = triton.InferInput("x", [2], "FP32")
    inp.set_data_from_numpy(np.array([1, 2], dtype=np.float32), binary_data=True)
    body, json_size = triton.InferenceServerClient.generate_request_body([inp])
    for length, note in [
        (str(len(body) + 5), "does not fit"),
        ("abc", "not a number"),
        (str(json_size - 3), "unreadable"),
    ]:
        r = run(
            body,
            {"outputs": []},
            path=OIP_PATH,
            req_headers=[("inference-header-content-length", length)],
        )
        assert note in r["parse"]["error"]
    r = run(
        body[:-4],
        {"outputs": []},
        path=OIP_PATH,  # the tensor bytes are cut short
        req_headers=[("inference-header-content-length", str(json_size))],
    )
    assert "binary data shorter" in r["parse"]["error"]


def test_ranking_rows_ranks_and_aggregates():
    req = {
        "user_id": "u7",
        "user": {"segment": "gold"},
        "items": [{"id": "a", "price": 3}, {"id": "b", "price": 5}, {"id": "c", "price": 1}],
    }
    r = run(req, {"scores": [0.2, 0.9, 0.5]}, path="/rank")
    assert r["parse"] == {"adapter": "ranking", "error": None}
    assert [(row["item_id"], row["position"], row["score"], row["rank"]) for row in r["rows"]] == [
        ("a", 0, 0.2, 3),
        ("b", 1, 0.9, 1),
        ("c", 2, 0.5, 2),
    ]
    assert r["rows"][0]["features"] == {"price": 3}
    ctx = r["context"]
    assert ctx["user_id"] == "u7" and ctx["user"] == {"segment": "gold"}
    assert ctx["list_length"] == 3 and ctx["top1_score"] == 0.9
    assert ctx["top1_margin"] == pytest.approx(0.4)


def test_ranking_unequal_lengths_and_bad_scores():
    r = run({"items": ["a", "b", "c"]}, {"scores": [0.1, 0.2]}, path="/rank")
    assert [row["item_id"] for row in r["rows"]] == ["a", "b", "c"]
    assert all("score" not in row for row in r["rows"])
    assert "3 items but 2 scores" in r["parse"]["error"]
    r = run({"items": ["a", "b"]}, {"scores": [0.1, "high"]}, path="/rank")
    assert r["rows"][0]["rank"] == 1 and "rank" not in r["rows"][1]
    assert "not finite numbers" in r["parse"]["error"]


def test_lookups_from_the_reserved_field_request_level_and_per_item():
    resp = {
        "scores": [0.4, 0.6],
        "_modeltap": {"lookups": {"user_ltv": 120.5}, "items": {"b": {"stock": 0}}},
    }
    r = run({"user_id": "u1", "items": [{"id": "a"}, {"id": "b"}]}, resp, path="/rank")
    assert r["lookups"] == {"user_ltv": 120.5}
    assert "lookups" not in r["rows"][0] and r["rows"][1]["lookups"] == {"stock": 0}
    assert "_modeltap" not in r["response"]["body"]["data"]
    assert "user_ltv" not in r["context"]  # kept apart from what the caller sent


def test_lookups_from_the_header_plain_and_by_position():
    hdr = orjson.dumps({"user_ltv": 3.5, "segment": "gold"}).decode()
    r = run(
        {"instances": [[1]]},
        {"predictions": [1]},
        resp_headers=[("content-type", "application/json"), ("X-Modeltap-Lookups", hdr)],
    )
    assert r["lookups"] == {"user_ltv": 3.5, "segment": "gold"}
    assert "x-modeltap-lookups" not in r["response"]["headers"]
    hdr = orjson.dumps({"items": [{"s": 1}, {"s": 2}]}).decode()
    r = run(
        {"items": ["a", "b"]},
        {"scores": [1, 2]},
        path="/rank",
        resp_headers=[("x-modeltap-lookups", hdr)],
    )
    assert [row["lookups"] for row in r["rows"]] == [{"s": 1}, {"s": 2}]


def test_lookups_header_left_out_of_the_record_even_when_allowlisted():
    hdr = orjson.dumps({"user_ltv": 3.5}).decode()
    config = RecordConfig(header_allowlist=frozenset({"x-modeltap-lookups", "content-type"}))
    r = run(
        {"instances": [[1]]},
        {"predictions": [1]},
        resp_headers=[("content-type", "application/json"), ("X-ModelTap-Lookups", hdr)],
        config=config,
    )
    assert r["lookups"] == {"user_ltv": 3.5}
    assert r["response"]["headers"] == {"content-type": "application/json"}


def test_header_lookup_ignores_case_and_only_matches_the_whole_name():
    ex = Exchange.of(b"{}", b"{}")._replace(
        request_headers=[("X-Request-Ix", "no"), ("X-REQUEST-ID", "yes"), ("x-request-id", "2nd")],
        response_headers=[("Content-Type", "text/csv")],
    )
    assert header(ex, "x-request-id") == "yes"  # the first of a repeated name
    assert header(ex, "X-Request-Id") == "yes"
    assert header(ex, "content-type", response=True) == "text/csv"
    assert header(ex, "content-type") is None
    assert header(ex, "x-request") is None


@pytest.mark.parametrize(
    ("value", "note"),
    [("not json", "not JSON"), ("[1, 2]", "not a JSON object"), ("{" + "x" * 70_000, "exceeds")],
)
def test_bad_lookups_header_is_noted_and_record_kept(value, note):
    r = run(
        {"instances": [[1]]}, {"predictions": [1]}, resp_headers=[("x-modeltap-lookups", value)]
    )
    assert note in r["parse"]["error"] and r["rows"][0]["prediction"] == 1 and r["lookups"] == {}


def test_strip_for_client_removes_header_and_field_and_fixes_length():
    from capture.payloads.lookups import strip_for_client

    body = orjson.dumps({"scores": [0.1, 0.2], "_modeltap": {"lookups": {"ltv": 3}}})
    headers = [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", str(len(body)).encode()),
        (b"X-Modeltap-Lookups", b'{"a": 1}'),
        (b"X-Other", b"kept"),
    ]
    out_headers, out_body = strip_for_client(headers, body)
    assert orjson.loads(out_body) == {"scores": [0.1, 0.2]}
    assert out_headers == [
        (b"Content-Type", b"application/json"),
        (b"Content-Length", str(len(out_body)).encode()),
        (b"X-Other", b"kept"),
    ]
    # nothing to strip: the very same bytes object comes back
    plain = b'{"scores": [1]}'
    assert strip_for_client([(b"content-length", b"15")], plain)[1] is plain
    # the name inside a nested object, or a body that is not JSON: unchanged
    nested = b'{"x": {"_modeltap": 1}}'
    assert strip_for_client([], nested)[1] is nested
    broken = b'{"_modeltap": '
    assert strip_for_client([], broken)[1] is broken
