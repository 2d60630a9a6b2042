"""The HTTP server under hostile clients: slow trickles, smuggling-style framing, short bodies.

Real server, real sensor bundle, real sockets on loopback. Deadlines are set
short (1-2 s) so every test is bounded; the numbers asserted are outcomes
(status codes, counts, fractions), with time bounds only as generous limits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import selectors
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from http_helpers import Client

pytestmark = pytest.mark.requires_backend("onnxruntime")

SENSOR = "tep-sensor-gcn"
INFER = f"/v2/models/{SENSOR}/infer"


def window_body(seed: int) -> bytes:
    x = np.random.default_rng(seed).standard_normal((1, 52, 20), dtype=np.float32)
    doc = {
        "inputs": [
            {"name": "x", "shape": [1, 52, 20], "datatype": "FP32", "data": x.ravel().tolist()}
        ]
    }
    return json.dumps(doc).encode()


def exchange(port: int, data: bytes, *, half_close: bool = False, timeout: float = 15) -> bytes:
    """Send raw bytes (optionally half-close), return all the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def statuses(answer: bytes) -> list[int]:
    """Status codes of every response in a raw answer (a smuggled request would add one)."""
    return [int(line.split()[1]) for line in answer.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]


def error_of(answer: bytes) -> str:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Connection: close" in head, head
    return str(json.loads(body)["error"])


# -- framing (RFC 9112 section 6.3) ----------------------------------------------------------


SMUGGLED = b"GET /v2 HTTP/1.1\r\nHost: x\r\n\r\n"
#: A body whose tail is a second request: a server that framed it differently would answer it.
BODY = b"{}   " + SMUGGLED
L = len(BODY)


@pytest.mark.parametrize(
    ("headers", "status", "words"),
    [
        pytest.param(
            ["Content-Length: 5", f"Content-Length: {L}"],
            400,
            ["2 Content-Length"],
            id="two-different",
        ),
        pytest.param(
            [f"Content-Length: {L}", f"Content-Length: {L}"],
            400,
            ["2 Content-Length"],
            id="two-equal",
        ),
        pytest.param(
            [f"Content-Length: {L}, {L}"], 400, ["invalid Content-Length"], id="comma-list"
        ),
        pytest.param([f"Content-Length: +{L}"], 400, ["invalid Content-Length"], id="plus-sign"),
        pytest.param(["Content-Length: -1"], 400, ["invalid Content-Length"], id="negative"),
        pytest.param(
            [f"Content-Length: {L // 10}_{L % 10}"],
            400,
            ["invalid Content-Length"],
            id="underscore",
        ),
        pytest.param([f"Content-Length: {L:#x}"], 400, ["invalid Content-Length"], id="hex"),
        pytest.param(
            [f"Content-Length: {L}", "Transfer-Encoding: chunked"],
            400,
            ["Transfer-Encoding"],
            id="cl-and-te",
        ),
        pytest.param(
            ["Transfer-Encoding: chunked", f"Content-Length: {L}"],
            400,
            ["Transfer-Encoding"],
            id="te-and-cl",
        ),
        pytest.param(["Transfer-Encoding: gzip, chunked"], 411, ["Content-Length"], id="te-only"),
        pytest.param([f"Content-Length : {L}"], 400, ["malformed header"], id="space-before-colon"),
        pytest.param(["X-A: b", f" Content-Length: {L}"], 400, ["malformed header"], id="folded"),
        pytest.param(
            ["Content-Length: " + "9" * 5000], 413, ["exceeds the limit"], id="5000-digits"
        ),
    ],
)
def test_ambiguous_framing_is_refused_and_nothing_is_smuggled(
    sensor_runtime: Any,
    serve: Callable[..., Any],
    headers: list[str],
    status: int,
    words: list[str],
) -> None:
    s = serve(sensor_runtime)
    # Framing is checked on every route (a GET's unread body would be the next request);
    # an oversized length only where a body is read.
    routes = [("POST", INFER)] + ([("GET", "/v2")] if status != 413 else [])
    for method, path in routes:
        head = f"{method} {path} HTTP/1.1\r\nHost: x\r\n" + "".join(h + "\r\n" for h in headers)
        answer = exchange(s.port, head.encode() + b"\r\n" + BODY)
        assert statuses(answer) == [status], answer[:300]
        message = error_of(answer)
        assert all(w in message for w in words), message


def test_expect_100_with_conflicting_lengths_gets_400_not_continue(
    sensor_runtime: Any, serve: Callable[..., Any]
) -> None:
    s = serve(sensor_runtime)
    head = (
        f"POST {INFER} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
        "Content-Length: 10\r\nContent-Length: 20\r\n\r\n"
    )
    answer = exchange(s.port, head.encode())
    assert statuses(answer) == [400] and b"100 Continue" not in answer
    assert "2 Content-Length" in error_of(answer)


# -- short bodies and slow requests -----------------------------------------------------------


def test_short_body_is_408_at_the_deadline_or_400_on_close_never_500(
    sensor_runtime: Any, serve: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    s = serve(sensor_runtime, request_timeout_s=1.0)
    body = window_body(1)
    head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    with caplog.at_level(logging.WARNING, logger="edge_sdk.serving"):
        started = time.monotonic()
        stalled = exchange(s.port, head + body[:100])  # then silence, connection left open
        waited = time.monotonic() - started
        closed = exchange(s.port, head + body[:100], half_close=True)
    assert statuses(stalled) == [408]
    assert f"received 100 of {len(body)} body bytes" in error_of(stalled)
    assert waited >= 1.0  # never before the deadline
    assert statuses(closed) == [400]
    assert f"body ended after 100 of {len(body)} bytes" in error_of(closed)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    # And the server still answers whole requests.
    c = Client(s.port)
    assert c.post(INFER, body).status == 200
    c.close()


def test_trickled_headers_get_408_and_a_silent_connection_is_closed(
    sensor_runtime: Any, serve: Callable[..., Any]
) -> None:
    s = serve(sensor_runtime, request_timeout_s=1.0)
    request = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nX-Pad: {'a' * 200}\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", s.port), timeout=15) as sock:
        started = time.monotonic()
        answer = b""
        for i in range(len(request)):  # one byte every 50 ms: each read is "not idle"
            try:
                sock.sendall(request[i : i + 1])
            except OSError:
                break
            time.sleep(0.05)
            if time.monotonic() - started > 10:
                break
        sock.settimeout(15)
        while chunk := sock.recv(65536):
            answer += chunk
    assert statuses(answer) == [408]
    assert "within 1 s" in error_of(answer)
    # A connection that never sends a byte is closed quietly after the deadline.
    with socket.create_connection(("127.0.0.1", s.port), timeout=15) as sock:
        assert sock.recv(1024) == b""


# -- 200 slow clients against 128 slots ---------------------------------------------------------


@dataclass
class _Attacker:
    """One trickling connection: sends its prefix, then a byte per tick, never all of it."""

    sock: socket.socket
    payload: bytes
    prefix: int
    opened: float
    sent: int = 0
    answer: bytes = b""

    def tick(self) -> None:
        end = self.prefix if self.sent < self.prefix else self.sent + 1
        # Not connected yet, or closed by the server: the read side reports that.
        with contextlib.suppress(OSError):
            self.sent += self.sock.send(self.payload[self.sent : end])


@dataclass
class _AttackLog:
    closes: Counter[str] = field(default_factory=Counter)
    lifetimes: list[float] = field(default_factory=list)
    connections: int = 0


def _trickle(port: int, n: int, stop: threading.Event, log: _AttackLog, tick: float = 0.2) -> None:
    """Keep ``n`` connections trickling one byte per ``tick`` each; reopen each one closed."""
    sel = selectors.DefaultSelector()
    head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n".encode()
    # Half trickle their headers, half their body (after whole headers).
    kinds = [
        (head + b"X-Slow: " + b"a" * 5000, len(head)),
        (head + b"\r\n" + b"{" * 20000, len(head) + 2),
    ]

    def open_one() -> None:
        payload, prefix = kinds[log.connections % 2]
        s = socket.socket()
        s.setblocking(False)
        opened = time.monotonic()  # before connecting: the server may accept at once
        s.connect_ex(("127.0.0.1", port))
        sel.register(s, selectors.EVENT_READ, _Attacker(s, payload, prefix, opened))
        log.connections += 1

    for _ in range(n):
        open_one()
    next_tick = time.monotonic()
    while not stop.is_set():
        for key, _ in sel.select(timeout=0.02):
            a = key.data
            try:
                chunk = a.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                chunk = b""
            if chunk:
                a.answer += chunk
                continue
            sel.unregister(a.sock)
            a.sock.close()
            log.lifetimes.append(time.monotonic() - a.opened)
            code = statuses(a.answer)
            log.closes[str(code[0]) if code else "dropped"] += 1
            open_one()  # keep the pressure up
        if time.monotonic() >= next_tick:
            next_tick += tick
            for key in list(sel.get_map().values()):
                key.data.tick()
    for key in list(sel.get_map().values()):
        key.data.sock.close()
    sel.close()


@pytest.mark.parametrize(
    "slots",
    [
        # More slow connections than slots: new connections evict the slowest (408).
        pytest.param(128, id="128-slots-eviction"),
        # Room for all of them: each is cut off at its deadline (408).
        pytest.param(512, id="512-slots-deadline"),
    ],
)
def test_200_trickling_connections_do_not_starve_valid_clients(
    sensor_runtime: Any, serve: Callable[..., Any], slots: int
) -> None:
    deadline_s = 2.0
    s = serve(sensor_runtime, max_connections=slots, request_timeout_s=deadline_s)
    stop = threading.Event()
    attack = _AttackLog()
    attacker = threading.Thread(target=_trickle, args=(s.port, 200, stop, attack), daemon=True)
    attacker.start()
    time.sleep(1.0)  # the slow connections are in (more than the 128 slots) before clients come

    body = window_body(7)
    x = np.asarray(json.loads(body)["inputs"][0]["data"], np.float32).reshape(1, 52, 20)
    expected = sensor_runtime.infer(x)["out"]
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()
    run_until = time.monotonic() + 6.0

    def client(keep_alive: bool) -> None:
        c = Client(s.port, timeout=20)
        while time.monotonic() < run_until:
            try:
                reply = c.post(INFER, body)
                out = reply.json()["outputs"][0] if reply.status == 200 else None
                ok = out is not None and np.allclose(out["data"], expected.ravel(), atol=1e-5)
                what = "ok" if ok else f"status {reply.status}"
            except Exception as exc:  # counted as a failure, whatever it is
                what, ok = type(exc).__name__, False
            with lock:
                outcomes[what] += 1
            if not (ok and keep_alive):
                c.close()
                c = Client(s.port, timeout=20)
        c.close()

    # Half the clients keep their connection alive, half open one per request.
    clients = [threading.Thread(target=client, args=(i % 2 == 0,)) for i in range(6)]
    for t in clients:
        t.start()
    for t in clients:
        t.join(60)
    stop.set()
    attacker.join(30)

    total = sum(outcomes.values())
    assert total >= 100, outcomes  # enough valid requests for the fraction to mean something
    assert outcomes["ok"] / total >= 0.99, outcomes
    # Every slow connection the server ended got a 408 (deadline, or evicted for a newer
    # connection) or, when none of its request had arrived, was closed without an answer.
    assert attack.connections >= 200 and sum(attack.closes.values()) >= 200, attack
    assert set(attack.closes) <= {"408", "dropped"}, attack.closes
    assert attack.closes["408"] >= 200, attack.closes
    # Closed by the deadline at the latest (a generous margin for a loaded machine).
    assert max(attack.lifetimes) < deadline_s + 5, max(attack.lifetimes)
    if slots > 200:  # nothing to evict: the deadline alone ended them, never before it
        assert min(attack.lifetimes) >= deadline_s, min(attack.lifetimes)
    print(
        f"valid: {dict(outcomes)}; slow connections: {attack.connections} opened, "
        f"{dict(attack.closes)} closed, longest {max(attack.lifetimes):.2f} s"
    )
