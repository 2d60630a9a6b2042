"""ONNX graph preparation for onnx2tf: fixed shapes, scatter pooling as MatMul, NHWC islands.

onnx2tf 1.28 refuses ``ScatterElements`` with a reduction. In the static form
every index is a constant once the input shape is fixed, so a scatter-add
whose indices are the same across columns (PyG's ``global_mean_pool`` over a
fixed batch vector, for example) is exactly ``P @ updates`` with a constant
one-hot ``P``: rewritten here when ``P`` is small. What stays a scatter with
a reduction is refused with the ops named.

The NHWC rewrite turns each ``MatMul(X [B, N, K], W [K, M])`` with a constant
weight into a 1x1 ``Conv`` over an ``[B, K, 1, N]`` (NCHW) view, which onnx2tf
turns into an NHWC ``CONV_2D`` over ``[B, 1, N, K]``: XNNPACK's fastest
kernel for node-wise linear layers.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stderr, redirect_stdout

import numpy as np
import onnx
from onnx import helper, numpy_helper

#: Largest one-hot pooling matrix (elements) a scatter-add is rewritten into.
MAX_ONE_HOT = 1 << 22

REDUCING_SCATTERS = ("ScatterElements", "ScatterND")


def reducing_scatters(model: onnx.ModelProto) -> list[str]:
    """Names ``op_type(reduction)`` of the scatters with a reduction in ``model``."""
    found = []
    for node in model.graph.node:
        if node.op_type in REDUCING_SCATTERS:
            red = next((a.s.decode() for a in node.attribute if a.name == "reduction"), "none")
            if red != "none":
                found.append(f"{node.op_type}(reduction={red})")
    return sorted(set(found))


def fix_shapes(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> onnx.ModelProto:
    """Fix the input shapes and fold every shape computation (onnxsim).

    Raises:
        RuntimeError: onnxsim failed or its result does not check.
    """
    import onnxsim

    with quiet():
        simple, ok = onnxsim.simplify(model, overwrite_input_shapes=shapes)
    if not ok:
        raise RuntimeError("onnxsim could not validate the fixed-shape model")
    constants_to_initializers(simple)
    return simple


def int32_gather_indices(model: onnx.ModelProto) -> int:
    """Store constant ``Gather`` indices as int32 where they fit; returns how many.

    Neighbour-table ids are int32 in the exported model, but PyTorch's exporter
    casts them to int64 for ``index_select`` and, once the shapes are fixed,
    onnxsim folds that cast into int64 constants: twice the bytes per table
    slot in the ``.tflite`` (ONNX ``Gather`` and TFLite ``GATHER`` both take
    int32 indices). Only initializers read by nothing but ``Gather`` indices
    are narrowed.
    """
    inits = {i.name: i for i in model.graph.initializer}
    uses: dict[str, set[tuple[str, int]]] = {}
    for node in model.graph.node:
        for pos, name in enumerate(node.input):
            uses.setdefault(name, set()).add((node.op_type, pos))
    outputs = {o.name for o in model.graph.output}
    count = 0
    for name, init in inits.items():
        if init.data_type != onnx.TensorProto.INT64 or name in outputs:
            continue
        if uses.get(name) != {("Gather", 1)}:
            continue
        ids = numpy_helper.to_array(init)
        if ids.size and (ids.min() < np.iinfo(np.int32).min or ids.max() > np.iinfo(np.int32).max):
            continue
        init.CopyFrom(numpy_helper.from_array(ids.astype(np.int32), name))
        count += 1
    return count


def constants_to_initializers(model: onnx.ModelProto) -> None:
    """Move ``Constant`` nodes' values into initializers (the rewrites look only there)."""
    keep = []
    for node in model.graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and value is not None:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value.t)
            tensor.name = node.output[0]
            model.graph.initializer.append(tensor)
        else:
            keep.append(node)
    del model.graph.node[:]
    model.graph.node.extend(keep)


@contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Silence Python *and* native (C++/absl) stdout/stderr; the text is kept for errors."""
    captured = io.StringIO()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile("w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with redirect_stdout(captured), redirect_stderr(captured):
                yield captured
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
            sink.seek(0)
            captured.write(sink.read().decode(errors="replace"))


def scatter_to_matmul(model: onnx.ModelProto) -> list[str]:
    """Rewrite constant-index scatter-adds into ``MatMul`` in place; returns what was rewritten."""
    consts = {i.name: i for i in model.graph.initializer}
    done: list[str] = []
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        repl = _scatter_matmul(node, consts, model)
        if repl is None:
            nodes.append(node)
            continue
        nodes.extend(repl)
        done.append(node.name or node.output[0])
    if done:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        _drop_unused_initializers(model)
    return done


def _scatter_matmul(
    node: onnx.NodeProto, consts: dict[str, onnx.TensorProto], model: onnx.ModelProto
) -> list[onnx.NodeProto] | None:
    if node.op_type != "ScatterElements":
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    reduction = attrs.get("reduction", b"none")
    if reduction != b"add" or node.input[0] not in consts or node.input[1] not in consts:
        return None
    data = numpy_helper.to_array(consts[node.input[0]])
    idx = numpy_helper.to_array(consts[node.input[1]]).astype(np.int64)
    if data.ndim != 2 or idx.ndim != 2 or attrs.get("axis", 0) not in (0, -2):
        return None
    # One destination row per update row: the same index across all columns.
    if not (idx == idx[:, :1]).all() or data.shape[0] * idx.shape[0] > MAX_ONE_HOT:
        return None
    if idx.shape[1] != data.shape[1]:
        return None
    rows = np.where(idx[:, 0] < 0, idx[:, 0] + data.shape[0], idx[:, 0])
    one_hot = np.zeros((data.shape[0], idx.shape[0]), data.dtype)
    one_hot[rows, np.arange(idx.shape[0])] = 1
    base = node.output[0]
    p_name = f"{base}__one_hot"
    model.graph.initializer.append(numpy_helper.from_array(one_hot, p_name))
    if not data.any():
        return [helper.make_node("MatMul", [p_name, node.input[2]], [base], name=f"{base}__mm")]
    return [
        helper.make_node("MatMul", [p_name, node.input[2]], [f"{base}__sum"], name=f"{base}__mm"),
        helper.make_node("Add", [node.input[0], f"{base}__sum"], [base], name=f"{base}__add"),
    ]


def to_nhwc(model: onnx.ModelProto) -> int:
    """Rewrite ``MatMul(X [1, N, K], W [K, M])`` (constant ``W``) as 1x1 convolutions, in place.

    The model must have fixed shapes (:func:`fix_shapes`). Returns the number of
    MatMuls rewritten (0: nothing to gain).
    """
    shapes = _shapes(model)
    consts = {i.name: i for i in model.graph.initializer}
    nodes: list[onnx.NodeProto] = []
    count = 0
    for node in model.graph.node:
        repl = _matmul_conv(node, consts, shapes, model)
        if repl is None:
            nodes.append(node)
        else:
            nodes.extend(repl)
            count += 1
    if count:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        _drop_unused_initializers(model)
    return count


def _matmul_conv(
    node: onnx.NodeProto,
    consts: dict[str, onnx.TensorProto],
    shapes: dict[str, list[int]],
    model: onnx.ModelProto,
) -> list[onnx.NodeProto] | None:
    if node.op_type != "MatMul" or node.input[1] not in consts or node.input[0] in consts:
        return None
    x_shape = shapes.get(node.input[0])
    w = numpy_helper.to_array(consts[node.input[1]])
    if w.ndim != 2 or x_shape is None or len(x_shape) not in (2, 3):
        return None
    b, n, k = ([1, *x_shape] if len(x_shape) == 2 else x_shape)[-3:]
    base = node.output[0]
    kernel = f"{base}__kernel"
    model.graph.initializer.append(
        numpy_helper.from_array(np.ascontiguousarray(w.T)[:, :, None, None], kernel)
    )
    nchw = [b, k, 1, n]
    s_in, s_out = f"{base}__nchw_shape", f"{base}__out_shape"
    model.graph.initializer.append(numpy_helper.from_array(np.array(nchw, np.int64), s_in))
    model.graph.initializer.append(
        numpy_helper.from_array(np.array([*x_shape[:-1], w.shape[1]], np.int64), s_out)
    )
    # [.., N, K] -> [B, K, N] -> [B, K, 1, N]: onnx2tf keeps this 4-D view in NHWC
    # ([B, 1, N, K]), so the transposes cancel against its own and CONV_2D runs on it.
    x3 = node.input[0]
    out: list[onnx.NodeProto] = []
    if len(x_shape) == 2:
        s3 = f"{base}__bnk_shape"
        model.graph.initializer.append(numpy_helper.from_array(np.array([b, n, k], np.int64), s3))
        out.append(helper.make_node("Reshape", [x3, s3], [f"{base}__bnk"]))
        x3 = f"{base}__bnk"
    out += [
        helper.make_node("Transpose", [x3], [f"{base}__bkn"], perm=[0, 2, 1]),
        helper.make_node("Reshape", [f"{base}__bkn", s_in], [f"{base}__nchw"]),
        helper.make_node("Conv", [f"{base}__nchw", kernel], [f"{base}__conv"], kernel_shape=[1, 1]),
        helper.make_node("Squeeze", [f"{base}__conv", _axes(model, base)], [f"{base}__bmn"]),
        helper.make_node("Transpose", [f"{base}__bmn"], [f"{base}__bnm"], perm=[0, 2, 1]),
        helper.make_node("Reshape", [f"{base}__bnm", s_out], [base]),
    ]
    return out


def _axes(model: onnx.ModelProto, base: str) -> str:
    name = f"{base}__axis2"
    model.graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), name))
    return name


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    out: dict[str, list[int]] = {}
    for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = v.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            out[v.name] = [d.dim_value for d in dims]
    return out


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def op_counts(ops: Sequence[str]) -> dict[str, int]:
    """Histogram of op names."""
    counts: dict[str, int] = {}
    for op in ops:
        counts[op] = counts.get(op, 0) + 1
    return counts


def nchw_shape(x_shape: Sequence[int]) -> list[int]:
    """``[B, N, F]`` -> the NCHW view ``[B, F, 1, N]`` onnx2tf turns into NHWC ``[B, 1, N, F]``."""
    b, n, f = x_shape
    return [b, f, 1, n]


def nhwc_input(model: onnx.ModelProto, name: str, x_shape: Sequence[int]) -> None:
    """Make input ``name`` ``[B, N, F]`` an NCHW ``[B, F, 1, N]`` input, in place.

    onnx2tf gives a 4-D NCHW input the NHWC shape ``[B, 1, N, F]``: the same
    memory order as ``[B, N, F]``, so the device only reshapes. Inside, the
    graph goes back to ``[B, N, F]`` (a transpose onnx2tf cancels against its own).
    """
    b, n, f = x_shape
    inner = f"{name}__bnf"
    for node in model.graph.node:
        for i, value in enumerate(node.input):
            if value == name:
                node.input[i] = inner
    shape = f"{name}__bfn_shape"
    model.graph.initializer.append(numpy_helper.from_array(np.array([b, f, n], np.int64), shape))
    head = [
        helper.make_node("Reshape", [name, shape], [f"{name}__bfn"]),
        helper.make_node("Transpose", [f"{name}__bfn"], [inner], perm=[0, 2, 1]),
    ]
    nodes = head + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    old = next(v for v in model.graph.input if v.name == name)
    elem = old.type.tensor_type.elem_type
    index = list(model.graph.input).index(old)
    model.graph.input.remove(old)
    model.graph.input.insert(index, helper.make_tensor_value_info(name, elem, nchw_shape(x_shape)))
