"""The SYNTHETIC world behind ``generate.py``: who exists and how honest people pay.

Split from :mod:`generate` (which owns the public API and the CLI) so that
each behaviour is a short function one can read next to the README's table
(fraud lives in :mod:`patterns`).
Every function appends column chunks to a :class:`Rows`; nothing here sorts,
assigns ids or hides internal ids (``generate`` does that at the end).

The design rule, from issue #19: each fraud pattern has legitimate
look-alikes with the *same* per-transaction and per-entity counts (many
accounts on one device or IP, fan-in then fan-out, bursts of small
transfers, a new device paying an unusual merchant). What differs is who the
neighbours are: the other accounts on a ring's device are days old and pay
the same collector; a mule's incoming transfers come from ring, takeover and
burst events; an attacker's device and IP carry other victims' events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

DAY = 86400.0
HOUR = 3600.0
MINUTE = 60.0
#: Column codes shared with generate.py (PATTERNS / NOISE / CHANNELS index these).
WEB, APP, POS, TRANSFER = 0, 1, 2, 3
NONE, RING, MULE, BURST, TAKEOVER = 0, 1, 2, 3, 4
NOISE_CODES = (
    "none",
    "family_device",
    "nat_ip",
    "kiosk",
    "payroll",
    "rent",
    "gig_payout",
    "micro_burst",
    "flatshare",
    "new_phone",
    "travel",
    "new_account",
    "savings_club",
    "relay",
    "split_bill",
    "new_device_shopping",
)
N = {name: code for code, name in enumerate(NOISE_CODES)}
COLUMNS = ("t", "src", "dst", "merchant", "device", "ip", "amount", "channel", "pattern", "noise")


class Rows:
    """Column chunks appended by the behaviours; scalars broadcast to the chunk's length."""

    def __init__(self) -> None:
        self.chunks: list[dict[str, np.ndarray]] = []

    def add(self, t: Any, src: Any, **cols: Any) -> None:
        times = np.atleast_1d(np.asarray(t, dtype=np.float64))
        n = len(times)
        if n == 0:
            return
        values = {"dst": -1, "merchant": -1, "pattern": NONE, "noise": 0, **cols}
        chunk = {"t": times, "src": np.broadcast_to(np.asarray(src), (n,))}
        for name in COLUMNS[2:]:
            chunk[name] = np.broadcast_to(np.asarray(values[name]), (n,))
        self.chunks.append(chunk)

    def columns(self) -> dict[str, np.ndarray]:
        return {c: np.concatenate([ch[c] for ch in self.chunks]) for c in COLUMNS}


@dataclass
class World:
    """Accounts, devices, IPs and merchants; ids are allocated here, hidden later."""

    rng: np.random.Generator
    span: float
    n_base: int
    n_merchants: int
    next_account: int = 0
    next_device: int = 0
    next_ip: int = 0
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def accounts(self, k: int) -> np.ndarray:
        out = np.arange(self.next_account, self.next_account + k)
        self.next_account += k
        return out

    def devices(self, k: int) -> np.ndarray:
        out = np.arange(self.next_device, self.next_device + k)
        self.next_device += k
        return out

    def ips(self, k: int) -> np.ndarray:
        out = np.arange(self.next_ip, self.next_ip + k)
        self.next_ip += k
        return out

    def pick(self, pool: np.ndarray, k: int | None = None) -> Any:
        return self.rng.choice(pool, size=k, replace=k is not None and k > len(pool))

    def daytime(self, t: Any) -> np.ndarray:
        """``t`` moved to a daytime hour of its own day (fraudsters keep office hours too)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        return np.floor(t / DAY) * DAY + self.diurnal_hours(len(t)) * HOUR

    def diurnal_hours(self, n: int) -> np.ndarray:
        """People pay in the day and the evening: a mixture peaking at 12 h and 19 h."""
        rng = self.rng
        hours = np.where(rng.random(n) < 0.6, rng.normal(12.5, 3.0, n), rng.normal(19.5, 2.0, n))
        return np.mod(hours, 24.0)


def build_world(rng: np.random.Generator, accounts: int, days: float) -> World:
    """Base accounts with homes, phones, families, flats, contacts and favourite merchants."""
    w = World(rng=rng, span=days * DAY, n_base=accounts, n_merchants=max(40, accounts // 15))
    a = w.accounts(accounts)
    m = w.n_merchants
    # 7 % of accounts are opened during the stream; the rest are years old.
    created = -rng.uniform(30, 1500, accounts) * DAY
    fresh = rng.random(accounts) < 0.07
    created[fresh] = rng.uniform(0, 0.9, fresh.sum()) * w.span
    device = w.devices(accounts)
    second = np.where(rng.random(accounts) < 0.3, w.devices(accounts), -1)
    home_ip = w.ips(accounts)
    carriers = w.ips(max(4, accounts // 150))  # mobile carrier NAT: ~150 accounts behind each
    carrier_of = rng.choice(carriers, accounts)
    # Families: 2-4 accounts on one tablet/laptop and one home line.
    order = rng.permutation(a)
    pos = 0
    family = np.zeros(accounts, bool)
    for _ in range(int(accounts * 0.08 / 3)):
        k = int(rng.integers(2, 5))
        members = order[pos : pos + k]
        pos += k
        device[members] = device[members[0]]
        home_ip[members] = home_ip[members[0]]
        family[members] = True
    # Flat shares: 2-5 flatmates behind one home IP; one collects the rent.
    flats = []
    for _ in range(max(2, accounts // 60)):
        k = int(rng.integers(3, 6))
        members = order[pos : pos + k]
        pos += k
        home_ip[members] = home_ip[members[0]]
        flats.append(members)
    contacts = rng.choice(a, (accounts, 4))
    popularity = rng.zipf(1.6, m).astype(float)
    popularity = np.minimum(popularity, 200) / np.minimum(popularity, 200).sum()
    favourites = rng.choice(m, (accounts, 5), p=popularity)
    scale = np.exp(rng.normal(3.2, 0.8, m))  # typical basket per merchant
    risky = rng.choice(m, max(6, m // 12), replace=False)  # electronics, gift cards, crypto
    scale[risky] = np.exp(rng.normal(4.6, 0.4, len(risky)))
    micro = rng.choice(np.setdiff1d(np.arange(m), risky), max(3, m // 30), replace=False)
    scale[micro] = rng.uniform(1.0, 4.0, len(micro))  # transit, games: micro-payments
    w.extra.update(
        created=created,
        device=device,
        second=second,
        home_ip=home_ip,
        carriers=carriers,
        carrier_of=carrier_of,
        family=family,
        contacts=contacts,
        popularity=popularity,
        favourites=favourites,
        scale=scale,
        risky=risky,
        micro=micro,
        merchant_ip=w.ips(m),
        travel_ips=w.ips(max(4, accounts // 300)),  # hotels, VPN exits: shared with attackers
        attacker_devices=w.devices(max(4, accounts // 250)),
        kiosk_devices=w.devices(max(3, accounts // 150)),
        kiosk_ips=w.ips(max(3, accounts // 150)),
        attacker_ips=w.ips(max(3, accounts // 500)),
        flats=np.array(flats, dtype=object),
    )
    w.extra["family_devices"] = np.unique(device[family])
    owner = np.zeros(w.next_device, np.int64)
    owner[device] = a  # a device's (last listed) account, for its home IP
    w.extra["device_owner"] = owner
    w.extra["busy"] = np.setdiff1d(a, np.concatenate(flats))  # employers, landlords, victims
    return w


def _payment_amount(w: World, merchant: np.ndarray, sigma: float = 0.5) -> np.ndarray:
    return w.extra["scale"][merchant] * w.rng.lognormal(0.0, sigma, len(merchant))


def background(w: World, rows: Rows, rate: float) -> None:
    """Everyday payments and transfers of every base account (vectorised)."""
    rng, x = w.rng, w.extra
    n_acc = w.n_base
    per_day = rng.lognormal(np.log(rate) - 0.32, 0.8, n_acc)
    start = np.maximum(x["created"], 0.0)
    n = rng.poisson(per_day * (w.span - start) / DAY)
    acc = np.repeat(np.arange(n_acc), n)
    total = len(acc)
    day = np.floor((start[acc] + rng.random(total) * (w.span - start[acc])) / DAY)
    t = np.clip(day * DAY + w.diurnal_hours(total) * HOUR, start[acc], w.span - 1.0)
    transfer = rng.random(total) < rng.beta(2, 12, n_acc)[acc]
    fav = rng.random(total) < 0.85
    merchant = np.where(
        fav,
        x["favourites"][acc, rng.integers(0, 5, total)],
        rng.choice(w.n_merchants, total, p=x["popularity"]),
    )
    channel = rng.choice([POS, APP, WEB], total, p=[0.3, 0.45, 0.25])
    channel[transfer] = TRANSFER
    merchant[transfer] = -1
    dst = np.where(transfer, x["contacts"][acc, rng.integers(0, 4, total)], -1)
    dst[dst == acc] = (acc[dst == acc] + 1) % n_acc
    device = x["device"][acc].copy()
    use_second = (x["second"][acc] >= 0) & (rng.random(total) < 0.3)
    device[use_second] = x["second"][acc][use_second]
    mobile = (channel == APP) | ((channel == TRANSFER) & (rng.random(total) < 0.6))
    ip = np.where(mobile & (rng.random(total) < 0.5), x["carrier_of"][acc], x["home_ip"][acc])
    ip[channel == POS] = x["merchant_ip"][merchant[channel == POS]]
    amount = np.where(
        transfer, rng.lognormal(np.log(40), 1.0, total), _payment_amount(w, np.maximum(merchant, 0))
    )
    noise = np.zeros(total, np.int8)
    noise[np.isin(ip, x["carriers"])] = N["nat_ip"]
    noise[x["family"][acc] & (device == x["device"][acc])] = N["family_device"]
    noise[(x["created"][acc] > 0) & (t - x["created"][acc] < 7 * DAY)] = N["new_account"]
    # New phones: from a random moment on, the account's usual device is a new one.
    switch = np.where(rng.random(n_acc) < 0.12, rng.uniform(0, w.span, n_acc), np.inf)
    new_dev = w.devices(n_acc)
    after = (t >= switch[acc]) & ~use_second & ~x["family"][acc]
    device[after] = new_dev[acc[after]]
    noise[after & (t - switch[acc] < 3 * DAY)] = N["new_phone"]
    # Travel: a few days on hotel / VPN IPs, paying merchants new to them, more than usual.
    away = rng.random(n_acc) < 0.05
    leave = rng.uniform(0, w.span, n_acc)
    back = leave + rng.uniform(2, 7, n_acc) * DAY
    trip = away[acc] & (t >= leave[acc]) & (t < back[acc])
    hotel = rng.choice(x["travel_ips"], n_acc)
    ip[trip] = hotel[acc[trip]]
    odd = trip & ~transfer & (rng.random(total) < 0.5)
    merchant[odd] = np.where(
        rng.random(odd.sum()) < 0.4,
        rng.choice(x["risky"], odd.sum()),
        rng.choice(w.n_merchants, odd.sum()),
    )
    amount[odd] = _payment_amount(w, merchant[odd]) * rng.uniform(1.0, 2.5, odd.sum())
    laptop = away & (rng.random(n_acc) < 0.4)  # some travel with a newly bought laptop
    new_laptop = w.devices(n_acc)
    device[trip & laptop[acc]] = new_laptop[acc[trip & laptop[acc]]]
    noise[trip] = N["travel"]
    rows.add(
        t,
        acc,
        dst=dst,
        merchant=merchant,
        device=device,
        ip=ip,
        amount=amount,
        channel=channel,
        noise=noise,
    )


def lookalikes(w: World, rows: Rows) -> None:
    """Legitimate behaviour with the counts of fraud: kiosks, payroll, gig payouts, flats."""
    rng, x = w.rng, w.extra
    days = w.span / DAY
    busy = x["busy"]
    # Kiosks and internet cafes: dozens of accounts on one device and IP.
    for dev, ip in zip(x["kiosk_devices"], x["kiosk_ips"], strict=True):
        pool = rng.choice(w.n_base, int(rng.integers(15, 60)))
        host = rng.choice(w.n_merchants, p=x["popularity"])
        n = rng.poisson(rng.uniform(4, 12) * days)
        t = np.sort(rng.uniform(0, days, n).astype(int) * DAY + w.diurnal_hours(n) * HOUR)
        acc = rng.choice(pool, n)
        transfer = rng.random(n) < 0.15
        merchant = np.where(rng.random(n) < 0.5, host, x["favourites"][acc, rng.integers(0, 5, n)])
        amount = np.where(transfer, rng.lognormal(np.log(40), 0.9, n), _payment_amount(w, merchant))
        dst = np.where(transfer, x["contacts"][acc, 0], -1)
        rows.add(
            t,
            acc,
            dst=dst,
            merchant=np.where(transfer, -1, merchant),
            device=dev,
            ip=ip,
            amount=amount,
            channel=np.where(transfer, TRANSFER, WEB),
            noise=N["kiosk"],
        )
    # Payroll: an employer pays 15-80 staff within minutes; some pay rent within a day.
    landlords = rng.choice(busy, max(3, w.n_base // 200))
    for employer in rng.choice(busy, max(2, w.n_base // 400), replace=False):
        staff = rng.choice(w.n_base, int(rng.integers(15, 80)), replace=False)
        salary = rng.lognormal(np.log(1800), 0.4, len(staff))
        period = 14.0 if rng.random() < 0.5 else 30.0
        for payday in np.arange(rng.uniform(0, period), days, period):
            t0 = int(payday) * DAY + rng.uniform(8, 11) * HOUR
            t = t0 + np.sort(rng.uniform(0, rng.uniform(10, 45), len(staff))) * MINUTE
            rows.add(
                t,
                employer,
                dst=staff,
                device=x["device"][employer],
                ip=x["home_ip"][employer],
                amount=salary * rng.normal(1, 0.02, len(staff)),
                channel=TRANSFER,
                noise=N["payroll"],
            )
            payers = staff[rng.random(len(staff)) < 0.35]
            rt = t0 + rng.uniform(1, 36, len(payers)) * HOUR
            rows.add(
                rt,
                payers,
                dst=rng.choice(landlords, len(payers)),
                device=x["device"][payers],
                ip=x["home_ip"][payers],
                amount=rng.lognormal(np.log(750), 0.3, len(payers)),
                channel=TRANSFER,
                noise=N["rent"],
            )
    # Gig platforms: daily payouts of small sums to 10-40 workers within minutes.
    for platform in rng.choice(busy, max(2, w.n_base // 1500), replace=False):
        workers = rng.choice(w.n_base, int(rng.integers(60, 150)), replace=False)
        for day in range(int(days)):
            paid = rng.choice(workers, int(rng.integers(10, 40)), replace=False)
            t = day * DAY + rng.uniform(17, 22) * HOUR
            t = t + np.sort(rng.uniform(0, rng.uniform(5, 40), len(paid))) * MINUTE
            rows.add(
                t,
                platform,
                dst=paid,
                device=x["device"][platform],
                ip=x["home_ip"][platform],
                amount=rng.lognormal(np.log(12), 0.6, len(paid)),
                channel=TRANSFER,
                noise=N["gig_payout"],
            )
    # Micro-payment bursts: 8-25 small payments to a transit or game merchant in an hour.
    for _ in range(int(w.n_base * days / 600)):
        acc = int(rng.integers(0, w.n_base))
        k = int(rng.integers(8, 26))
        t0 = rng.uniform(0, w.span - HOUR)
        m = rng.choice(x["micro"])
        rows.add(
            t0 + np.sort(rng.uniform(0, 60, k)) * MINUTE,
            acc,
            merchant=m,
            device=x["device"][acc],
            ip=x["carrier_of"][acc],
            amount=x["scale"][m] * rng.lognormal(0, 0.3, k),
            channel=APP,
            noise=N["micro_burst"],
        )
    # Flat shares: monthly, flatmates pay one of them, who pays the landlord within a day.
    for members in x["flats"]:
        collector, mates = members[0], members[1:]
        for due in np.arange(rng.uniform(0, 30), days, 30.0):
            t0 = int(due) * DAY + rng.uniform(9, 20) * HOUR
            t = t0 + rng.uniform(0, 8, len(mates)) * HOUR
            share = rng.lognormal(np.log(550), 0.2)
            rows.add(
                t,
                mates,
                dst=collector,
                device=x["device"][mates],
                ip=x["home_ip"][mates],
                amount=share * rng.normal(1, 0.03, len(mates)),
                channel=TRANSFER,
                noise=N["flatshare"],
            )
            rows.add(
                t.max() + rng.uniform(0.5, 24) * HOUR,
                collector,
                dst=rng.choice(landlords),
                device=x["device"][collector],
                ip=x["home_ip"][collector],
                amount=share * len(members),
                channel=TRANSFER,
                noise=N["flatshare"],
            )
