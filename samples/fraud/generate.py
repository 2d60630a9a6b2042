"""A seeded SYNTHETIC transaction stream with labelled fraud patterns (issue #19).

No public fraud graph can be fetched here, so the fraud sample scores this
stream: accounts pay merchants and each other from devices and IPs; four
fraud patterns (device/IP sharing rings, mule chains, bursts of small
transfers, account takeover) are injected among legitimate look-alikes
(family devices, NATed IPs, kiosks, payroll, gig payouts, flat shares,
micro-payments, new phones, travel). ``README.md`` ("Data") states what is
generated, the parameters, the measured prevalence and the limits.

**SYNTHETIC**: numbers measured on it say nothing about real fraud.

The world and the legitimate behaviour are in ``world.py``, the fraud in
``patterns.py``; this module owns the public API (:class:`Transactions`,
:func:`generate`, :func:`split`, :func:`save`, :func:`load`) and the CLI::

    python samples/fraud/generate.py --out out/fraud/transactions.npz --seed 0
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np


def _sibling(name: str) -> Any:
    """``samples/fraud/<name>.py`` under its private name (samples are not packages)."""
    key = f"_edge_sdk_sample_fraud_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, Path(__file__).parent / f"{name}.py")
        assert spec is not None and spec.loader is not None
        sys.modules[key] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[key])
    return sys.modules[key]


_world = _sibling("world")
_patterns = _sibling("patterns")

PATTERNS = ("none", "ring", "mule", "burst", "takeover")
NOISE: tuple[str, ...] = _world.NOISE_CODES
CHANNELS = ("web", "app", "pos", "transfer")
SYNTHETIC_NOTE = (
    "SYNTHETIC data: a seeded generator's transactions (samples/fraud/generate.py), "
    "not real payments; results on it say nothing about real fraud"
)
#: Default fraud incidents per 4,000 accounts x 30 days (scaled with accounts x days).
INCIDENTS = {"ring": 12, "mule": 11, "burst": 16, "takeover": 72}
#: Legitimate twins per fraud incident: same code, same counts, honest neighbours.
TWINS = 2
#: Relay chains (the mule twin) per mule chain: enough to fill a 1 % false-positive budget.
RELAYS = 8
_ENTITY_PREFIX = {"src": "a", "dst": "a", "merchant": "m", "device": "d", "ip": "i"}


@dataclass(frozen=True)
class Transactions:
    """One row per transaction, sorted by ``t``; ``id`` is 0..n-1 in time order.

    ``dst`` is -1 for a merchant payment and ``merchant`` -1 for a transfer.
    ``label`` 1 is fraud, with its ``pattern`` code (into :data:`PATTERNS`);
    legitimate rows made by a look-alike behaviour carry its ``noise`` code
    (into :data:`NOISE`) so evaluations can report false alarms per look-alike.
    """

    id: np.ndarray
    t: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    merchant: np.ndarray
    device: np.ndarray
    ip: np.ndarray
    amount: np.ndarray
    channel: np.ndarray
    label: np.ndarray
    pattern: np.ndarray
    noise: np.ndarray

    def __len__(self) -> int:
        return len(self.id)

    def take(self, rows: Any) -> Transactions:
        """The rows ``rows`` (mask, indices or slice) with their original ids."""
        return Transactions(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def events(self, rows: Any = None) -> Iterator[dict[str, Any]]:
        """The wire form (contract §2): one JSON-ready dict per transaction, in time order."""
        index = np.arange(len(self))[rows] if rows is not None else np.arange(len(self))
        cols = {
            name: getattr(self, name)[index].tolist()
            for name in ("id", "t", "src", "dst", "merchant", "device", "ip", "amount", "channel")
        }
        for i in range(len(index)):
            event: dict[str, Any] = {"id": f"tx{cols['id'][i]}", "t": cols["t"][i]}
            for name, prefix in _ENTITY_PREFIX.items():
                value = cols[name][i]
                event[name] = None if value < 0 else f"{prefix}{value}"
            event["amount"] = round(cols["amount"][i], 2)
            event["channel"] = CHANNELS[cols["channel"][i]]
            yield event


_DTYPES = {
    "id": np.int64,
    "t": np.float64,
    "src": np.int64,
    "dst": np.int64,
    "merchant": np.int64,
    "device": np.int64,
    "ip": np.int64,
    "amount": np.float32,
    "channel": np.int8,
    "label": np.int8,
    "pattern": np.int8,
    "noise": np.int8,
}


def _scaled(count: int, scale: float, least: int) -> int:
    return max(least, round(count * scale))


def generate(
    seed: int = 0,
    *,
    accounts: int = 4000,
    days: float = 30.0,
    rate: float = 1.0,
    incidents: dict[str, int] | None = None,
) -> Transactions:
    """The stream for ``seed``: ``accounts`` base accounts over ``days`` days.

    ``rate`` is the mean number of everyday transactions per account per day;
    ``incidents`` overrides :data:`INCIDENTS` (counts for 4,000 accounts x 30
    days, scaled with the size; at least two of each pattern).
    """
    if accounts < 100 or days < 2 or rate <= 0:
        raise ValueError(
            f"need accounts >= 100, days >= 2, rate > 0; got {accounts}, {days}, {rate}"
        )
    rng = np.random.default_rng(seed)
    world = _world.build_world(rng, accounts, days)
    rows = _world.Rows()
    _world.background(world, rows, rate)
    _world.lookalikes(world, rows)
    scale = accounts * days / (4000 * 30)
    want = {**INCIDENTS, **(incidents or {})}
    p = _patterns
    chains = p.make_chains(world, _scaled(want["mule"], scale, 2))
    drops = world.accounts(max(10, accounts // 100))
    for legit, times in ((False, 1), (True, TWINS)):
        for t0 in p.starts(world, _scaled(want["ring"] * times, scale, 2), margin_days=1.5):
            p.ring(world, rows, t0, chains, legit=legit)
        for t0 in p.starts(world, _scaled(want["takeover"] * times, scale, 3), margin_days=0.5):
            p.takeover(world, rows, t0, chains, legit=legit)
        for t0 in p.starts(world, _scaled(want["burst"] * times, scale, 2), margin_days=0.5):
            p.burst(world, rows, t0, chains, drops, legit=legit)
    for chain in chains:
        p.mule_chain(world, rows, chain)
    for relay in p.make_chains(world, _scaled(want["mule"] * RELAYS, scale, 2)):
        p.mule_chain(world, rows, relay, legit=True)
    return _assemble(world, rows.columns(), rng)


def _assemble(world: Any, cols: dict[str, np.ndarray], rng: np.random.Generator) -> Transactions:
    """Drop rows outside the span, hide the allocation order of ids, sort by time."""
    keep = (cols["t"] >= 0) & (cols["t"] < world.span)
    cols = {k: v[keep] for k, v in cols.items()}
    # Ids are allocated by kind (fraud accounts last); a permutation hides that.
    for names, total in (
        (("src", "dst"), world.next_account),
        (("device",), world.next_device),
        (("ip",), world.next_ip),
    ):
        perm = rng.permutation(total)
        for name in names:
            cols[name] = np.where(cols[name] >= 0, perm[np.maximum(cols[name], 0)], -1)
    order = np.argsort(cols["t"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    cols["amount"] = np.maximum(np.round(cols["amount"], 2), 0.01)
    cols["id"] = np.arange(len(order))
    cols["label"] = (cols["pattern"] > 0).astype(np.int8)
    cols["noise"] = np.where(cols["label"] > 0, 0, cols["noise"])
    return Transactions(**{k: np.ascontiguousarray(cols[k], dtype=d) for k, d in _DTYPES.items()})


def split(
    tx: Transactions, fractions: Sequence[float] = (0.6, 0.2, 0.2)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks train / validation / test by time: consecutive slices of the span.

    Slices of the *time span*, not of the row count, so no transaction of a
    later split happens before one of an earlier split (no future leakage).
    """
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three positive numbers summing to 1, got {fractions}")
    if len(tx) == 0:
        raise ValueError("no transactions to split")
    t0, t1 = float(tx.t[0]), float(tx.t[-1])
    b1 = t0 + fractions[0] * (t1 - t0)
    b2 = t0 + (fractions[0] + fractions[1]) * (t1 - t0)
    return tx.t < b1, (tx.t >= b1) & (tx.t < b2), tx.t >= b2


def save(tx: Transactions, path: str | Path) -> Path:
    """``path`` (.npz) with every column and the SYNTHETIC note."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {f.name: getattr(tx, f.name) for f in fields(tx)}
    with path.open("wb") as fh:
        np.savez_compressed(fh, synthetic=np.array(SYNTHETIC_NOTE), **arrays)
    return path


def load(path: str | Path) -> Transactions:
    """What :func:`save` wrote; a file missing a column is refused with its name."""
    with np.load(Path(path), allow_pickle=False) as data:
        missing = [name for name in _DTYPES if name not in data.files]
        if missing:
            raise ValueError(f"{path} is not a fraud transactions file: missing {missing}")
        return Transactions(**{k: data[k].astype(d, copy=False) for k, d in _DTYPES.items()})


def prevalence(
    tx: Transactions, fractions: Sequence[float] = (0.6, 0.2, 0.2)
) -> list[dict[str, Any]]:
    """Per split: transactions, fraud rate and the fraud count of every pattern."""
    out = []
    for name, mask in zip(
        ("train", "val", "test", "all"), (*split(tx, fractions), None), strict=True
    ):
        sel = np.ones(len(tx), bool) if mask is None else mask
        row: dict[str, Any] = {"split": name, "n": int(sel.sum())}
        row["fraud"] = int(tx.label[sel].sum())
        row["rate"] = row["fraud"] / max(row["n"], 1)
        for code, pattern in enumerate(PATTERNS[1:], start=1):
            row[pattern] = int((tx.pattern[sel] == code).sum())
        out.append(row)
    return out


def prevalence_markdown(tx: Transactions) -> str:
    """:func:`prevalence` as a Markdown table (the README's table is this output)."""
    head = ["split", "transactions", "fraud", "fraud %", *PATTERNS[1:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in prevalence(tx):
        cells = [r["split"], f"{r['n']:,}", f"{r['fraud']:,}", f"{100 * r['rate']:.2f}"]
        lines.append("| " + " | ".join(cells + [str(r[p]) for p in PATTERNS[1:]]) + " |")
    return "\n".join(lines)


def noise_markdown(tx: Transactions) -> str:
    """Legitimate look-alike rows per noise code (all labelled 0)."""
    lines = ["| look-alike (noise) | transactions |", "|---|---|"]
    for code, name in enumerate(NOISE[1:], start=1):
        lines.append(f"| {name} | {int((tx.noise == code).sum()):,} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SYNTHETIC fraud transaction stream (issue #19).")
    parser.add_argument("--out", type=Path, required=True, help="output .npz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accounts", type=int, default=4000)
    parser.add_argument("--days", type=float, default=30.0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    tx = generate(args.seed, accounts=args.accounts, days=args.days)
    took = time.perf_counter() - start
    save(tx, args.out)
    print(SYNTHETIC_NOTE)
    print(
        f"SYNTHETIC: {len(tx):,} transactions, {int(tx.label.sum()):,} fraud, "
        f"{len(np.unique(np.concatenate([tx.src, tx.dst[tx.dst >= 0]]))):,} accounts, "
        f"{len(np.unique(tx.device)):,} devices, {len(np.unique(tx.ip)):,} IPs, "
        f"{args.days:g} days, seed {args.seed}; generated in {took:.2f} s -> {args.out}"
    )
    print()
    print(prevalence_markdown(tx))
    print()
    print(noise_markdown(tx))
    return 0


if __name__ == "__main__":
    sys.exit(main())
