"""One request: the scored event's subgraph, its tensors and what each edge stands for."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError

#: The tensors a model may take, in the order a request carries them.
TENSORS = ("x", "edge_index", "edge_attr")


@dataclass(frozen=True)
class Subgraph:
    """The graph a model scores for one event; node 0 is that event.

    Attributes:
        x: float32 [N, F] node features (``EventGraphSpec.node_feature_names``).
        edge_index: int64 [2, E] source, target; every event-entity link in
            both directions (the first E/2 edges event -> entity, then the same
            links reversed).
        edge_attr: float32 [E, A] (``EventGraphSpec.edge_feature_names``).
        node_keys: ``"event:<id>"`` or ``"<entity type>:<id>"`` per node.
        edge_events: For each edge, the id of the event it stands for
            (explanations: removing one neighbour event removes these edges).
        edge_roles: For each edge, the role its entity played in that event.
        tabular: The non-graph baseline's row for the scored event
            (``EventGraphStore.tabular``), float32 [T].
    """

    x: np.ndarray
    edge_index: np.ndarray
    edge_attr: np.ndarray
    node_keys: list[str]
    edge_events: list[str]
    edge_roles: list[str]
    tabular: np.ndarray

    @property
    def num_nodes(self) -> int:
        """N."""
        return int(self.x.shape[0])

    @property
    def num_edges(self) -> int:
        """E."""
        return int(self.edge_index.shape[1])

    @property
    def event_id(self) -> str:
        """The scored event's id."""
        return self.node_keys[0].split(":", 1)[1]

    def inputs(self, names: Iterable[str] = TENSORS) -> dict[str, np.ndarray]:
        """The tensors a model takes (``manifest.request_inputs`` names), by name."""
        out: dict[str, np.ndarray] = {}
        for name in names:
            if name not in TENSORS:
                raise InvalidInputError(
                    name, f"a subgraph has no such tensor; it has {', '.join(TENSORS)}"
                )
            out[name] = getattr(self, name)
        return out

    def neighbour_events(self) -> list[str]:
        """Ids of the earlier events in the subgraph (every event but the scored one)."""
        return [k.split(":", 1)[1] for k in self.node_keys[1:] if k.startswith("event:")]

    def without_event(self, event_id: str) -> Subgraph:
        """A copy without one earlier event's node and edges (occlusion explanations).

        The score drop between this subgraph and the copy is that event's
        contribution. Removing the scored event itself is refused: there would
        be nothing left to score.
        """
        if event_id == self.event_id:
            raise InvalidInputError("event", "the scored event (node 0) cannot be removed")
        key = f"event:{event_id}"
        try:
            node = self.node_keys.index(key)
        except ValueError:
            raise InvalidInputError("event", f"{event_id!r} is not in this subgraph") from None
        keep_edge = (self.edge_index[0] != node) & (self.edge_index[1] != node)
        new_id = np.arange(self.num_nodes, dtype=np.int64)
        new_id[node + 1 :] -= 1
        edges = np.flatnonzero(keep_edge)
        return Subgraph(
            x=np.delete(self.x, node, axis=0),
            edge_index=new_id[self.edge_index[:, edges]],
            edge_attr=self.edge_attr[edges],
            node_keys=self.node_keys[:node] + self.node_keys[node + 1 :],
            edge_events=[self.edge_events[i] for i in edges],
            edge_roles=[self.edge_roles[i] for i in edges],
            tabular=self.tabular,
        )


__all__ = ["TENSORS", "Subgraph"]
