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
    """Devices and IPs of an attacker: mostly a reused pool, sometimes fresh; IPs hide in crowds."""
    rng, x = w.rng, w.extra
    dev = np.where(rng.random(k) < 0.7, rng.choice(x["attacker_devices"], k), w.devices(k))
    r = rng.random(k)
    ip = np.where(
        r < 0.5,
        rng.choice(x["attacker_ips"], k),
        np.where(r < 0.75, rng.choice(x["travel_ips"], k), rng.choice(x["carriers"], k)),
    )
    return dev, ip


def _borrowed(w: Any, acc: int, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """An honest account off its usual device: its new phone, or a family tablet and its wifi.

    A family tablet has the attacker device's counts (2-4 accounts, weeks old)
    but not its company: its other events are the family's routine purchases,
    where an attacker device's are other victims' first-time logins.
    """
    rng, x = w.rng, w.extra
    fresh = rng.random(k) < 0.4
    tablet = rng.choice(x["family_devices"], k)
    dev = np.where(fresh, w.devices(k), tablet)
    r = rng.random(k)
    ip = np.where(
        r < 0.35,
        x["home_ip"][x["device_owner"][tablet]],
        np.where(r < 0.65, rng.choice(x["travel_ips"], k), rng.choice(x["carriers"], k)),
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


def _codes(legit: bool, pattern: int, noise: str) -> dict[str, int]:
    return {"pattern": 0, "noise": m.N[noise]} if legit else {"pattern": pattern, "noise": 0}


def ring(w: Any, rows: Any, t0: float, chains: list[Chain], legit: bool = False) -> None:
    """A device/IP sharing ring, or (``legit``) its twin: a savings club on a shared device.

    Both: 5-12 members, half of them accounts opened for it, on 1-3 shared
    devices, each making warm-up payments then 2-4 transfers to the
    collectors. The ring's devices are the attacker's (other rings and
    takeovers used them) and its first collector is a mule chain's head; the
    club's are a kiosk or the treasurer's phone and its treasurer keeps the money.
    """
    rng, x = w.rng, w.extra
    codes = _codes(legit, m.RING, "savings_club")
    k = int(rng.integers(5, 13))
    members = np.where(rng.random(k) < 0.5, rng.choice(x["busy"], k), w.accounts(k))
    nd = int(rng.integers(1, 4))
    if legit:
        treasurer = int(rng.choice(x["busy"]))
        own = rng.random(nd) < 0.4  # the treasurer's phone, else a club laptop
        devs = np.where(own, x["device"][treasurer], w.devices(nd))
        ips = np.where(rng.random(nd) < 0.5, x["carrier_of"][treasurer], x["home_ip"][treasurer])
        head = treasurer
        chain = None
    else:
        devs, ips = _attacker(w, nd)
        chain = _nearest_chain(chains, t0)
        head = int(chain.mules[0])
    extra = (
        rng.choice(x["busy"], int(rng.integers(0, 3)))
        if legit
        else w.accounts(int(rng.integers(0, 3)))
    )
    collectors = np.concatenate([[head], extra])
    length = rng.uniform(1, 5) * m.DAY
    base = rng.lognormal(np.log(220), 0.7)
    for i, acc in enumerate(members):
        dev, ip = devs[i % nd], ips[rng.integers(0, nd)]
        warm = int(rng.integers(0, 3))
        if warm:
            merch = rng.choice(w.n_merchants, warm, p=x["popularity"])
            rows.add(
                w.daytime(t0 + rng.uniform(0, 0.3, warm) * length),
                acc,
                merchant=merch,
                device=dev,
                ip=ip,
                amount=x["scale"][merch] * rng.lognormal(0, 0.4, warm),
                channel=rng.choice([m.APP, m.POS], warm),
                **codes,
            )
        n = int(rng.integers(2, 5))
        t = w.daytime(t0 + rng.uniform(0.2, 1.0, n) * length)
        dst = rng.choice(collectors, n)
        # A ring moves one scripted sum (near-identical amounts); a club's dues vary.
        amount = base * rng.normal(1, 0.02, n) if not legit else rng.lognormal(np.log(220), 0.7, n)
        rows.add(t, acc, dst=dst, device=dev, ip=ip, amount=amount, channel=m.TRANSFER, **codes)
        if chain is not None:
            chain.incoming.extend(
                (float(a), float(b)) for a, b, d in zip(t, amount, dst, strict=True) if d == head
            )
    if legit:  # the club's long-standing members pay their dues too
        old = rng.choice(x["busy"], int(rng.integers(8, 25)))
        t = w.daytime(t0 + rng.uniform(0, 1.0, len(old)) * length)
        rows.add(
            t,
            old,
            dst=head,
            device=x["device"][old],
            ip=x["carrier_of"][old],
            amount=rng.lognormal(np.log(220), 0.7, len(old)),
            channel=m.TRANSFER,
            **codes,
        )
    for c in collectors[1:]:  # the other collectors spend it on goods
        merch = rng.choice(x["risky"], int(rng.integers(1, 4)))
        rows.add(
            w.daytime(t0 + length + rng.uniform(1, 24, len(merch)) * m.HOUR),
            c,
            merchant=merch,
            device=devs[0],
            ip=ips[0],
            amount=rng.lognormal(np.log(600), 0.5, len(merch)),
            channel=rng.choice([m.WEB, m.POS], len(merch)),
            **codes,
        )


def takeover(w: Any, rows: Any, t0: float, chains: list[Chain], legit: bool = False) -> None:
    """An account takeover, or (``legit``) its twin: an owner shopping off their usual device.

    Both: an old account on a device and IP it never used pays mostly
    high-risk merchants (electronics, gift cards) larger sums within hours,
    and sometimes transfers money. The attacker's device and IP carry other
    victims' events and the money goes to a mule; the owner's new phone,
    friend's phone or kiosk carries honest events and the money goes to a contact.
    """
    rng, x = w.rng, w.extra
    codes = _codes(legit, m.TAKEOVER, "new_device_shopping")
    victim = int(rng.choice(x["busy"]))
    dev, ip = _borrowed(w, victim) if legit else _attacker(w)
    n = int(rng.integers(2, 7))
    t = w.daytime(t0)[0] + np.sort(rng.uniform(0, rng.uniform(0.5, 10), n)) * m.HOUR
    usual = rng.random(n) < 0.25
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
        **codes,
    )
    k = int(rng.integers(0, 3))
    if k:
        chain = None if legit else _nearest_chain(chains, t0)
        dst = x["contacts"][victim, 0] if chain is None else chain.mules[0]
        tt = t[-1] + rng.uniform(0.1, 2, k) * m.HOUR
        amt = rng.lognormal(np.log(700), 0.6, k)
        rows.add(
            tt, victim, dst=dst, device=dev[0], ip=ip[0], amount=amt, channel=m.TRANSFER, **codes
        )
        if chain is not None:
            chain.incoming.extend(zip(tt.tolist(), amt.tolist(), strict=True))


def burst(
    w: Any, rows: Any, t0: float, chains: list[Chain], drops: np.ndarray, legit: bool = False
) -> None:
    """A burst of small transfers, or (``legit``) its twin: settling a group bill.

    Both: one account sends 10-25 small transfers within minutes to 3-8
    recipients (some of them new accounts), who pass most of it on within
    hours. The fraud runs from a victim's account (half the time its own
    device, remote-controlled; else the attacker's) to drop accounts reused
    across bursts that pay a mule; the bill goes to friends who pay a contact.
    """
    rng, x = w.rng, w.extra
    codes = _codes(legit, m.BURST, "split_bill")
    src = int(rng.choice(x["busy"]))
    r = rng.random()
    if r < 0.5:  # its own phone (fraud: remote-controlled)
        dev, ip = x["device"][[src]], x["carrier_of"][[src]]
    else:
        dev, ip = _borrowed(w, src) if legit else _attacker(w)
    n = int(rng.integers(10, 26))
    t = w.daytime(t0)[0] + np.sort(rng.uniform(0, rng.uniform(8, 60), n)) * m.MINUTE
    r = int(rng.integers(3, 9))
    if legit:
        used = np.where(
            rng.random(r) < 0.4, w.accounts(r), x["contacts"][rng.choice(x["busy"], r), 0]
        )
    else:
        used = np.where(rng.random(r) < 0.2, w.accounts(r), rng.choice(drops, r))
    used = np.unique(used[used != src])
    dst = rng.choice(used, n)
    amount = np.clip(rng.lognormal(np.log(9), 0.6, n), 1.0, 60.0)
    rows.add(t, src, dst=dst, device=dev[0], ip=ip[0], amount=amount, channel=m.TRANSFER, **codes)
    chain = None if legit else _nearest_chain(chains, t0)
    for d in np.unique(dst):  # each recipient passes its share on within hours
        got = float(amount[dst == d].sum()) * 0.95
        td = t[-1] + rng.uniform(0.5, 12) * m.HOUR
        to = x["contacts"][int(d) % w.n_base, 1] if chain is None else chain.mules[0]
        ddev = w.devices(1)[0] if d >= w.n_base else x["device"][d]
        rows.add(
            td,
            d,
            dst=to,
            device=ddev,
            ip=rng.choice(x["carriers"]),
            amount=got,
            channel=m.TRANSFER,
            **codes,
        )
        if chain is not None:
            chain.incoming.append((float(td), got))


def mule_chain(w: Any, rows: Any, chain: Chain, legit: bool = False) -> None:
    """A mule chain, or (``legit``) its twin: money relayed through family or a small business.

    Both: 2-5 ordinary accounts pay the head (scam victims; relatives), then
    every hop forwards 85-97 % of what came in, within hours, to the next; the
    last buys goods. A mule head also collects from rings, takeovers and
    bursts (``chain.incoming``), a relay's only from honest accounts.
    """
    rng, x = w.rng, w.extra
    codes = _codes(legit, m.MULE, "relay")
    k = int(rng.integers(4, 13)) if legit else int(rng.integers(2, 6))
    victims = rng.choice(x["busy"], k)
    tv = w.daytime(chain.start + rng.uniform(0, 3, k) * m.DAY)
    av = rng.lognormal(np.log(450), 0.6, k)
    rows.add(
        tv,
        victims,
        dst=chain.mules[0],
        device=x["device"][victims],
        ip=x["home_ip"][victims],
        amount=av,
        channel=m.TRANSFER,
        **codes,
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
            dev = x["device"][mule]
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
                    **codes,
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
                    channel=rng.choice([m.WEB, m.POS], parts),
                    **codes,
                )
