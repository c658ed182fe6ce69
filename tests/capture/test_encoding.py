import datetime as dt
import math
from decimal import Decimal

import numpy as np
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from capture.encoding import DEPTH_MARKER, dumps


def test_unencodable_values_become_valid_json():
    value = {
        "nan": float("nan"),
        "inf": -math.inf,
        "bytes": b"\xff\x00",
        1: "int key",
        (1, 2): "tuple key",
        "np_f32": np.float32(1.5),
        "np_i64": np.int64(-3),
        "np_f16": np.float16(2.0),
        "np_arr": np.array([[1.0, np.nan], [3.0, 4.0]]),
        "np_obj": np.array(["a", None], dtype=object),
        "when": dt.datetime(2026, 11, 22, 23, 8, 42, 123000),
        "aware": dt.datetime(2026, 11, 22, 23, 8, 42, tzinfo=dt.timezone.utc),
        "huge": 2**80,
        "surrogate": "bad \udcff text",
        "set": {3},
        "dec": Decimal("1.25"),
        "obj": object(),
    }
    out = orjson.loads(dumps(value))
    assert out["nan"] is None and out["inf"] is None
    assert out["bytes"] == "/wA="
    assert out["1"] == "int key"
    assert out["np_f32"] == 1.5 and out["np_i64"] == -3 and out["np_f16"] == 2.0
    assert out["np_arr"] == [[1.0, None], [3.0, 4.0]]
    assert out["when"].startswith("2026-11-22T23:08:42.123")
    assert out["aware"] == "2026-11-22T23:08:42Z"
    assert out["huge"] == str(2**80)
    assert out["surrogate"].startswith("bad ") and "\udcff" not in out["surrogate"]
    assert out["set"] == [3] and out["dec"] == 1.25
    assert out["obj"].startswith("<object object")


def test_deep_nesting_is_cut_not_raised():
    deep: dict = {}
    cur = deep
    for _ in range(1000):
        cur["x"] = {}
        cur = cur["x"]
    text = dumps({"deep": deep}).decode()
    assert DEPTH_MARKER in text
    orjson.loads(text)


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text()
    | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=5) | st.integers(), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_like)
def test_any_value_encodes_to_valid_json(value):
    orjson.loads(dumps({"v": value}))


def test_non_string_keys_are_encoded_as_with_the_full_options():
    """The first attempt leaves out OPT_NON_STR_KEYS (cheaper); a dict with
    an int, float, None or datetime key must come out exactly as the
    full options write it."""
    from capture.encoding import OPTIONS

    when = dt.datetime(2026, 11, 22, 23, 8, 42, 123000)
    value = {"rows": [{"features": {1: 0.5, 2.5: "x", "s": 0, None: 1, 7: False, when: [1]}}]}
    assert dumps(value) == orjson.dumps(value, option=OPTIONS)
    assert orjson.loads(dumps(value))["rows"][0]["features"]["1"] == 0.5
    plain = {"a": [1, 2.5, "s", None, {"b": when}], "np": np.arange(3)}
    assert dumps(plain) == orjson.dumps(plain, option=OPTIONS)
