"""The SYNTHETIC fraud patterns injected into the stream of ``world.py``.

Four patterns, as issue #19 names them; every transaction one of them makes
is labelled fraud with its pattern code. Their per-transaction and
per-entity counts are shared with legitimate look-alikes (``world.py``); what
gives them away is the company they keep:

- **ring**: 5-15 accounts (most opened days before, some bought old
  accounts) on 1-3 shared devices and IPs, transferring to a mule chain's
  head or a fresh collector that cashes out;
- **mule**: a chain of 2-4 recruited accounts (real people, with ordinary
  history) receiving fan-in from scam victims, rings, takeovers and bursts,
  forwarding most of it within hours down the chain, the last one cashing out;
- **burst**: a victim account driven from an attacker's device sends 12-35
  small transfers within an hour to drop accounts, which pass them on;
- **takeover**: an old account on an attacker's device and IP (both reused
  across victims) pays high-risk merchants larger sums and transfers to a mule.

Incident start times are stratified over the span so that each split gets
its share of every pattern (a seed cannot put all the rings in training).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, field
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


m = _sibling("world")


@dataclass
class Chain:
    """One mule chain; fan-in is collected first, the forwards are written at the end."""

    mules: np.ndarray
    start: float
    incoming: list[tuple[float, float]] = field(default_factory=list)


def starts(w: Any, k: int, margin_days: float = 2.0) -> np.ndarray:
    """``k`` incident start times, one per equal slice of the span (jittered inside it)."""
    hi = w.span - margin_days * m.DAY
    return (np.arange(k) + w.rng.random(k)) / max(k, 1) * hi


def _attacker(w: Any, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Devices and IPs of an attacker: mostly a reused pool, sometimes fresh or behind NAT."""
    rng, x = w.rng, w.extra
    dev = np.where(rng.random(k) < 0.7, rng.choice(x["attacker_devices"], k), w.devices(k))
    r = rng.random(k)
    ip = np.where(
        r < 0.5,
        rng.choice(x["attacker_ips"], k),
        np.where(r < 0.75, rng.choice(x["travel_ips"], k), rng.choice(x["carriers"], k)),
    )
    return dev, ip


def make_chains(w: Any, k: int) -> list[Chain]:
    busy = w.extra["busy"]
    return [
        Chain(mules=w.rng.choice(busy, int(w.rng.integers(2, 5)), replace=False), start=s)
        for s in starts(w, k, margin_days=2.0)
    ]


def _nearest_chain(chains: list[Chain], t: float) -> Chain:
    """The chain most recently opened (chains are in start order): fraud feeds live mules."""
    before = [c for c in chains if c.start <= t + m.DAY]
    return before[-1] if before else chains[0]


def ring(w: Any, rows: Any, t0: float, chains: list[Chain]) -> None:
    rng, x = w.rng, w.extra
    k = int(rng.integers(5, 13))
    sold = rng.random(k) < 0.3
    members = np.where(sold, rng.choice(x["busy"], k), w.accounts(k))
    devs, _ = _attacker(w, int(rng.integers(1, 4)))
    _, ips = _attacker(w, int(rng.integers(1, 4)))
    chain = _nearest_chain(chains, t0)
    collectors = np.concatenate([chain.mules[:1], w.accounts(int(rng.integers(0, 3)))])
    length = rng.uniform(1, 5) * m.DAY
    for i, acc in enumerate(members):
        dev, ip = devs[i % len(devs)], ips[rng.integers(0, len(ips))]
        warm = int(rng.integers(0, 3))
        if warm:
            merch = rng.choice(w.n_merchants, warm, p=x["popularity"])
            rows.add(
                t0 + rng.uniform(0, 0.3, warm) * length,
                acc,
                merchant=merch,
                device=dev,
                ip=ip,
                amount=x["scale"][merch] * rng.lognormal(0, 0.4, warm),
                channel=m.APP,
                pattern=m.RING,
            )
        n = int(rng.integers(2, 5))
        t = t0 + rng.uniform(0.2, 1.0, n) * length
        dst = rng.choice(collectors, n)
        amount = rng.lognormal(np.log(220), 0.7, n)
        rows.add(
            t, acc, dst=dst, device=dev, ip=ip, amount=amount, channel=m.TRANSFER, pattern=m.RING
        )
        for ti, di, ai in zip(t, dst, amount, strict=True):
            if di == chain.mules[0]:
                chain.incoming.append((float(ti), float(ai)))
    for c in collectors[1:]:  # fresh collectors cash out at high-risk merchants
        merch = rng.choice(x["risky"], int(rng.integers(1, 4)))
        rows.add(
            t0 + length + rng.uniform(1, 24, len(merch)) * m.HOUR,
            c,
            merchant=merch,
            device=devs[0],
            ip=ips[0],
            amount=rng.lognormal(np.log(600), 0.5, len(merch)),
            channel=m.WEB,
            pattern=m.RING,
        )


def takeover(w: Any, rows: Any, t0: float, chains: list[Chain]) -> None:
    rng, x = w.rng, w.extra
    victim = int(rng.choice(x["busy"]))
    dev, ip = _attacker(w)
    n = int(rng.integers(2, 7))
    t = t0 + np.sort(rng.uniform(0, rng.uniform(0.5, 10), n)) * m.HOUR
    usual = rng.random(n) < 0.25  # some purchases at the victim's own merchants
    merch = np.where(usual, x["favourites"][victim, 0], rng.choice(x["risky"], n))
    amount = x["scale"][merch] * rng.lognormal(0.6, 0.5, n)
    rows.add(
        t,
        victim,
        merchant=merch,
        device=dev[0],
        ip=ip[0],
        amount=amount,
        channel=rng.choice([m.WEB, m.APP], n),
        pattern=m.TAKEOVER,
    )
    k = int(rng.integers(0, 3))
    if k:
        chain = _nearest_chain(chains, t0)
        tt = t[-1] + rng.uniform(0.1, 2, k) * m.HOUR
        amt = rng.lognormal(np.log(700), 0.6, k)
        rows.add(
            tt,
            victim,
            dst=chain.mules[0],
            device=dev[0],
            ip=ip[0],
            amount=amt,
            channel=m.TRANSFER,
            pattern=m.TAKEOVER,
        )
        chain.incoming.extend(zip(tt.tolist(), amt.tolist(), strict=True))


def burst(w: Any, rows: Any, t0: float, chains: list[Chain], drops: np.ndarray) -> None:
    rng, x = w.rng, w.extra
    src = int(rng.choice(x["busy"])) if rng.random() < 0.7 else int(w.accounts(1)[0])
    dev, ip = _attacker(w)
    n = int(rng.integers(10, 26))
    t = t0 + np.sort(rng.uniform(0, rng.uniform(8, 60), n)) * m.MINUTE
    used = rng.choice(drops, int(rng.integers(3, 9)), replace=False)
    dst = rng.choice(used, n)
    amount = np.clip(rng.lognormal(np.log(9), 0.6, n), 1.0, 60.0)
    rows.add(
        t, src, dst=dst, device=dev[0], ip=ip[0], amount=amount, channel=m.TRANSFER, pattern=m.BURST
    )
    chain = _nearest_chain(chains, t0)
    for d in np.unique(dst):  # each drop passes its takings to a mule within hours
        got = float(amount[dst == d].sum())
        td = t[-1] + rng.uniform(0.5, 12) * m.HOUR
        ddev = x["attacker_devices"][int(d) % len(x["attacker_devices"])]
        rows.add(
            td,
            d,
            dst=chain.mules[0],
            device=ddev,
            ip=rng.choice(x["carriers"]),
            amount=got * 0.95,
            channel=m.TRANSFER,
            pattern=m.BURST,
        )
        chain.incoming.append((float(td), got * 0.95))


def mule_chain(w: Any, rows: Any, chain: Chain) -> None:
    """Scam victims pay the head; each hop forwards most of what came in, within hours."""
    rng, x = w.rng, w.extra
    k = int(rng.integers(2, 6))
    victims = rng.choice(x["busy"], k)
    tv = chain.start + rng.uniform(0, 3, k) * m.DAY
    av = rng.lognormal(np.log(450), 0.6, k)
    rows.add(
        tv,
        victims,
        dst=chain.mules[0],
        device=x["device"][victims],
        ip=x["home_ip"][victims],
        amount=av,
        channel=m.TRANSFER,
        pattern=m.MULE,
    )
    incoming = sorted(chain.incoming + list(zip(tv.tolist(), av.tolist(), strict=True)))
    i = 0
    while i < len(incoming):
        j = min(len(incoming), i + int(rng.integers(2, 7)))
        t, money = incoming[j - 1][0], sum(a for _, a in incoming[i:j])
        i = j
        for hop, mule in enumerate(chain.mules):
            t += rng.uniform(0.3, 6) * m.HOUR
            money *= rng.uniform(0.85, 0.97)
            handler = rng.random() < 0.3
            dev = rng.choice(x["attacker_devices"]) if handler else x["device"][mule]
            ip = x["carrier_of"][mule] if rng.random() < 0.6 else x["home_ip"][mule]
            parts = 1 + int(rng.random() < 0.25)
            tt = t + np.arange(parts) * rng.uniform(1, 20) * m.MINUTE
            if hop + 1 < len(chain.mules):
                rows.add(
                    tt,
                    mule,
                    dst=chain.mules[hop + 1],
                    device=dev,
                    ip=ip,
                    amount=money / parts,
                    channel=m.TRANSFER,
                    pattern=m.MULE,
                )
            else:
                merch = rng.choice(x["risky"], parts)
                rows.add(
                    tt,
                    mule,
                    merchant=merch,
                    device=dev,
                    ip=ip,
                    amount=money / parts,
                    channel=m.WEB,
                    pattern=m.MULE,
                )
