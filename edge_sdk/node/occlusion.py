"""An alert's *why* by occlusion: which neighbour events raised its score most.

For each neighbour event of the alert's subgraph, one copy without that
event's node and edges is scored; the drop from the alert's score is that
event's contribution. Every copy of a chunk of alerts runs in one merged call.
The node's worker (:mod:`.events`) and its explainer process
(:mod:`.explain_process`) both explain through :func:`explain`, so the two
give the same answer on the same engine.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..eventgraph import Subgraph
from ..manifest import Manifest

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger(__name__)

#: Most occluded copies per merged explanation call: a threshold that alerts most
#: events would otherwise cost one inference per neighbour of each (dozens per alert).
MAX_OCCLUSIONS = 1024


def explain(
    rt: Runtime, graphs: Sequence[Subgraph], scores: Sequence[float | None], top_k: int
) -> list[list[dict[str, Any]]]:
    """Each alert's top-``top_k`` neighbour events by occlusion, all copies in one merged call.

    Args:
        rt: The runtime that made ``scores`` (or one loaded like it).
        graphs: The alerts' subgraphs.
        scores: Their scores (None or NaN: nothing to explain against).
        top_k: Neighbour events named per alert.

    Returns:
        Per alert, ``{"event", "role", "entity", "drop"}`` by falling ``drop``.
        An explanation that cannot be computed is empty, and so are those past
        :data:`MAX_OCCLUSIONS` copies in one call: the alert still goes out.
    """
    if not graphs:
        return []
    names = input_names(rt.manifest)
    copies: list[dict[str, np.ndarray]] = []
    owners: list[tuple[int, dict[str, Any]]] = []
    for g, sg in enumerate(graphs):
        if len(copies) + len(sg.neighbour_events()) > MAX_OCCLUSIONS:
            break  # the rest of this batch's alerts go out without why
        for item, copy in occlusions(sg):
            copies.append(copy.inputs(names))
            owners.append((g, item))
    if not copies:
        return [[] for _ in graphs]
    try:
        occluded = [score_of(o) for o in rt.infer_batch(copies)]
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}"
        log.error("occlusion of %d alert(s) failed: %s", len(graphs), text[:300])
        return [[] for _ in graphs]
    why: list[list[dict[str, Any]]] = [[] for _ in graphs]
    for (g, item), s in zip(owners, occluded, strict=True):
        base = scores[g]
        if base is not None and math.isfinite(s):
            why[g].append({**item, "drop": round(base - s, 6)})
    return [sorted(w, key=lambda d: -d["drop"])[:top_k] for w in why]


def occlusions(sg: Subgraph) -> list[tuple[dict[str, str], Subgraph]]:
    """One copy of ``sg`` per neighbour event, with that event's node and edges removed.

    Returns:
        ``({"event", "role", "entity"}, copy)`` per earlier event in ``sg``:
        ``entity`` is the first entity it links to (``"device:d5"``) and
        ``role`` the role that entity played in it (``"device"``).
    """
    src = np.asarray(sg.edge_index[0])
    dst = np.asarray(sg.edge_index[1])
    found: list[tuple[dict[str, str], Subgraph]] = []
    for eid in sg.neighbour_events():
        k = sg.node_keys.index(f"event:{eid}")
        edges = np.flatnonzero(src == k)
        e = int(edges[0]) if len(edges) else -1
        entity = sg.node_keys[int(dst[e])] if e >= 0 else ""
        role = sg.edge_roles[e] if e >= 0 else ""
        found.append(({"event": eid, "role": role, "entity": entity}, sg.without_event(eid)))
    return found


def input_names(m: Manifest) -> tuple[str, ...]:
    """The subgraph tensors a model takes (``edge_attr`` only with edge features)."""
    return ("x", "edge_index", "edge_attr") if m.graph.edge_dim else ("x", "edge_index")


def score_of(outputs: Mapping[str, np.ndarray]) -> float:
    """``softmax(logits[0])[1]``: node 0 is the scored event, class 1 the positive one."""
    logits = outputs["logits"] if "logits" in outputs else next(iter(outputs.values()))
    row = np.asarray(logits[0], dtype=np.float64)
    z = np.exp(row - row.max())
    return float(z[1] / z.sum())


__all__ = ["MAX_OCCLUSIONS", "explain", "input_names", "occlusions", "score_of"]
