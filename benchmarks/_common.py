"""What the benchmark scripts share: the machine stamp of a result, the sensor model, the
CPU time of a process tree."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import platform
import sys
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

SENSOR_MODEL = Path(__file__).resolve().parents[1] / "samples" / "tep" / "sensor_model.py"


def machine_meta(*distributions: str) -> dict[str, Any]:
    """Date, machine, CPU count, Python and the versions of ``distributions``."""
    from edge_sdk.profiles import cpu_flags

    isa = [
        f
        for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
        if f in cpu_flags()
    ]
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip()
        + (f" ({', '.join(isa)})" if isa else ""),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {d: version(d) for d in distributions},
    }


def meta_line(meta: dict[str, Any]) -> str:
    """The one-line machine stamp under a result table's title."""
    return (
        f"{meta['date']} · {meta['machine']} · {meta['cpus']} CPUs · Python {meta['python']} · "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items())
    )


def sample_module(name: str, path: Path) -> ModuleType:
    """Import a sample script (not a package) as ``name``, once.

    Registered in ``sys.modules``: torch.export and dataclasses look modules up there.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def sensor_module() -> ModuleType:
    """Import ``samples/tep/sensor_model.py``."""
    return sample_module("tep_sensor_model", SENSOR_MODEL)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds so far of process ``pid`` and its running children
    (the node's explainer process), from Linux /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:  # the thread ended meanwhile
            continue
        for child in children:
            with contextlib.suppress(OSError):  # the child ended meanwhile
                total += cpu_seconds(int(child))
    return total
