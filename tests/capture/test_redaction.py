import orjson
import pytest

from capture.errors import ConfigError
from capture.record import RecordConfig, build_record
from capture.redaction import Redactor
from tests.capture.test_record import exchange


def record_with_secrets():
    body = orjson.dumps(
        {"instances": [{"email": "ann@x.io", "age": 31}], "user": {"SSN": "987-65-4321"}}
    )
    ex = exchange(request_body=body, request_size=len(body), query="email=ann%40x.io&k=2")
    rec, _, _ = build_record(ex, RecordConfig())
    rec["context"] = {"email": "ann@x.io", "country": "NL"}
    rec["lookups"] = {"user": {"ssn": "987-65-4321", "ltv": 9.5}}
    rec["rows"] = [{"features": {"email": "ann@x.io", "x": 1}, "prediction": 0.5}]
    return rec


def test_drop_removes_fields_everywhere():
    rec = record_with_secrets()
    n = Redactor(["email", "ssn"]).apply(rec)
    text = orjson.dumps(rec).decode()
    assert "ann@x.io" not in text and "987-65-4321" not in text
    assert n == 6
    assert rec["context"] == {"country": "NL"} and rec["lookups"]["user"] == {"ltv": 9.5}
    assert rec["rows"][0]["features"] == {"x": 1}
    assert rec["request"]["query"] == "k=2"


def test_hash_is_keyed_and_stable():
    a, b = record_with_secrets(), record_with_secrets()
    Redactor(["email"], mode="hash", key=b"k1").apply(a)
    Redactor(["email"], mode="hash", key=b"k1").apply(b)
    assert a["context"]["email"] == b["context"]["email"] != "ann@x.io"
    assert a["context"]["email"].startswith("hmac:")
    c = record_with_secrets()
    Redactor(["email"], mode="hash", key=b"k2").apply(c)
    assert c["context"]["email"] != a["context"]["email"]
    assert "ann" not in orjson.dumps(a).decode()


def test_unparsed_bodies_are_omitted_unless_kept():
    csv = b"email,age\nann@x.io,31\n"
    ex = exchange(
        request_body=csv, request_size=len(csv), request_headers=[("content-type", "text/csv")]
    )
    rec, _, _ = build_record(ex, RecordConfig())
    Redactor(["email"]).apply(rec)
    assert rec["request"]["body"] == {
        "encoding": "omitted",
        "reason": "redaction",
        "size": len(csv),
    }
    rec, _, _ = build_record(ex, RecordConfig())
    Redactor(["email"], keep_unparsed_bodies=True).apply(rec)
    assert rec["request"]["body"]["data"] == csv.decode()


def test_no_fields_is_a_no_op_and_bad_config_refused():
    rec = record_with_secrets()
    assert Redactor([]).apply(rec) == 0 and rec == record_with_secrets()
    with pytest.raises(ConfigError):
        Redactor(["x"], mode="hash")
    with pytest.raises(ConfigError):
        Redactor(["x"], mode="mask")
