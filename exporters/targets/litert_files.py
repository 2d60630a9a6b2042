"""Reading converted ``.tflite`` files: tensor name maps, ops, a crash-safe probe run.

Shared by the LiteRT compilers (:mod:`.to_litert`, :mod:`.litert_tables`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk._optional import require


def io_map(
    path: Path, input_names: list[str], output_names: list[str]
) -> tuple[dict[str, Any], list[str]]:
    """Manifest input/output names -> TFLite tensor names (via the serving signature), and ops.

    The signature keeps ONNX input names; outputs come out as ``Identity``,
    ``Identity_1``, ... in ONNX output order, whatever the tensors are called
    or how a full-INT8 file orders them.
    """
    interpreter_mod = require("ai_edge_litert.interpreter", "reading converted .tflite files")
    it = interpreter_mod.Interpreter(model_path=str(path))
    sig = it._get_full_signature_list().get("serving_default")
    ins, outs = it.get_input_details(), it.get_output_details()
    names = {d["index"]: d["name"] for d in ins + outs}
    if sig is None:
        inputs = {n: d["name"] for n, d in zip(input_names, ins, strict=True)}
        outputs = {n: d["name"] for n, d in zip(output_names, outs, strict=True)}
    else:
        inputs = {n: names[sig["inputs"][n]] for n in input_names}
        keys = (
            output_names
            if set(output_names) <= set(sig["outputs"])
            else sorted(sig["outputs"], key=_identity_order)
        )
        outputs = {n: names[sig["outputs"][k]] for n, k in zip(output_names, keys, strict=True)}
    ops = sorted({d["op_name"] for d in it._get_ops_details()} - {"DELEGATE"})
    return {"inputs": inputs, "outputs": outputs}, ops


#: Loads, allocates and runs a .tflite once (on zeros, or on the inputs in an .npz named
#: after the ONNX inputs); a crash there kills only this child.
_PROBE = """
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1])
it.allocate_tensors()
feeds = dict(np.load(sys.argv[2])) if len(sys.argv) > 2 else {}
for d in it.get_input_details():
    name = d["name"].removeprefix("serving_default_").rsplit(":", 1)[0]
    value = feeds.get(name)
    if value is None:
        value = np.zeros(d["shape"], d["dtype"])
    elif np.dtype(d["dtype"]) in (np.int8, np.int16, np.uint8) and d["quantization"][0]:
        scale, zero = d["quantization"]
        value = np.rint(value / scale) + zero
    it.set_tensor(d["index"], np.asarray(value).reshape(d["shape"]).astype(d["dtype"]))
it.invoke()
"""


def probe(path: Path, timeout: float = 300.0, feeds: dict[str, np.ndarray] | None = None) -> str:
    """Run ``path`` once in a child process; ``""`` if it runs, else why not.

    Some onnx2tf outputs abort inside LiteRT's native code (a full-INT8 ``SELECT_V2``
    fed the float32 minimum, for one): in-process that would kill the whole export.

    Args:
        path: The ``.tflite`` file.
        timeout: Seconds for one inference.
        feeds: A real request by ONNX input name (default: zeros). Zeros are not a
            request of a table-input model: an int8 ``DIV`` by a degree of 0 aborts.
    """
    import subprocess
    import sys

    args = [sys.executable, "-c", _PROBE, str(path)]
    if feeds is not None:
        data = path.with_suffix(".probe.npz")
        np.savez(data, **feeds)  # type: ignore[arg-type]  # numpy stubs: allow_pickle
        args.append(str(data))
    try:
        r = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return f"did not finish one inference in {timeout:.0f} s"
    if r.returncode == 0:
        return ""
    tail = [ln for ln in r.stderr.strip().splitlines() if ln and not ln.startswith("I0000")]
    how = f"signal {-r.returncode}" if r.returncode < 0 else f"exit code {r.returncode}"
    return f"LiteRT interpreter crashed ({how})" + (f": {tail[-1][:200]}" if tail else "")


def _identity_order(key: str) -> tuple[int, str]:
    head, _, tail = key.rpartition("_")
    return (int(tail) + 1, head) if head and tail.isdigit() else (0, key)


@contextmanager
def tools_on_path() -> Iterator[None]:
    """Put this interpreter's scripts folder first on ``PATH`` for the block.

    onnx2tf runs the ``onnxsim`` command-line tool (and checks with onnxruntime);
    outside an activated virtual environment it is not found and the step is
    skipped with a message nobody sees.
    """
    import os
    import sys

    saved = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), saved])
    try:
        yield
    finally:
        os.environ["PATH"] = saved


def converter_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        tf = version("tensorflow-cpu")
    except PackageNotFoundError:
        tf = version("tensorflow")
    return f"onnx2tf {version('onnx2tf')}, tensorflow {tf}"
