import json

import orjson

from capture.encoding import dumps
from capture.payloads import MappingConfig, PayloadExtractor
from capture.record import RecordConfig, build_record
from capture.types import Exchange


def run(
    request,
    response,
    *,
    path="/v1/models/m:predict",
    req_headers=(("content-type", "application/json"),),
    resp_headers=(("content-type", "application/json"),),
    status=200,
    extractor=None,
    config=None,
):
    """Build the record for one exchange and extract it, as the buffer does."""
    # stdlib json, as clients write it: big integers, NaN/Infinity literals
    req = request if isinstance(request, bytes) else json.dumps(request).encode()
    resp = response if isinstance(response, bytes) else json.dumps(response).encode()
    ex = Exchange(
        "e1",
        1_700_000_000.0,
        0.01,
        "POST",
        path,
        "",
        list(req_headers),
        req,
        len(req),
        status,
        list(resp_headers),
        resp,
        len(resp),
    )
    record, req_json, resp_json = build_record(ex, config or RecordConfig())
    (extractor or PayloadExtractor())(record, req_json, resp_json, ex)
    orjson.loads(dumps(record))  # the record always encodes
    return record


def mapping(**kw):
    return PayloadExtractor(mapping=MappingConfig(**kw))
