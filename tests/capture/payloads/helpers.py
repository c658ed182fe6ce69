import orjson

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
    req = request if isinstance(request, bytes) else orjson.dumps(request)
    resp = response if isinstance(response, bytes) else orjson.dumps(response)
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
    orjson.loads(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY))
    return record


def mapping(**kw):
    return PayloadExtractor(mapping=MappingConfig(**kw))
