"""One engine (or PyG eager) per process, driven over a pipe: its own peak RSS, shared timing.

``graph_scale.py`` starts one child per row of a graph: PyG eager first (it
writes the reference output), then every artifact through ``Runtime``. Each
child loads its model, makes its first call (parity against the reference)
and waits; the parent then asks each child in turn for a block of timed
calls, round after round, so every row sees the same background load on a
shared machine while only one computes at a time.

Peak RSS is the child's ``VmHWM`` (high-water mark of its own address space)
read at the end. ``ru_maxrss`` from ``wait4``/``RUSAGE_CHILDREN`` is not used:
Linux carries the parent's high-water mark into a child across fork + exec,
so every child would report at least the exporting parent's size.

Protocol, one JSON object per line (the child's real stdout is kept for it;
library prints go to stderr): child ``{"ready": {...}}``; parent ``{"run": k}``,
child ``{"times": [ms, ...]}``; parent ``{"stop": true}``, child ``{"peak_rss_mb": ...}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

HERE = Path(__file__).resolve().parent
CORA_DIR = HERE.parent / "samples" / "cora"


def proc_status_mb(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_model(kind: str, features: int, classes: int, hidden: int, seed: int) -> Any:
    """A seeded, untrained 2-layer GCN / SAGE / GAT from ``samples/cora/models.py``."""
    import torch

    if str(CORA_DIR) not in sys.path:
        sys.path.insert(0, str(CORA_DIR))
    import models  # samples/cora/models.py

    torch.manual_seed(seed)
    if kind == "gcn":
        return models.GCN(features, hidden, classes).eval()
    if kind == "sage":
        return models.SAGE(features, hidden, classes).eval()
    if kind == "gat":
        return models.GAT(features, hidden // 8, 8, classes).eval()
    raise ValueError(f"unknown model {kind!r}; expected gcn, sage or gat")


# -- child side ---------------------------------------------------------------------------------


def eager_setup(spec: dict[str, Any]) -> tuple[Callable[[], Any], dict[str, Any]]:
    """PyG eager on the graph; writes the reference output other children compare to."""
    import torch

    torch.set_num_threads(spec["threads"])
    model = make_model(spec["model"], spec["features"], spec["classes"], spec["hidden"], 0)
    model.load_state_dict(torch.load(spec["state"]))
    x = torch.from_numpy(np.load(spec["x"]))
    ei = torch.from_numpy(np.load(spec["edge_index"]))
    ready = proc_status_mb("VmRSS")
    with torch.no_grad():
        out = model(x, ei)
    np.save(spec["ref"], out.numpy())

    def call() -> None:
        with torch.no_grad():
            model(x, ei)

    return call, {"rss_ready_mb": ready}


def runtime_setup(spec: dict[str, Any]) -> tuple[Callable[[], Any], dict[str, Any]]:
    """The artifact through ``Runtime.load(bundle, backend=..., precision=...)``."""
    from edge_sdk import Runtime

    x = np.load(spec["x"])[None]
    ready = proc_status_mb("VmRSS")
    t = time.perf_counter()
    rt = Runtime.load(
        spec["bundle"],
        backend=spec["backend"],
        precision=spec["precision"],
        threads=spec["threads"],
    )
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    out = next(iter(rt.infer(x).values()))[0]
    first_ms = (time.perf_counter() - t) * 1e3
    ref = np.load(spec["ref"])
    err = np.abs(out - ref)
    info = {
        "artifact": rt.artifact.name,
        "load_s": load_s,
        "first_call_ms": first_ms,
        "max_abs_err": float(err.max()),
        "max_rel_err": float(err.max() / max(float(np.abs(ref).max()), 1e-12)),
        "argmax_agreement": float((out.argmax(-1) == ref.argmax(-1)).mean()),
        "rss_ready_mb": ready,
    }
    return (lambda: rt.infer(x)), info


def serve(spec_path: str) -> None:
    """Child main: set up, report ready, answer ``run`` / ``stop``."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to the log, not the protocol
    spec = json.loads(Path(spec_path).read_text())
    setup = eager_setup if spec["kind"] == "eager" else runtime_setup
    call, info = setup(spec)
    for _ in range(spec.get("warmup", 2)):
        call()
    proto.write(json.dumps({"ready": info}) + "\n")
    for line in sys.stdin:
        msg = json.loads(line)
        if "run" in msg:
            times = []
            for _ in range(int(msg["run"])):
                t = time.perf_counter()
                call()
                times.append((time.perf_counter() - t) * 1e3)
            proto.write(json.dumps({"times": times}) + "\n")
        else:
            proto.write(json.dumps({"peak_rss_mb": proc_status_mb("VmHWM")}) + "\n")
            return


# -- parent side --------------------------------------------------------------------------------


class ChildFailed(RuntimeError):
    """A child exited or answered something else than the protocol."""


class Child:
    """A running child: started and set up on construction (waits for ``ready``).

    Args:
        spec: What to run (``kind`` eager | runtime, paths, threads, ...).
        folder: Where its spec and log go.
        tag: File name stem of both.
    """

    def __init__(self, spec: dict[str, Any], folder: Path, tag: str) -> None:
        self.tag = tag
        spec_path = folder / f"{tag}.spec.json"
        spec_path.write_text(json.dumps(spec))
        self.log_path = folder / f"{tag}.log"
        threads = str(spec["threads"])
        env = {**os.environ, "OMP_NUM_THREADS": threads, "TF_CPP_MIN_LOG_LEVEL": "2"}
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, __file__, str(spec_path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                text=True,
            )
        self.ready: dict[str, Any] = self._read()["ready"]

    def _read(self) -> dict[str, Any]:
        out: IO[str] | None = self.proc.stdout
        line = out.readline() if out is not None else ""
        if not line:
            self.proc.wait()
            tail = self.log_path.read_text().strip().splitlines()[-3:]
            raise ChildFailed(f"{self.tag} exited {self.proc.returncode}: {' | '.join(tail)}")
        return dict(json.loads(line))

    def _send(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def run(self, calls: int) -> list[float]:
        """``calls`` timed calls, ms each."""
        return list(self._send({"run": calls})["times"])

    def stop(self) -> float:
        """End the child; its peak RSS in MB."""
        peak = float(self._send({"stop": True})["peak_rss_mb"])
        self.proc.wait(timeout=60)
        return peak

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


#: A row stops being timed once it has this many calls and has run this long.
MIN_CALLS, BUDGET_S = 8, 6.0


def enough(times: list[float], calls: int) -> bool:
    """Whether a row has its ``calls`` timed calls, or ``MIN_CALLS`` worth ``BUDGET_S``
    seconds (slow rows, e.g. dense GAT, would otherwise take minutes)."""
    return len(times) >= calls or (len(times) >= MIN_CALLS and sum(times) >= BUDGET_S * 1e3)


def interleave(children: dict[str, Child], calls: int, block: int) -> dict[str, list[float]]:
    """Blocks of ``block`` calls per child (the first of each not counted), children in
    turn, until each has ``calls`` timed calls or spent its budget (:func:`enough`)."""
    times: dict[str, list[float]] = {k: [] for k in children}
    while not all(enough(v, calls) for v in times.values()):
        for k, child in children.items():
            if not enough(times[k], calls):
                times[k] += child.run(block)[1:]
    return {k: v[:calls] for k, v in times.items()}


if __name__ == "__main__":
    serve(sys.argv[1])
