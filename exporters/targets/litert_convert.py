"""onnx2tf on one padding bucket of a table-input model, here or in a process of its own.

:func:`prepare` writes a bucket's fixed-shape ONNX and its check request into a
folder; :func:`convert_all` runs :func:`onnx2tf_convert` on every prepared
folder, ``job.jobs`` at a time, each in a fresh Python process
(``python -m edge_sdk.exporters.targets.litert_convert WORK NAME...``) with one
TensorFlow thread, else one after another in this process. The converted
SavedModel and ``.tflite`` files land in ``WORK/tf``; :mod:`.litert_tables`
checks and packages them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edge_sdk._optional import require
from edge_sdk.errors import ExportError

from . import litert_files as lf
from . import litert_graph as lg
from .base import Feeds, TargetJob, TargetNotSupported


def prepare(
    model: Any, shapes: dict[str, list[int]], names: list[str], feeds: list[Feeds], work: Path
) -> None:
    """One bucket's fixed-shape ONNX (``work/model.onnx``) and check request (``work/check_*``).

    Raises:
        ExportError: Fixing the input shapes failed.
        TargetNotSupported: A scatter onnx2tf cannot convert is left.
    """
    import onnx

    try:
        fixed = lg.fix_shapes(model, shapes)
    except Exception as exc:
        raise ExportError(f"LiteRT: fixing input shapes {shapes} failed: {exc}") from exc
    left = lg.reducing_scatters(fixed)
    if left:
        raise TargetNotSupported(f"onnx2tf cannot convert {', '.join(left)}")
    onnx.save(fixed, str(work / "model.onnx"))
    # A request with rows in every class, of exactly the input shapes, for onnx2tf's ONNX
    # Runtime checks: where an axis is ambiguous (slots K == features F) onnx2tf keeps the
    # guess those checks accept, and with empty classes a wrong guess passed them.
    for name in names:
        np.save(work / f"check_{name}.npy", feeds[0][name])


def convert_all(job: TargetJob, works: list[Path], names: list[str]) -> None:
    """onnx2tf on each prepared bucket: ``job.jobs`` at a time, each in a Python process
    of its own (a large model's bucket takes tens of seconds, nearly all of it
    single-threaded Python), else one after another in this process.

    Raises:
        TargetNotSupported: onnx2tf refused a bucket (or its process died).
    """
    jobs = min(job.jobs, len(works))
    if jobs <= 1:
        for b, work in enumerate(works):
            job.say(f"litert: converting bucket {b} ({bucket_label(job, b)}) with onnx2tf")
            onnx2tf_convert(work, names)
        return
    from concurrent.futures import ThreadPoolExecutor

    job.say(f"litert: converting {len(works)} buckets with onnx2tf, {jobs} processes at a time")
    started = time.perf_counter()
    # One thread per TensorFlow / OpenMP pool: the processes share the cores instead of
    # each spinning a pool per core (two of the fraud GNN's buckets: 39 s against 49 s).
    one = {k: "1" for k in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")}
    env = {**os.environ, **one}

    def convert(b: int) -> None:
        # A fresh interpreter (never fork one that runs TensorFlow; spawn would re-run
        # the caller's unguarded __main__): python -m this module WORK NAME...
        cmd = [sys.executable, "-m", __name__, str(works[b]), *names]
        with open(works[b] / "onnx2tf.log", "wb") as log:
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False, env=env)
        why = works[b] / _REFUSED
        if why.exists():
            raise TargetNotSupported(why.read_text())
        if code.returncode != 0:
            tail = (works[b] / "onnx2tf.log").read_text(errors="replace")[-800:]
            raise TargetNotSupported(
                f"onnx2tf's process for bucket {b} exited with {code.returncode}: {tail}"
            )
        job.say(
            f"litert: bucket {b} ({bucket_label(job, b)}) converted "
            f"({time.perf_counter() - started:.0f} s)"
        )

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for done in [pool.submit(convert, b) for b in range(len(works))]:
            done.result()


def bucket_label(job: TargetJob, b: int) -> str:
    """``b0: 72 nodes, 136 edges``: bucket ``b`` of ``job`` in progress lines and notes."""
    bucket = job.graph.buckets[b]
    return f"b{b}: {bucket.max_nodes} nodes, {bucket.max_edges} edges"


#: Written by a conversion process that onnx2tf refused: the reason.
_REFUSED = "onnx2tf_refused.txt"


def onnx2tf_convert(work: Path, names: list[str]) -> None:
    """onnx2tf on ``work/model.onnx`` (checked on ``work/check_*.npy``) into ``work/tf``.

    Also run in a process of its own (:func:`convert_all`, this module's ``__main__``).

    Raises:
        TargetNotSupported: onnx2tf refused the model (its log's tail says why).
    """
    data = [[n, str(work / f"check_{n}.npy"), 0.0, 1.0] for n in names]
    with lg.quiet() as log, warnings.catch_warnings(), lf.tools_on_path():
        warnings.simplefilter("ignore")
        onnx2tf = require("onnx2tf", "LiteRT conversion")  # TensorFlow's import logs: quiet
        try:
            onnx2tf.convert(
                input_onnx_file_path=str(work / "model.onnx"),
                output_folder_path=str(work / "tf"),
                output_signaturedefs=True,
                copy_onnx_input_output_names_to_tflite=True,
                non_verbose=True,
                # fix_shapes already ran onnxsim (in process) on this fixed-shape model;
                # onnx2tf's own three-to-four onnxsim subprocesses found nothing more to fold
                # and cost ~12 s of CPU per bucket (the fraud GATv2's 2 buckets: ~25 s).
                not_use_onnxsim=True,
                keep_shape_absolutely_input_names=names,
                custom_input_op_name_np_data_path=data,
            )
        except BaseException as exc:  # onnx2tf calls sys.exit on some errors
            raise TargetNotSupported(f"onnx2tf: {exc}; log tail: {log.getvalue()[-800:]}") from exc


if __name__ == "__main__":  # one bucket's conversion process: WORK NAME...
    try:
        onnx2tf_convert(Path(sys.argv[1]), sys.argv[2:])
    except TargetNotSupported as exc:
        (Path(sys.argv[1]) / _REFUSED).write_text(str(exc))
        sys.exit(3)
