"""Each adapter on real payloads from its protocol."""

import pytest

from capture.errors import ConfigError
from capture.payloads import PayloadExtractor
from tests.capture.payloads.helpers import mapping, run


def test_kserve_v1_lists_dicts_and_scalars():
    r = run({"instances": [[5.1, 3.5, 1.4], [6.2, 2.9, 4.3]]}, {"predictions": [0, 1]})
    assert r["parse"] == {"adapter": "kserve_v1", "error": None}
    assert r["rows"] == [
        {"features": {"f0": 5.1, "f1": 3.5, "f2": 1.4}, "prediction": 0},
        {"features": {"f0": 6.2, "f1": 2.9, "f2": 4.3}, "prediction": 1},
    ]
    r = run({"instances": [{"age": 31, "country": "NL"}]}, {"predictions": [{"p": 0.8}]})
    assert r["rows"] == [{"features": {"age": 31, "country": "NL"}, "prediction": {"p": 0.8}}]
    r = run({"instances": ["good movie"]}, {"predictions": [0.9]})
    assert r["rows"] == [{"features": {"f0": "good movie"}, "prediction": 0.9}]


def test_kserve_v1_prediction_count_mismatch_keeps_rows_with_note():
    r = run({"instances": [[1], [2], [3]]}, {"predictions": [0.1, 0.2]})
    assert [row["features"] for row in r["rows"]] == [{"f0": 1}, {"f0": 2}, {"f0": 3}]
    assert all("prediction" not in row for row in r["rows"])
    assert "3 instances but 2 predictions" in r["parse"]["error"]


def test_mlflow_dataframe_split_records_and_inputs():
    path = "/invocations"
    r = run(
        {"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"], [2, "y"]]}},
        {"predictions": [0.3, 0.7]},
        path=path,
    )
    assert r["parse"]["adapter"] == "mlflow"
    assert r["rows"] == [
        {"features": {"a": 1, "b": "x"}, "prediction": 0.3},
        {"features": {"a": 2, "b": "y"}, "prediction": 0.7},
    ]
    r = run({"dataframe_records": [{"a": 1}, {"a": 2}]}, [5, 6], path=path)  # MLflow 1: bare list
    assert [row["prediction"] for row in r["rows"]] == [5, 6]
    r = run({"inputs": {"a": [1, 2], "b": [3, 4]}}, {"predictions": [1, 0]}, path=path)
    assert r["rows"][1] == {"features": {"a": 2, "b": 4}, "prediction": 0}
    r = run({"instances": [[1, 2]]}, {"predictions": [9]}, path=path)
    assert r["parse"]["adapter"] == "mlflow" and r["rows"][0]["prediction"] == 9


def test_tfserving_columnar_inputs_and_named_outputs():
    r = run(
        {"signature_name": "serving_default", "inputs": {"x": [1.0, 2.0], "y": [[1, 2], [3, 4]]}},
        {"outputs": {"score": [0.1, 0.9], "label": ["a", "b"]}},
    )
    assert r["parse"]["adapter"] == "tfserving"
    assert r["rows"][1] == {
        "features": {"x": 2.0, "y": [3, 4]},
        "prediction": {"score": 0.9, "label": "b"},
    }
    r = run({"inputs": [[1, 2], [3, 4]]}, {"outputs": [[0.5], [0.6]]})
    assert r["rows"][0] == {"features": {"f0": 1, "f1": 2}, "prediction": [0.5]}


def test_csv_with_header_and_with_configured_columns():
    csv = b"age,income,country\n31,5000.5,NL\n45,7200,DE\n"
    r = run(
        csv,
        b"0.2\n0.8\n",
        req_headers=[("content-type", "text/csv")],
        resp_headers=[("content-type", "text/csv")],
        path="/invocations",
    )
    assert r["parse"] == {"adapter": "csv", "error": None}
    assert r["rows"] == [
        {"features": {"age": 31, "income": 5000.5, "country": "NL"}, "prediction": 0.2},
        {"features": {"age": 45, "income": 7200, "country": "DE"}, "prediction": 0.8},
    ]
    r = run(
        b"1,2\n3,4\n",
        {"predictions": [1, 0]},
        req_headers=[("content-type", "text/csv")],
        extractor=PayloadExtractor(csv_columns=["a", "b"]),
    )
    assert r["rows"][1] == {"features": {"a": 3, "b": 4}, "prediction": 0}
    r = run(b"1,2\n3,4\n", {"predictions": [1, 0]}, req_headers=[("content-type", "text/csv")])
    assert r["rows"][0]["features"] == {"f0": 1, "f1": 2}


def test_mapping_rows_context_and_predictions():
    ex = mapping(
        rows="payload.records",
        context=("meta.tenant", "meta.channel"),
        predictions="result.0.values",
    )
    r = run(
        {
            "meta": {"tenant": "acme", "channel": "web"},
            "payload": {"records": [{"a": 1}, {"a": 2}]},
        },
        {"result": [{"values": [0.1, 0.2]}]},
        extractor=ex,
    )
    assert r["parse"] == {"adapter": "mapping", "error": None}
    assert r["context"] == {"tenant": "acme", "channel": "web"}
    assert [row["prediction"] for row in r["rows"]] == [0.1, 0.2]
    r = run({"meta": {}, "payload": {"records": [{"a": 1}]}}, {"result": []}, extractor=ex)
    assert "not found" in r["parse"]["error"] and r["rows"] == [{"features": {"a": 1}}]


def test_mapping_for_a_ranking_shape():
    ex = mapping(items="query.hits", item_id="sku", scores="ranked.s", context=("query.user",))
    r = run(
        {"query": {"user": "u1", "hits": [{"sku": "a", "price": 3}, {"sku": "b", "price": 5}]}},
        {"ranked": {"s": [0.2, 0.9]}},
        extractor=ex,
    )
    assert r["parse"]["adapter"] == "mapping"
    assert r["rows"] == [
        {"position": 0, "item_id": "a", "features": {"price": 3}, "score": 0.2, "rank": 2},
        {"position": 1, "item_id": "b", "features": {"price": 5}, "score": 0.9, "rank": 1},
    ]
    assert r["context"]["user"] == "u1" and r["context"]["list_length"] == 2


def test_unknown_payload_is_kept_raw_with_a_note():
    r = run({"whatever": 1}, {"ok": True})
    assert r["rows"] == [] and r["parse"]["adapter"] is None
    assert "no adapter" in r["parse"]["error"]
    assert r["request"]["body"]["data"] == {"whatever": 1}


def test_explicit_payload_setting_and_bad_names():
    r = run({"instances": [[1]]}, {"predictions": [1]}, extractor=PayloadExtractor("mlflow"))
    assert r["parse"]["adapter"] == "mlflow"
    with pytest.raises(ConfigError):
        PayloadExtractor("sagemaker-magic")
    with pytest.raises(ConfigError):
        PayloadExtractor("mapping")
