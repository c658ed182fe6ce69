"""Open Inference Protocol v2 (Triton, KServe v2, MLServer).

JSON tensors: ``{"inputs": [{"name", "shape", "datatype", "data"}]}`` with
``data`` row-major, flat or nested. The binary-tensor extension: the body
starts with a JSON header of ``Inference-Header-Content-Length`` bytes, and
tensors whose ``parameters.binary_data_size`` is set follow as raw
little-endian bytes, in order (``BYTES`` elements are 4-byte little-endian
lengths followed by the bytes; ``BF16`` is the top half of a float32).

The first dimension is the batch: a ``[N]`` input gives one feature per row,
``[N, k]`` gives ``name_0 .. name_{k-1}`` (``[N, 1]`` just ``name``). A single
output becomes each row's ``prediction``; several become a dict by name.
Shapes that do not match their data, unknown datatypes and short binary
sections are noted and that tensor is skipped; the others are kept.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from capture.payloads.base import MAX_FEATURES, MAX_ROWS, Extraction, Notes, header
from capture.types import Exchange

DTYPES = {
    "BOOL": "?",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
HEADER = "inference-header-content-length"


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            out.append(value)
        else:
            stack.pop()
    return out


def _decode_bytes(blob: bytes, count: int, notes: Notes, name: str) -> list[Any] | None:
    out: list[Any] = []
    pos = 0
    while pos + 4 <= len(blob) and len(out) < count:
        n = int.from_bytes(blob[pos : pos + 4], "little")
        if pos + 4 + n > len(blob):
            break
        raw = blob[pos + 4 : pos + 4 + n]
        try:
            out.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(raw.hex())
        pos += 4 + n
    if len(out) != count:
        notes.add(f"tensor {name!r}: BYTES data holds {len(out)} of {count} elements")
        return None
    return out


def decode_binary(
    blob: bytes, datatype: str, count: int, notes: Notes, name: str
) -> list[Any] | None:
    """A binary tensor section as a flat Python list, or None with a note."""
    import numpy as np  # here, not at import: ~15 MB in every process, for binary tensors only

    if datatype == "BYTES":
        return _decode_bytes(blob, count, notes, name)
    if datatype == "BF16":
        if len(blob) != 2 * count:
            notes.add(f"tensor {name!r}: {len(blob)} bytes for {count} BF16 values")
            return None
        halves = np.frombuffer(blob, dtype="<u2").astype(np.uint32) << 16
        return [float(v) for v in halves.view(np.float32)]
    dtype = DTYPES.get(datatype)
    if dtype is None:
        notes.add(f"tensor {name!r}: unknown datatype {datatype!r}")
        return None
    width = np.dtype(dtype).itemsize
    if len(blob) != width * count:
        notes.add(f"tensor {name!r}: {len(blob)} bytes for {count} {datatype} values")
        return None
    values: list[Any] = np.frombuffer(blob, dtype=dtype).tolist()
    return values


def _numel(shape: Any) -> int | None:
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        return None
    return math.prod(shape)


def split_body(raw: bytes, header_len: str | None, notes: Notes) -> tuple[Any, bytes]:
    """(the JSON part, the binary part) of an OIP body."""
    if header_len is None:
        try:
            return orjson.loads(raw), b""
        except orjson.JSONDecodeError:
            return None, b""
    try:
        n = int(header_len)
    except ValueError:
        notes.add(f"{HEADER} {header_len!r} is not a number")
        return None, b""
    if not 0 < n <= len(raw):
        notes.add(f"{HEADER} {n} does not fit a body of {len(raw)} bytes")
        return None, b""
    try:
        return orjson.loads(raw[:n]), raw[n:]
    except orjson.JSONDecodeError as exc:
        notes.add(f"binary-extension JSON header unreadable: {exc}")
        return None, b""


def read_tensors(spec: Any, blob: bytes, notes: Notes) -> list[tuple[str, list[int], list[Any]]]:
    """(name, shape, flat values) for every tensor that can be trusted."""
    if not isinstance(spec, list):
        return []
    out = []
    offset = 0
    for i, tensor in enumerate(spec):
        if not isinstance(tensor, dict):
            notes.add(f"tensor {i} is not an object")
            continue
        name = str(tensor.get("name", f"t{i}"))
        shape, datatype = tensor.get("shape"), str(tensor.get("datatype", ""))
        count = _numel(shape)
        params = tensor.get("parameters") if isinstance(tensor.get("parameters"), dict) else {}
        size = params.get("binary_data_size") if params else None
        values: list[Any] | None = None
        if isinstance(size, int) and size >= 0:
            chunk = blob[offset : offset + size]
            offset += size
            if len(chunk) < size:
                notes.add(f"tensor {name!r}: binary data shorter than its {size} bytes")
            elif count is not None:
                values = decode_binary(chunk, datatype, count, notes, name)
        elif "data" in tensor:
            if datatype not in DTYPES and datatype not in ("BYTES", "BF16"):
                notes.add(f"tensor {name!r}: unknown datatype {datatype!r}")
            values = _flatten(tensor["data"])
        if count is None:
            notes.add(f"tensor {name!r}: shape {shape!r} is not a list of sizes")
            continue
        if values is None:
            continue
        if len(values) != count:
            notes.add(
                f"tensor {name!r}: shape {shape} needs {count} values, data has {len(values)}"
            )
            continue
        out.append((name, list(shape) if shape else [1], values))
    return out


def _per_row(name: str, shape: list[int], values: list[Any]) -> tuple[int, list[Any]]:
    """Batch size and one entry per row (a scalar or a flat list)."""
    batch = shape[0] if shape else 1
    width = len(values) // batch if batch else 0
    if width == 1:
        return batch, values
    return batch, [values[r * width : (r + 1) * width] for r in range(batch)]


class OIPv2Adapter:
    name = "oip_v2"

    def detect(self, request: Any, response: Any, exchange: Exchange) -> bool:
        if header(exchange, HEADER) is not None:
            return True
        if "/v2/models/" in exchange.path and exchange.path.rstrip("/").endswith("/infer"):
            return True
        inputs = request.get("inputs") if isinstance(request, dict) else None
        return (
            isinstance(inputs, list)
            and bool(inputs)
            and isinstance(inputs[0], dict)
            and ("datatype" in inputs[0])
        )

    def extract(self, request: Any, response: Any, exchange: Exchange) -> Extraction:
        notes = Notes()
        req_json, req_blob = (
            split_body(exchange.request_body, header(exchange, HEADER), notes)
            if request is None
            else (request, b"")
        )
        resp_json, resp_blob = (
            split_body(exchange.response_body, header(exchange, HEADER, response=True), notes)
            if response is None and exchange.response_body
            else (response, b"")
        )
        inputs = read_tensors(
            req_json.get("inputs") if isinstance(req_json, dict) else None, req_blob, notes
        )
        batch = inputs[0][1][0] if inputs and inputs[0][1] else (1 if inputs else 0)
        if batch > MAX_ROWS:
            notes.add(f"batch of {batch} cut to {MAX_ROWS} rows")
        rows: list[dict[str, Any]] = [{"features": {}} for _ in range(min(batch, MAX_ROWS))]
        for name, shape, values in inputs:
            n, per_row = _per_row(name, shape, values)
            if n != batch:
                notes.add(f"input {name!r} has batch {n}, expected {batch}")
                continue
            for row, value in zip(rows, per_row, strict=False):
                feats = row["features"]
                if isinstance(value, list):
                    if len(value) > MAX_FEATURES:
                        notes.add(f"input {name!r}: {len(value)} features cut to {MAX_FEATURES}")
                        value = value[:MAX_FEATURES]
                    feats.update({f"{name}_{j}": v for j, v in enumerate(value)})
                else:
                    feats[name] = value
        outputs = read_tensors(
            resp_json.get("outputs") if isinstance(resp_json, dict) else None, resp_blob, notes
        )
        preds: dict[str, list[Any]] = {}
        for name, shape, values in outputs:
            n, per_row = _per_row(name, shape, values)
            if n != batch:
                notes.add(f"output {name!r} has batch {n}, inputs have {batch}")
                continue
            preds[name] = per_row
        for i, row in enumerate(rows):
            if len(preds) == 1:
                row["prediction"] = next(iter(preds.values()))[i]
            elif preds:
                row["prediction"] = {k: v[i] for k, v in preds.items()}
        context: dict[str, Any] = {}
        if isinstance(req_json, dict) and isinstance(req_json.get("parameters"), dict):
            context["parameters"] = req_json["parameters"]
        if isinstance(resp_json, dict) and resp_json.get("model_version"):
            context["model_version"] = resp_json["model_version"]
        return Extraction(self.name, rows=rows, context=context, error=notes.text())
