"""The Open Inference Protocol (KServe v2) wire format: datatypes, tensors, errors.

Decoding turns a request's JSON (and the binary tensor extension's raw
buffers) into named numpy arrays checked against the manifest; encoding turns
outputs back into JSON tensors or binary buffers. No HTTP here:
:mod:`edge_sdk.serving.http` does the transport.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np

from ..errors import InvalidInputError, OverloadedError
from ..graph import holds_bool
from ..manifest import Manifest

T = TypeVar("T")

#: Header that announces a binary body: its value is the JSON header's length.
BINARY_HEADER = "Inference-Header-Content-Length"

#: numpy dtype name -> Open Inference Protocol datatype.
DATATYPES: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}
ERROR_KINDS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    411: "length_required",
    413: "too_large",
    500: "internal",
    503: "overloaded",
}


class ProtocolError(Exception):
    """An error answer: status, message, and the metrics kind."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str | None = None,
        headers: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind or ERROR_KINDS.get(status, "internal")
        self.headers = dict(headers or {})
        self.close = close


def kserve_datatype(dtype: str | np.dtype[Any]) -> str:
    """The protocol datatype of a numpy dtype (``float32`` -> ``FP32``).

    Raises:
        ValueError: The dtype has no protocol name.
    """
    name = np.dtype(dtype).name
    try:
        return DATATYPES[name]
    except KeyError:
        raise ValueError(f"dtype {name} has no Open Inference Protocol datatype") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def parse_json(raw: memoryview) -> dict[str, Any]:
    try:
        doc = json.loads(bytes(raw), parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError too
        raise ProtocolError(400, f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError(400, "request body must be a JSON object with an 'inputs' list")
    return doc


def _params(item: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    params = item.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise ProtocolError(400, f"{where}: 'parameters' must be an object")
    return params


def decode_inputs(
    request: Mapping[str, Any], manifest: Manifest, binary: memoryview
) -> dict[str, np.ndarray]:
    specs = {t.name: t for t in manifest.request_inputs}
    items = request.get("inputs")
    if not isinstance(items, list) or not items:
        raise ProtocolError(
            400, f"'inputs' must be a non-empty list; this model takes {list(specs)}"
        )
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ProtocolError(400, f"inputs[{i}] must be an object with name, shape, datatype")
        name = item.get("name")
        if not isinstance(name, str):
            raise ProtocolError(400, f"inputs[{i}]: 'name' (a string) is required")
        if name not in specs:
            raise ProtocolError(400, f"unknown input {name!r}; this model takes {list(specs)}")
        if name in arrays:
            raise ProtocolError(400, f"input {name!r} is given twice")
        spec = specs[name]
        expected = kserve_datatype(spec.dtype)
        datatype = item.get("datatype")
        if datatype != expected:
            raise ProtocolError(
                400,
                f"input {name!r}: datatype {datatype!r} does not match the model, which "
                f"expects {expected}",
            )
        shape = item.get("shape")
        if not (
            isinstance(shape, list)
            and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)
        ):
            raise ProtocolError(
                400, f"input {name!r}: 'shape' must be a list of non-negative integers"
            )
        published = spec.shape
        if len(shape) != len(published):
            # The wire takes tensors as the model metadata publishes them: no [N, F]
            # shorthand for a [B, N, F] input (the Python API's convenience).
            dims = [d if isinstance(d, int) else -1 for d in published]
            raise ProtocolError(
                400,
                str(
                    InvalidInputError(
                        name,
                        f"expected rank {len(published)} {dims} as the model metadata "
                        f"publishes it (-1: any size), received rank {len(shape)} {shape}",
                    )
                ),
            )
        count = math.prod(shape)
        dtype = np.dtype(spec.dtype)
        size = _params(item, f"input {name!r}").get("binary_data_size")
        if size is not None:
            if "data" in item:
                raise ProtocolError(
                    400, f"input {name!r}: give 'data' or binary_data_size, not both"
                )
            need = count * dtype.itemsize
            if not isinstance(size, int) or isinstance(size, bool) or size != need:
                raise ProtocolError(
                    400,
                    f"input {name!r}: binary_data_size is {size!r} but shape {shape} of "
                    f"{expected} needs {need} bytes",
                )
            if offset + size > len(binary):
                raise ProtocolError(
                    400,
                    f"input {name!r}: the binary section ends at {len(binary)} bytes, "
                    f"before this input's {size} bytes (from offset {offset})",
                )
            le = np.frombuffer(binary, dtype=dtype.newbyteorder("<"), count=count, offset=offset)
            arrays[name] = le.astype(dtype, copy=False).reshape(shape)
            offset += size
            continue
        if "data" not in item:
            raise ProtocolError(400, f"input {name!r}: 'data' (or binary_data_size) is required")
        arrays[name] = _json_tensor(name, item["data"], shape, count, dtype, expected)
    if offset != len(binary):
        raise ProtocolError(
            400,
            f"the binary section has {len(binary)} bytes but the inputs declare {offset} "
            "(binary_data_size)",
        )
    return arrays


def _json_tensor(
    name: str, data: Any, shape: list[int], count: int, dtype: np.dtype[Any], datatype: str
) -> np.ndarray:
    if not isinstance(data, list):
        raise ProtocolError(400, f"input {name!r}: 'data' must be a list (flat or nested)")
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(
            400, f"input {name!r}: 'data' is ragged or not numeric ({exc})"
        ) from None
    kind = arr.dtype.kind
    if kind != "b" and dtype.kind != "b" and holds_bool(data):
        kind = "b"  # numpy read [true, 0.5] as numbers: refuse the booleans, never coerce
    ok = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}[dtype.kind] if dtype.kind in "biuf" else ""
    if arr.size and kind not in ok:
        what = {"f": "non-integer numbers", "b": "booleans", "O": "non-numbers or huge integers"}
        raise ProtocolError(
            400,
            f"input {name!r}: 'data' holds {what.get(kind, arr.dtype.name)}; "
            f"{datatype} needs {'integers' if dtype.kind in 'iu' else 'numbers'}",
        )
    if arr.size != count:
        raise ProtocolError(
            400,
            f"input {name!r}: 'data' has {arr.size} values but shape {shape} needs {count}",
        )
    try:
        return arr.astype(dtype).reshape(shape)
    except OverflowError as exc:
        raise ProtocolError(
            400, f"input {name!r}: a value does not fit {datatype} ({exc})"
        ) from None


def predict(call: Callable[[], T]) -> T:
    """Run a predictor call: a bad request answers 400, an overloaded server 503."""
    try:
        return call()
    except InvalidInputError as exc:
        raise ProtocolError(400, str(exc)) from None
    except OverloadedError as exc:
        raise ProtocolError(503, str(exc), headers={"Retry-After": "1"}) from None


def response_head(request: Mapping[str, Any], manifest: Manifest) -> dict[str, Any]:
    """An inference answer's model name and version, and the request's ``id`` if it had one."""
    head: dict[str, Any] = {
        "model_name": manifest.model.name,
        "model_version": manifest.model.version,
    }
    if "id" in request:
        head["id"] = request["id"]
    return head


def wanted_outputs(request: Mapping[str, Any], manifest: Manifest) -> list[tuple[str, bool]]:
    """Requested outputs in order, each with whether it goes back as binary."""
    default_binary = bool(_params(request, "request").get("binary_data_output", False))
    known = [t.name for t in manifest.outputs]
    items = request.get("outputs")
    if items is None:
        return [(n, default_binary) for n in known]
    if not isinstance(items, list):
        raise ProtocolError(400, "'outputs' must be a list of {\"name\": ...} objects")
    wanted: list[tuple[str, bool]] = []
    for i, item in enumerate(items):
        name = item.get("name") if isinstance(item, dict) else None
        if not isinstance(name, str):
            raise ProtocolError(400, f"outputs[{i}]: 'name' (a string) is required")
        if name not in known:
            raise ProtocolError(400, f"unknown output {name!r}; this model gives {known}")
        params = _params(item, f"output {name!r}")
        flag = params.get("binary_data", params.get("binary_data_output", default_binary))
        wanted.append((name, bool(flag)))
    return wanted


def encode_outputs(
    result: Mapping[str, np.ndarray], wanted: list[tuple[str, bool]]
) -> tuple[list[dict[str, Any]], list[bytes]]:
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in wanted:
        arr = np.asarray(result[name])
        entry: dict[str, Any] = {
            "name": name,
            "datatype": kserve_datatype(arr.dtype),
            "shape": list(arr.shape),
        }
        if binary:
            blob = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise ProtocolError(
                    500,
                    f"output {name!r} holds NaN or Inf, which JSON cannot carry; request it "
                    "with binary_data_output",
                )
            entry["data"] = arr.reshape(-1).tolist()
        outputs.append(entry)
    return outputs, blobs


# -- HTTP plumbing --------------------------------------------------------------------------------
