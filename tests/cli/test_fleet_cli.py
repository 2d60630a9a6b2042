"""edge-fleet as documented: the README's commands, run as written, against real brokers."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

from cli_run import edge_fleet

ROOT = Path(__file__).resolve().parents[2]


def _documented(doc: Path, prefix: str) -> list[list[str]]:
    """Every command line of ``doc`` that starts with ``prefix``, split as a shell would."""
    lines = []
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.startswith(prefix):
            lines.append(shlex.split(line, comments=True))
    return lines


def test_the_readme_group_wide_deploy_runs_as_written_and_every_node_swaps(
    broker, make_node, sensor_bundles, fleet_keys, tmp_path
):
    """``edge-fleet deploy out/tep-v2.bundle --group plant-a --key keys/fleet.key``: no --node.

    The README's line word for word, in a directory laid out as the README
    assumes (``out/``, ``keys/``), the broker from ``EDGE_SDK_BROKER``; only
    ``--json`` is added, so the outcome is read as data. Two nodes of the group
    take the update: group-wide means every node, not one.
    """
    [readme_line] = [
        words
        for words in _documented(ROOT / "README.md", "edge-fleet deploy")
        if "--node" not in words
    ]
    assert [w for w in _documented(ROOT / "docs/node.md", "edge-fleet deploy")] == [readme_line]
    bundle, group = Path(readme_line[2]), readme_line[readme_line.index("--group") + 1]
    key = Path(readme_line[readme_line.index("--key") + 1])
    shutil.copytree(sensor_bundles["v2"], tmp_path / bundle)  # unsigned: --key signs it
    (tmp_path / key.parent).mkdir(parents=True)
    shutil.copy(fleet_keys["key"], tmp_path / key)
    nodes = [make_node(broker, sensor_bundles["v1"], node_id=n, group=group) for n in ("n1", "n2")]
    assert {n.model.runtime.manifest.model.version for n in nodes} == {"1.0.0"}

    out = edge_fleet(
        *readme_line[1:], "--json", cwd=tmp_path, env={"EDGE_SDK_BROKER": broker.url}, timeout=120
    )

    outcome = json.loads(out.stdout)
    assert {n: (p["step"], p["version"]) for n, p in outcome.items()} == {
        "n1": ("swapped", "1.1.0"),
        "n2": ("swapped", "1.1.0"),
    }
    assert {n.model.runtime.manifest.model.version for n in nodes} == {"1.1.0"}
