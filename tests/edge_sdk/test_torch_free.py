"""The device runtime needs neither torch nor the exporters.

Each test runs a fresh interpreter in which a ``sys.meta_path`` finder makes
the blocked packages unimportable (as on a device without the ``[export]``
extra); the interpreter prints what happened as one JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

EXTRA_HINT = 'pip install "edge-graph-sdk[export]"'

# argv[1]: comma-separated packages to block; argv[2]: bundle path (optional).
PRELUDE = r"""
import importlib.abc
import json
import sys

BLOCKED = set(sys.argv[1].split(","))
ATTEMPTS = []


class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            ATTEMPTS.append(name)
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None


sys.meta_path.insert(0, Blocker())
RESULT = {}


def import_exporters():
    from edge_sdk.errors import EdgeSDKError

    try:
        import edge_sdk.exporters  # noqa: F401
    except Exception as exc:
        return {
            "type": type(exc).__name__,
            "edge_sdk_error": isinstance(exc, EdgeSDKError),
            "message": str(exc),
            "left_in_sys_modules": "edge_sdk.exporters" in sys.modules,
        }
    return None
"""

RUN_CANARY = r"""
import numpy as np

from edge_sdk import Bundle, Runtime

bundle = Bundle.open(sys.argv[2])
canary = bundle.manifest.canary
inputs, expected = bundle.load_canary()
rt = Runtime.load(bundle)
got = rt.infer(inputs)
RESULT["backend"] = rt.describe()["backend"]
RESULT["outputs"] = sorted(got)
RESULT["mismatched"] = sorted(
    k for k, v in expected.items()
    if k not in got or not np.allclose(got[k], v, atol=canary.atol, rtol=canary.rtol)
)
RESULT["attempts"] = sorted(set(ATTEMPTS))
RESULT["loaded"] = sorted(
    m for m in sys.modules
    if m.split(".")[0] in {"torch", "torch_geometric"} or m.startswith("edge_sdk.exporters")
)
assert "torch" not in sys.modules

# The same device now tries the build-time pipeline (torch still missing).
BLOCKED.discard("edge_sdk.exporters")
RESULT["exporters"] = import_exporters()
assert "torch" not in sys.modules
print(json.dumps(RESULT))
"""

IMPORT_EXPORTERS = r"""
RESULT["exporters"] = import_exporters()
print(json.dumps(RESULT))
"""


def run_blocked(blocked: list[str], body: str, *args: str, cwd: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_SDK_")}
    proc = subprocess.run(
        [sys.executable, "-c", PRELUDE + body, ",".join(blocked), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_runtime_runs_canary_without_torch(tiny_gcn_bundle: Path, tmp_path: Path) -> None:
    result = run_blocked(
        ["torch", "torch_geometric", "edge_sdk.exporters"],
        RUN_CANARY,
        str(tiny_gcn_bundle),
        cwd=tmp_path,
    )
    assert result["backend"] == "onnxruntime"
    assert result["outputs"] == ["out"]
    assert result["mismatched"] == []
    # Nothing even tried (and quietly survived failing) to import them.
    assert result["attempts"] == []
    assert result["loaded"] == []

    err = result["exporters"]
    assert err is not None, "edge_sdk.exporters imported without torch"
    assert err["edge_sdk_error"], err
    assert "torch" in err["message"]
    assert EXTRA_HINT in err["message"]
    assert not err["left_in_sys_modules"]


def test_exporters_without_pyg_name_the_extra(tmp_path: Path) -> None:
    result = run_blocked(["torch_geometric"], IMPORT_EXPORTERS, cwd=tmp_path)
    err = result["exporters"]
    assert err is not None, "edge_sdk.exporters imported without torch_geometric"
    assert err["edge_sdk_error"], err
    assert "torch_geometric is not installed" in err["message"]
    assert EXTRA_HINT in err["message"]


NODE_WITHOUT_MQTT = r"""
import edge_sdk.cli.fleet_cli, edge_sdk.cli.node_cli, edge_sdk.fleet.deploy, edge_sdk.fleet.watch
from edge_sdk import Bundle
from edge_sdk.node import EdgeNode, NodeConfig

inputs, expected = Bundle.open(sys.argv[2]).load_canary()
node = EdgeNode(NodeConfig(node_id="n1", bundle=sys.argv[2], state_dir="state")).start()
got = node.infer(inputs)
node.stop()
RESULT["max_err"] = max(float(np.abs(got[k] - v).max()) for k, v in expected.items())
RESULT["attempts"] = sorted(set(ATTEMPTS))
print(json.dumps(RESULT))
"""


def test_local_only_node_needs_neither_torch_nor_mqtt_nor_crypto(
    tiny_gcn_bundle: Path, tmp_path: Path
) -> None:
    blocked = ["torch", "torch_geometric", "edge_sdk.exporters", "paho", "cryptography"]
    result = run_blocked(
        blocked, "import numpy as np\n" + NODE_WITHOUT_MQTT, str(tiny_gcn_bundle), cwd=tmp_path
    )
    assert result["max_err"] < 1e-4
    assert result["attempts"] == []  # the CLIs and fleet tools import engines lazily
