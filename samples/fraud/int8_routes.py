"""INT8 routes the fraud export builds, per engine, as device-profile target options.

The export builds every INT8 route an engine has and keeps the one that passes its
accuracy gate (and is faster). For an attention GNN some routes never pass, so the
fraud export does not build them: the shipped profile is written beside the bundle
with the engine's option set (``int8_flavours`` for LiteRT, ``int8_sources`` for
OpenVINO), same name and targets, and the manifest records the skipped routes.
Everything here is about the SYNTHETIC fraud sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: INT8 routes built for an attention GNN, per engine (profile target options). For the
#: GATv2, LiteRT full-integer INT8 (logits off by 0.69-0.85: an attention weight of 1/degree
#: rounds to 0 in 8 bits) and OpenVINO's NNCF IR (off by 1.5) failed the export's gate every
#: time they were built, at the cost of a calibration and a conversion per LiteRT bucket
#: and an NNCF run: only the routes that passed are built (recorded as skipped in the
#: manifest's ``build`` of each target).
ATTENTION_INT8 = {
    "litert": {"int8_flavours": ["dynamic_range_quant"]},
    "openvino": {"int8_sources": ["qdq"]},
}


def routes_for(model: Any) -> dict[str, dict[str, Any]]:
    """:data:`ATTENTION_INT8` for a model with attention layers (GAT, GATv2, Transformer
    convolutions), else {} (every route built, the gate and the timings choose)."""
    from torch_geometric.nn import GATConv, GATv2Conv, TransformerConv

    attention = (GATConv, GATv2Conv, TransformerConv)
    return ATTENTION_INT8 if any(isinstance(m, attention) for m in model.modules()) else {}


def with_target_options(
    profiles: Sequence[str], options: dict[str, dict[str, Any]], folder: Path
) -> list[str]:
    """``profiles`` as the export takes them: a shipped profile with a target of an engine
    in ``options`` is written to ``folder/<name>.yaml`` (same name and targets, those
    options added to that engine's targets); the others stay names."""
    from importlib import resources

    import yaml

    from edge_sdk.profiles import load_profile

    out: list[str] = []
    for name in profiles:
        hit = [(i, t.backend) for i, t in enumerate(load_profile(name).targets)]
        hit = [(i, str(b)) for i, b in hit if str(b) in options]
        if not hit:
            out.append(name)
            continue
        raw = yaml.safe_load(
            (resources.files("edge_sdk.device_profiles") / f"{name}.yaml").read_text()
        )
        for i, backend in hit:
            entry = raw["targets"][i]
            raw["targets"][i] = ({"use": entry} if isinstance(entry, str) else entry) | options[
                backend
            ]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.yaml"
        note = "; ".join(f"{b}: {options[b]}" for b in sorted({b for _, b in hit}))
        head = f"# {name} as shipped, INT8 routes set by samples/fraud/export.py ({note})\n"
        path.write_text(head + yaml.safe_dump(raw, sort_keys=False))
        out.append(str(path))
    return out
