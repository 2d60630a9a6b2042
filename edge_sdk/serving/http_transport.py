"""HTTP/1.1 transport of the inference server: connections, deadlines, eviction, framing.

:class:`HttpServer` and :class:`RequestHandler` carry requests to an :class:`App`
(``http.InferenceServer``, which routes them). Why ``ThreadingHTTPServer`` on a device:

* **no extra dependency** on the device, and an audited, long-maintained parser;
* **one thread per connection** feeds the thread-safe
  :class:`~edge_sdk.serving.batcher.DynamicBatcher` (inference releases the GIL);
* **bounded resources**: request bodies are capped (``max_body_bytes``, checked
  on the header); every request must arrive whole (request line, headers, body)
  within ``request_timeout_s`` of its first byte (a new connection's first
  request: of the connection), else 408 and close; idle keep-alive connections
  time out (``idle_timeout_s``); at most ``max_connections`` are open at once.
* **slow clients cannot starve fast ones**: at the connection limit, a new
  connection takes the slot of the one that has waited longest without a
  complete request (idle, or trickling its request: answered 408); when every
  connection is answering a complete request, a new one gets 503
  (``tests/serving/test_http_hostile.py``: ≥ 99 % of valid requests served
  beside 200 trickling connections).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from .kserve import ERROR_KINDS, ProtocolError
from .metrics import ServingMetrics

log = logging.getLogger("edge_sdk.serving.http")  # one logger for the server, as before
SERVER_NAME = "edge-graph-sdk"


class App(Protocol):
    """What the transport needs of its app (``http.InferenceServer``): limits and ``handle``."""

    idle_timeout_s: float
    request_timeout_s: float
    max_connections: int
    max_body_bytes: int
    metrics: ServingMetrics

    def handle(self, req: RequestHandler, method: str) -> tuple[int, bytes, dict[str, str]]:
        """Route one complete request; return status, body and extra headers."""


class Expired(Exception):
    """A request was not received in time (deadline passed, or evicted): answer 408.

    Not a ``TimeoutError``: the standard handler closes those silently.
    """


_IDLE, _READING, _BUSY = "idle", "reading", "busy"


class Connection:
    """One open connection as the server sees it: phase, deadline, eviction.

    Phases: ``idle`` (waiting for a request), ``reading`` (begun, not complete:
    its deadline runs), ``busy`` (read completely, being answered: never evicted).
    """

    __slots__ = ("deadline", "evicted", "phase", "since", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.phase = _IDLE
        self.since = time.monotonic()
        #: When the current request must be read by (the first one: counted from accept).
        self.deadline: float | None = deadline
        self.evicted = False

    def begin_request(self, request_timeout_s: float) -> None:
        if self.deadline is None:
            self.deadline = time.monotonic() + request_timeout_s
            self.since = time.monotonic()
        self.phase = _READING

    def read_complete(self, answer_timeout_s: float) -> None:
        self.phase, self.deadline = _BUSY, None
        with contextlib.suppress(OSError):  # sends get the whole idle timeout, not what is left
            self.sock.settimeout(answer_timeout_s)

    def answered(self) -> None:
        self.phase, self.deadline, self.since = _IDLE, None, time.monotonic()

    def evict(self) -> None:
        """Wake the connection's blocked read (it answers 408 if a request was under way)."""
        self.evicted = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RD)


class DeadlineReader(io.RawIOBase):
    """The socket's read side, bounded by the request deadline, not only per read.

    An idle timeout alone lets a client sending a byte every few seconds hold a
    connection for ever; here a request's reads all end by its deadline.
    """

    def __init__(self, conn: Connection, idle_timeout_s: float) -> None:
        super().__init__()
        self._conn = conn
        self._idle_timeout_s = idle_timeout_s

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        conn = self._conn
        reading = conn.phase == _READING
        if conn.evicted:
            return self._evicted(reading)
        timeout = self._idle_timeout_s
        if conn.deadline is not None:
            timeout = min(timeout, conn.deadline - time.monotonic())
        if timeout <= 0:
            if reading:
                raise Expired("deadline")
            raise TimeoutError("the first request did not begin in time")
        try:
            conn.sock.settimeout(timeout)
            n = conn.sock.recv_into(buf)
        except TimeoutError:
            if reading:
                raise Expired("deadline") from None
            raise
        # A blocked recv may return bytes sent after SHUT_RD: an evicted connection serves no more.
        return self._evicted(reading) if conn.evicted else n

    @staticmethod
    def _evicted(reading: bool) -> int:
        if reading:
            raise Expired("evicted")
        return 0  # waiting for a request: end of stream, closed quietly


class RequestHandler(BaseHTTPRequestHandler):
    """One connection: parses requests, hands them to the server, writes answers."""

    server: HttpServer
    protocol_version = "HTTP/1.1"
    server_version = SERVER_NAME
    sys_version = ""
    wbufsize = 64 * 1024  # headers and body leave in one write; flushed per request
    metrics_model: str | None
    conn: Connection
    rfile: io.BufferedReader  # over a DeadlineReader (see setup)

    def setup(self) -> None:
        super().setup()
        # Not TCP (a unix socket), or already closed: nothing to tune.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = self.server.conn_of(self.request)
        self.rfile.close()  # the plain reader: replaced by one that keeps the deadline
        self.rfile = io.BufferedReader(
            DeadlineReader(self.conn, self.server.app.idle_timeout_s), 64 * 1024
        )

    def handle_one_request(self) -> None:
        """Wait for a request, then read and answer it within the request deadline."""
        app = self.server.app
        try:
            if not self.rfile.peek(1):  # the client closed, or the connection was evicted
                self.close_connection = True
                return
        except (OSError, Expired):  # idle too long (or never began): close quietly
            self.close_connection = True
            return
        self.conn.begin_request(app.request_timeout_s)
        # What the standard parser leaves unset when the request line never completes.
        self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
        self._length: int | None = None
        try:
            super().handle_one_request()
        except Expired as exc:
            self._refuse(self._expired(exc))
        finally:
            self.conn.answered()

    def _expired(self, exc: Expired) -> ProtocolError:
        app = self.server.app
        if str(exc) == "evicted":
            return ProtocolError(
                408,
                f"request not complete when the server, at its limit of {app.max_connections} "
                "connections, needed this one's slot for a new connection; send whole requests",
                kind="evicted",
                close=True,
            )
        return ProtocolError(
            408,
            f"request not received within {app.request_timeout_s:g} s (headers and body); "
            "send whole requests",
            close=True,
        )

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def framing(self) -> int | None:
        """The body length the headers declare (RFC 9112 §6.3); None: no body.

        Framing two parties could read differently (the root of request
        smuggling) is refused, never guessed: several ``Content-Length``
        headers (even equal ones), a value that is not plain digits,
        ``Content-Length`` with ``Transfer-Encoding``, and a header section
        the parser could not read whole (``Name : value``, folded lines).
        Chunked (any ``Transfer-Encoding``) is not supported.

        Raises:
            ProtocolError: 400 for ambiguous or invalid framing, 411 for a
                ``Transfer-Encoding`` body; both close the connection.
        """
        if self.headers.defects or any("\n" in v for v in self.headers.values()):
            # e.g. "Content-Length : 5" ends the parsed headers early, and a folded line
            # hides a header inside another's value: either way a header went unread.
            raise ProtocolError(
                400,
                "malformed header section (a line that is not 'Name: value', or a folded "
                "line); send one 'Name: value' per line",
                close=True,
            )
        lengths = self.headers.get_all("Content-Length") or []
        if self.headers.get_all("Transfer-Encoding"):
            if lengths:
                raise ProtocolError(
                    400,
                    "Content-Length together with Transfer-Encoding is ambiguous framing "
                    "(RFC 9112 section 6.3); send Content-Length only",
                    close=True,
                )
            raise ProtocolError(
                411, "chunked bodies are not supported; send Content-Length", close=True
            )
        if not lengths:
            return None
        if len(lengths) > 1:
            raise ProtocolError(
                400,
                f"{len(lengths)} Content-Length headers ({', '.join(map(repr, lengths))}); "
                "send exactly one",
                close=True,
            )
        raw = lengths[0].strip()
        if not (raw.isascii() and raw.isdigit()):
            raise ProtocolError(
                400, f"invalid Content-Length {lengths[0]!r}; expected decimal digits", close=True
            )
        return int(raw) if len(raw) <= 18 else 10**18  # beyond any limit; int() caps digits

    def handle_expect_100(self) -> bool:
        """Answer ``Expect: 100-continue``: an error at once for bad framing or a body too large."""
        limit = self.server.app.max_body_bytes
        try:
            length = self.framing()
            if length is not None and length > limit:
                raise too_large(length, limit)
        except ProtocolError as exc:
            self._refuse(exc)
            return False
        ok = super().handle_expect_100()
        self.wfile.flush()  # the buffered writer would hold "100 Continue" back
        return ok

    def read_body(self, limit: int) -> bytearray:
        """Read the request body, refusing a missing or too large one before reading it.

        Raises:
            ProtocolError: 411 without ``Content-Length``, 413 over ``limit``,
                400 when the client closes before the whole body, 408 when
                the request deadline passes first.
        """
        self._body_pending = False
        length = self._length
        if length is None:
            raise ProtocolError(411, "Content-Length is required", close=True)
        if length > limit:
            raise too_large(length, limit)
        buf = bytearray(length)
        view, got = memoryview(buf), 0
        try:
            while got < length:
                n = self.rfile.readinto1(view[got:])  # one read: counts what arrived
                if not n:
                    raise ProtocolError(
                        400, f"body ended after {got} of {length} bytes", close=True
                    )
                got += n
        except Expired as exc:
            err = self._expired(exc)
            err.message += f" (received {got} of {length} body bytes)"
            raise err from None
        self.conn.read_complete(self.server.app.idle_timeout_s)
        return buf

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        started = time.perf_counter()
        self.metrics_model = None
        self._body_pending = True  # until the framing says otherwise
        try:
            self._length = self.framing()
            self._body_pending = bool(self._length)
            if not self._body_pending:
                self.conn.read_complete(app.idle_timeout_s)
            status, body, headers = app.handle(self, method)
        except ProtocolError as exc:
            if exc.close:
                self.close_connection = True
            status, headers = exc.status, exc.headers
            body = json.dumps({"error": exc.message}).encode()
            app.metrics.count_error(exc.kind)
            if exc.status == 500:
                log.warning("%s %s: %s %s", method, self.path, exc.status, exc.message)
        except Exception:
            log.exception("internal error serving %s %s", method, self.path)
            status, headers = 500, {}
            body = json.dumps({"error": "internal error; see the server log"}).encode()
            app.metrics.count_error("internal")
        if self._body_pending:
            # A body we did not read would be parsed as the next request.
            self.close_connection = True
        self._send(status, body, headers, method == "HEAD")
        # Idle before the answer leaves (handle_one_request flushes it): a client's next
        # connection at the cap must find this one evictable, not still answering.
        self.conn.answered()
        if self.metrics_model is not None:
            app.metrics.observe_request(self.metrics_model, status, time.perf_counter() - started)

    def _refuse(self, exc: ProtocolError) -> None:
        """Answer an error outside routing (framing, deadline) and close the connection."""
        self.close_connection = True
        self.server.app.metrics.count_error(exc.kind)
        with contextlib.suppress(OSError):  # the answer must not wait on a stalled client
            self.connection.settimeout(min(self.server.app.idle_timeout_s, 5.0))
        body = json.dumps({"error": exc.message}).encode()
        self._send(exc.status, body, exc.headers, self.command == "HEAD")
        with contextlib.suppress(OSError):
            self.wfile.flush()

    def _send(self, status: int, body: bytes, headers: Mapping[str, str], head: bool) -> None:
        try:
            self.send_response(status)
            headers = dict(headers)
            self.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(body)))
            for key, value in headers.items():
                self.send_header(key, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if not head:
                self.wfile.write(body)
        except OSError:  # the client went away: nothing left to tell it
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors the stdlib parser raises (bad request line, huge headers...), as JSON."""
        self.close_connection = True
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "error"
        self.server.app.metrics.count_error(ERROR_KINDS.get(code, "bad_request"))
        body = json.dumps({"error": message or explain or phrase}).encode()
        self._send(code, body, {}, getattr(self, "command", None) == "HEAD")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


def too_large(length: int, limit: int) -> ProtocolError:
    return ProtocolError(
        413, f"request body of {length} bytes exceeds the limit of {limit}", close=True
    )


_BUSY_BODY = b'{"error": "too many connections; retry later"}'
_BUSY_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
    % (len(_BUSY_BODY), _BUSY_BODY)
)


class HttpServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that caps connections, evicting the slowest for a new one.

    At ``max_connections`` a new connection takes the slot of the connection
    that has waited longest without a complete request (idle keep-alive, or
    a request still arriving, which is answered 408): a well-behaved client
    sends its request in milliseconds, so slow or stalled clients, not new
    ones, lose their slots. Only when every connection is answering a
    complete request is a new one refused with 503.
    """

    daemon_threads = True
    request_queue_size = 256  # listen backlog: a burst of connections waits, not refused

    def __init__(self, address: tuple[str, int], app: App) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self._conns: dict[socket.socket, Connection] = {}
        self._conns_lock = threading.Lock()
        # The idle timeout is a class attribute of the handler: one subclass per server.
        handler = type("_Handler", (RequestHandler,), {"timeout": app.idle_timeout_s})
        super().__init__(address, handler)

    def conn_of(self, request: socket.socket) -> Connection:
        with self._conns_lock:
            return self._conns[request]

    def process_request(self, request: Any, client_address: Any) -> None:
        app = self.app
        conn = Connection(request, time.monotonic() + app.request_timeout_s)
        victim: Connection | None = None
        with self._conns_lock:
            live = [c for c in self._conns.values() if not c.evicted]
            admit = len(live) < app.max_connections
            # Evicted connections are closing; still bound their number (threads).
            if not admit and len(self._conns) < 2 * app.max_connections:
                waiting = [c for c in live if c.phase != _BUSY]
                victim = min(waiting, key=lambda c: c.since, default=None)
                admit = victim is not None
            if admit:
                self._conns[request] = conn
        if victim is not None:
            victim.evict()
        if not admit:
            app.metrics.count_error("overloaded")
            with contextlib.suppress(OSError):
                request.sendall(_BUSY_ANSWER)
            super().shutdown_request(request)
            return
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._conns_lock:
            self._conns.pop(request, None)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection thread died: a vanished client is routine, anything else is logged."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            log.debug("connection from %s ended: %r", client_address, exc)
        else:
            log.error("error on the connection from %s", client_address, exc_info=True)

    def close_connections(self) -> None:
        """Shut every open connection down (idle keep-alive ones would linger)."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


__all__ = [
    "SERVER_NAME",
    "App",
    "Connection",
    "DeadlineReader",
    "Expired",
    "HttpServer",
    "RequestHandler",
    "too_large",
]
