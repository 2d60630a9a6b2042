"""A loopback TCP proxy that can cut the link: an uplink outage for tests.

``TcpProxy(target_port).start()`` listens on a free loopback port and forwards
every connection to ``target_host:target_port``. :meth:`TcpProxy.cut` closes
every live connection and, until :meth:`TcpProxy.restore`, either refuses new
ones (accepted and reset at once: the client sees the peer go away, as with a
firewall that rejects) or, with ``blackhole=True``, accepts them and never
answers (the client only notices through its keep-alive, as with a dead
route). Real sockets, real peers: nothing is mocked.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType

_LINGER_RESET = struct.pack("ii", 1, 0)  # close() sends RST instead of FIN


def _close(sock: socket.socket, reset: bool = False) -> None:
    """Close ``sock``; shutdown() first, because close() alone does not wake a
    thread blocked in recv() on it (and the kernel keeps the connection open)."""
    if reset:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """Forward ``host:port`` (a free loopback port) to ``target_host:target_port``.

    Attributes:
        forwarded: Connections forwarded to the target so far.
        refused: Connections refused or blackholed while cut.
    """

    def __init__(
        self, target_port: int, target_host: str = "127.0.0.1", host: str = "127.0.0.1"
    ) -> None:
        self.target = (target_host, target_port)
        self.host = host
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._cut = False
        self._blackhole = False
        self._live: set[socket.socket] = set()  # both ends of forwarded connections
        self._held: set[socket.socket] = set()  # blackholed connections
        self._closed = threading.Event()
        self._threads: list[threading.Thread] = []
        self.forwarded = 0
        self.refused = 0

    # -- control -----------------------------------------------------------------------

    def start(self) -> TcpProxy:
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self._spawn(self._accept_loop)
        return self

    def cut(self, blackhole: bool = False) -> None:
        """Close every live connection; refuse (or blackhole) new ones until :meth:`restore`."""
        with self._lock:
            self._cut, self._blackhole = True, blackhole
            live, self._live = self._live, set()
        for sock in live:
            _close(sock, reset=True)

    def restore(self) -> None:
        """Forward new connections again; blackholed ones are closed (their route is gone)."""
        with self._lock:
            self._cut = False
            held, self._held = self._held, set()
        for sock in held:
            _close(sock, reset=True)

    @property
    def is_cut(self) -> bool:
        return self._cut

    def close(self) -> None:
        """Stop listening and close everything (idempotent)."""
        self._closed.set()
        with self._lock:
            socks = self._live | self._held
            self._live, self._held = set(), set()
        for sock in socks:
            _close(sock, reset=True)
        for thread in self._threads:
            thread.join(timeout=5)
        _close(self._listener)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "cut" if self._cut else "forwarding"
        return f"TcpProxy({self.host}:{self.port} -> {self.target[0]}:{self.target[1]}, {state})"

    # -- internals -----------------------------------------------------------------------

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        self._threads = [t for t in self._threads if t.is_alive()]
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            self._admit(client)

    def _admit(self, client: socket.socket) -> None:
        with self._lock:
            if self._cut:
                self.refused += 1
                if self._blackhole:
                    self._held.add(client)  # never answered; read and dropped
                    self._spawn(self._drain, client)
                else:
                    _close(client, reset=True)
                return
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _close(client, reset=True)
            return
        upstream.settimeout(None)
        with self._lock:
            if self._cut or self._closed.is_set():  # cut while we were connecting
                _close(client, reset=True)
                _close(upstream, reset=True)
                return
            self._live |= {client, upstream}
            self.forwarded += 1
        self._spawn(self._pump, client, upstream)
        self._spawn(self._pump, upstream, client)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        with self._lock:
            self._live -= {src, dst}
        _close(src)
        _close(dst)

    def _drain(self, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while sock.recv(65536):
                pass
