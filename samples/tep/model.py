"""An adaptive-graph GNN over the 52 TEP sensors: fault class and anomaly score per window.

The plant's sensor graph is not given, so the model learns it (DESIGN.md,
"learned topology"; the adaptive adjacency of Graph WaveNet / MTGNN):

1. two node-embedding tables ``E1, E2 [52, d]`` give ``A = softmax(relu(E1 E2ᵀ))``
   row-wise; each row keeps its ``k`` largest entries, the rest are zeroed and
   the kept ones **renormalised** to sum to 1, so every sensor averages exactly
   ``k`` sources (a row-stochastic, sparse adjacency);
2. each sensor's window ``[window]`` is projected to ``hidden`` features by one
   linear map shared by all sensors (a full-width temporal convolution), plus a
   per-sensor identity term from its embeddings (so the model knows which
   sensor is which after sharing weights);
3. two graph layers ``h' = relu(A h W + h W_self + b)`` (GraphConv-style: the
   self term keeps a sensor's own signal when its top-k sources are elsewhere);
4. readout: the mean over sensors concatenated with an attention-weighted sum
   (a softmax over sensors of a learned score), then a linear head to 22 classes
   (0 = normal, 1..21 = faults).

The anomaly score is the fault margin ``max_c≥1 logit_c − logit_0``: the
log-odds of the most likely fault against normal operation. Unlike
``1 − p(normal)`` it does not saturate at 1, so a threshold fitted on normal
validation windows keeps its resolution.

``A`` depends only on the parameters, never on the input, so for export it is
computed once and folded in as a constant: :meth:`AdaptiveGraphGNN.static`
returns a copy whose forward uses the fixed adjacency (plain matmuls, no
top-k / scatter on the device).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

NUM_SENSORS, WINDOW, NUM_CLASSES = 52, 20, 22


class AdaptiveGraphGNN(nn.Module):
    """``forward(x [B, 52, window]) -> (logits [B, 22], score [B])``.

    Args:
        num_sensors: Graph nodes.
        window: Samples per sensor window (node features).
        classes: Output classes (normal + faults).
        embed_dim: Node-embedding size ``d`` of ``E1, E2``.
        top_k: Sources kept per adjacency row.
        hidden: Hidden features per node.
        dropout: Dropout on node features during training.
    """

    def __init__(
        self,
        num_sensors: int = NUM_SENSORS,
        window: int = WINDOW,
        classes: int = NUM_CLASSES,
        embed_dim: int = 12,
        top_k: int = 10,
        hidden: int = 48,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not 1 <= top_k <= num_sensors:
            raise ValueError(f"top_k must be in 1..{num_sensors}, got {top_k}")
        self.num_sensors, self.window, self.top_k = num_sensors, window, top_k
        self.e1 = nn.Parameter(torch.randn(num_sensors, embed_dim) * 0.5)
        self.e2 = nn.Parameter(torch.randn(num_sensors, embed_dim) * 0.5)
        self.temporal = nn.Linear(window, hidden)
        self.identity = nn.Linear(2 * embed_dim, hidden)
        self.gnn = nn.ModuleList([nn.Linear(hidden, hidden, bias=False) for _ in range(2)])
        self.root = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(2)])
        self.attention = nn.Linear(hidden, 1)
        self.head = nn.Linear(2 * hidden, classes)
        self.dropout = nn.Dropout(dropout)
        # Set by static(): the folded adjacency, a constant for export.
        self.fixed_adjacency: Tensor | None
        self.register_buffer("fixed_adjacency", None)

    def learned_adjacency(self) -> Tensor:
        """``A`` from the embeddings (differentiable): top-k per row, rows sum to 1."""
        dense = torch.softmax(torch.relu(self.e1 @ self.e2.T), dim=1)
        values, index = dense.topk(self.top_k, dim=1)
        values = values / values.sum(dim=1, keepdim=True)
        return torch.zeros_like(dense).scatter(1, index, values)

    @torch.no_grad()
    def adjacency(self) -> Tensor:
        """The adjacency the model uses now, detached ``[N, N]``: fixed when folded."""
        if self.fixed_adjacency is not None:
            return self.fixed_adjacency.clone()
        return self.learned_adjacency().detach()

    def static(self) -> AdaptiveGraphGNN:
        """A copy with ``A`` folded in as a constant buffer (eval mode), for export.

        The copy computes the same outputs with plain matrix products: no
        softmax over embeddings, no top-k, no scatter.
        """
        folded = copy.deepcopy(self).eval()
        folded.fixed_adjacency = self.adjacency()
        return folded

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Classify windows.

        Args:
            x: ``[B, num_sensors, window]`` scaled sensor windows.

        Returns:
            ``logits [B, classes]`` and the anomaly score ``[B]``: the most likely
            fault's logit minus the normal class's.
        """
        adj = self.fixed_adjacency if self.fixed_adjacency is not None else self.learned_adjacency()
        ident = self.identity(torch.cat([self.e1, self.e2], dim=1))  # [N, H]
        h = torch.relu(self.temporal(x) + ident)
        for lin, root in zip(self.gnn, self.root, strict=True):
            h = self.dropout(h)
            h = torch.relu(adj @ lin(h) + root(h))  # [N,N] @ [B,N,H] broadcasts over B
        weights = torch.softmax(self.attention(h), dim=1)  # [B, N, 1]
        pooled = torch.cat([h.mean(dim=1), (weights * h).sum(dim=1)], dim=1)
        logits = self.head(pooled)
        score = logits[:, 1:].amax(dim=1) - logits[:, 0]
        return logits, score


# -- training ------------------------------------------------------------------------------


@dataclass
class TrainReport:
    """What :func:`train` did.

    Attributes:
        seconds: Wall time of the training loop.
        epochs: Epochs run.
        best_epoch: 1-based epoch whose weights were kept (best validation loss),
            or the last epoch when no validation data was given.
        losses: Mean training loss per epoch.
        val_losses: Validation loss per epoch (empty without validation data).
        val_accuracy: Validation accuracy of the kept weights (NaN without).
    """

    seconds: float
    epochs: int
    best_epoch: int
    losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    val_accuracy: float = float("nan")


def class_weights(y: np.ndarray, classes: int = NUM_CLASSES) -> Tensor:
    """Inverse-frequency weights (mean 1 over present classes); absent classes get 0."""
    counts = np.bincount(y, minlength=classes).astype(np.float64)
    weights = np.zeros(classes)
    present = counts > 0
    weights[present] = counts[present].sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def train(
    model: AdaptiveGraphGNN,
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    epochs: int = 12,
    batch_size: int = 128,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    noise: float = 0.0,
    normal_weight: float = 1.0,
    normal_spread: float = 0.0,
    say: Callable[[str], None] | None = None,
) -> TrainReport:
    """Minibatch Adam with class-balanced cross-entropy; keeps the best-validation weights.

    Args:
        model: The model (trained in place, left in eval mode).
        x: ``[n, 52, window]`` scaled training windows.
        y: ``[n]`` classes.
        x_val: Validation windows (segments of the training runs, not test data).
        y_val: Validation classes.
        epochs: Passes over the training windows.
        batch_size: Windows per step.
        lr: Adam learning rate (cosine-decayed to 0 over the run).
        weight_decay: Adam weight decay.
        seed: Seeds the shuffling and dropout.
        noise: Standard deviation of Gaussian noise added to each training batch
            (in scaled units): widens what the model accepts as normal, against
            the drift between the short normal training run and later operation.
        normal_weight: Extra factor on the normal class's (balanced) loss
            weight: above 1 the model needs more evidence to leave "normal",
            trading detection of subtle faults for fewer false alarms.
        say: Progress callback, one line per epoch.

    Returns:
        Losses, timing and the kept epoch.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(y)
    weights = class_weights(y, model.head.out_features)
    weights[0] *= normal_weight
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(yt) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    has_val = x_val is not None and y_val is not None
    report = TrainReport(0.0, epochs, epochs)
    best, best_state = float("inf"), None
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(yt), generator=gen)
        total = 0.0
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            batch = xt[idx]
            if noise > 0:
                batch = batch + noise * torch.randn(batch.shape, generator=gen)
            if normal_spread > 0:
                batch = spread_normal(batch, yt[idx], normal_spread, gen)
            logits, _ = model(batch)
            loss = F.cross_entropy(logits, yt[idx], weight=weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        report.losses.append(total / len(yt))
        line = f"epoch {epoch}/{epochs}: loss {report.losses[-1]:.4f}"
        if has_val:
            assert x_val is not None and y_val is not None
            logits, _ = predict(model, x_val)
            val_loss = float(
                F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y_val), weight=weights)
            )
            report.val_losses.append(val_loss)
            acc = float((logits.argmax(1) == y_val).mean())
            line += f", val loss {val_loss:.4f}, val acc {acc:.3f}"
            if val_loss < best:
                best, report.best_epoch, report.val_accuracy = val_loss, epoch, acc
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if say is not None:
            say(line)
    report.seconds = time.perf_counter() - start
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return report


def spread_normal(x: Tensor, y: Tensor, spread: float, gen: torch.Generator) -> Tensor:
    """Scale each normal window's sensors by factors drawn from ``U(1, 1 + spread)``."""
    factor = 1.0 + spread * torch.rand((x.shape[0], x.shape[1], 1), generator=gen)
    factor = torch.where((y == 0).view(-1, 1, 1), factor, torch.ones_like(factor))
    return x * factor


@torch.no_grad()
def predict(
    model: nn.Module, x: np.ndarray, batch_size: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """``(logits [n, classes], score [n])`` for windows ``x`` in eval mode."""
    was_training = model.training
    model.eval()
    logits, scores = [], []
    for i in range(0, len(x), batch_size):
        lg, sc = model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size], np.float32)))
        logits.append(lg.numpy())
        scores.append(sc.numpy())
    model.train(was_training)
    return np.concatenate(logits), np.concatenate(scores)


def score_threshold(normal_scores: np.ndarray, quantile: float = 1.0) -> float:
    """Alarm threshold: the ``quantile`` of anomaly scores on normal *validation* windows.

    Args:
        normal_scores: Scores of normal(-like) windows the model was not trained
            on (validation segments of the training runs), never test data.
        quantile: Share of those windows that stay at or below the threshold
            (1.0: the highest score any of them reached).
    """
    scores = np.asarray(normal_scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("no normal validation scores to set the threshold on")
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile}")
    return float(np.quantile(scores, quantile, method="higher"))


def alarm_states(
    scores: np.ndarray, threshold: float, consecutive: int = 1, clear_after: int | None = None
) -> np.ndarray:
    """The alarm state after each window, with the node's on- and off-delay.

    An alarm is raised after ``consecutive`` windows in a row score above
    ``threshold`` and cleared after ``clear_after`` in a row at or below it:
    the rule ``edge-node`` applies from the bundle's manifest, so the
    evaluation scores exactly what the node will publish.

    Args:
        scores: ``[n]`` anomaly scores of consecutive windows.
        threshold: Score above which a window counts as abnormal.
        consecutive: Windows in a row that raise the alarm (on-delay).
        clear_after: Windows in a row that clear it (off-delay; None: ``consecutive``).

    Returns:
        ``[n]`` booleans: whether the alarm is active after each window.
    """
    off = consecutive if clear_after is None else clear_after
    if consecutive < 1 or off < 1:
        raise ValueError(f"consecutive and clear_after must be >= 1, got {consecutive}, {off}")
    above = np.asarray(scores) > threshold
    state, run = False, 0
    out = np.zeros(above.shape, dtype=bool)
    for i, a in enumerate(above):
        run = run + 1 if a != state else 0
        if run >= (off if state else consecutive):
            state, run = not state, 0
        out[i] = state
    return out


class RawSensors(nn.Module):
    """The deployed form: raw sensor windows in, the folded model's outputs out.

    The plant's scaler (per-sensor mean and standard deviation of normal
    training data) becomes the first operation of the exported graph, so a
    node feeds the readings exactly as the plant publishes them.

    Args:
        model: A folded model (:meth:`AdaptiveGraphGNN.static`).
        mean: ``[52]`` per-sensor mean.
        std: ``[52]`` per-sensor standard deviation.
    """

    def __init__(self, model: AdaptiveGraphGNN, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        if model.fixed_adjacency is None:
            raise ValueError("fold the adjacency first: pass model.static()")
        self.model = model.eval()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(-1, 1))
        self.register_buffer("inv_std", 1.0 / torch.as_tensor(std, dtype=torch.float32).view(-1, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x [B, 52, window]`` raw readings -> ``(logits, score)``."""
        return self.model((x - self.mean) * self.inv_std)
