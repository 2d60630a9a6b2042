"""An Open Inference Protocol (KServe v2 REST) server for one bundle.

Endpoints (``{m}`` is the model name; every model route also exists as
``/v2/models/{m}/versions/{version}/...``):

=========================  ======  ==============================================
``/v2/health/live``         GET     200 ``{"live": true}`` while the process serves
``/v2/health/ready``        GET     200 once the model is loaded and warmed, else 503
``/v2``                     GET     server metadata (name, version, extensions)
``/v2/models/{m}``          GET     model metadata: inputs/outputs, KServe datatypes
``/v2/models/{m}/ready``    GET     200 when the model is ready, else 503
``/v2/models/{m}/infer``    POST    inference, JSON or the binary tensor extension
``/metrics``                GET     Prometheus text (:mod:`edge_sdk.serving.metrics`)
=========================  ======  ==============================================

Errors answer ``{"error": "message"}``: 400 bad request (the message names
the input and what was expected; also ambiguous framing: several
``Content-Length`` headers, an invalid one, or one with
``Transfer-Encoding``), 401 missing/wrong bearer token, 404 unknown route or
model (naming the served one), 405 wrong method, 408 request not received
within ``request_timeout_s`` (headers and body together), 411 no
``Content-Length``, 413 body over ``max_body_bytes`` (refused before a byte
of it is read), 503 overloaded or not ready, 500 internal error (traceback
logged, never sent).

Why the standard library's ``ThreadingHTTPServer`` on an edge device:

* **no extra dependency** on the device: nothing to vendor, patch or
  cross-compile for an ARM gateway, and an audited, long-maintained parser;
* **one thread per connection** maps directly onto the thread-safe
  :class:`~edge_sdk.serving.batcher.DynamicBatcher`, which merges the
  requests of concurrent connections into one backend call: the server needs
  no event loop of its own, and the expensive part (inference) releases the
  GIL;
* **bounded resources**: request bodies are capped (``max_body_bytes``,
  checked on the header); every request must arrive whole (request line,
  headers and body) within ``request_timeout_s`` of its first byte (a new
  connection's first request: of the connection), else 408 and close;
  idle keep-alive connections time out (``idle_timeout_s``); at most
  ``max_connections`` are open at once.
* **slow clients cannot starve fast ones**: at the connection limit, a new
  connection takes the slot of the one that has waited longest without a
  complete request (idle, or trickling its request: answered 408). Only
  connections answering a complete request keep their slots; when all of
  them do, a new connection is answered 503 and closed. Measured with 200
  connections trickling a byte every 0.2 s against 128 slots, over 99 % of
  the valid requests sent meanwhile succeeded (``tests/serving/test_http_hostile.py``).

Limits: this server is meant for a plant network or for local clients, not
for the internet. It binds ``127.0.0.1`` by default; there is no TLS, no
HTTP/2 and no request-rate limiting. To expose it, put a reverse proxy
(nginx, Caddy, Envoy) in front for TLS, rate limits and connection
management, and set a bearer ``token``.
"""

from __future__ import annotations

import contextlib
import hmac
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
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

import numpy as np

from .. import __version__
from ..errors import ConfigError, InvalidInputError, OverloadedError
from ..graph import zero_request
from ..manifest import Manifest
from .batcher import BatcherConfig, DynamicBatcher
from .cache import ResultCache
from .kserve import (
    BINARY_HEADER,
    DATATYPES,
    ERROR_KINDS,
    ProtocolError,
    decode_inputs,
    encode_outputs,
    kserve_datatype,
    parse_json,
    wanted_outputs,
)
from .metrics import ServingMetrics

log = logging.getLogger(__name__)

SERVER_NAME = "edge-graph-sdk"
#: Protocol extensions this server implements.
EXTENSIONS = ["binary_tensor_data", "metrics"]
DEFAULT_MAX_BODY = 8 << 20
#: Seconds a request has to arrive whole: 8 MiB at ~1 MB/s, with a margin.
DEFAULT_REQUEST_TIMEOUT_S = 10.0


@runtime_checkable
class Predictor(Protocol):
    """What requests go through: a :class:`~edge_sdk.Runtime` or a batcher."""

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one request; raise ``InvalidInputError`` for a bad one."""
        ...


class ModelSource(Protocol):
    """Where the server reads what it serves (a :class:`~edge_sdk.Runtime` fits).

    Read on every request, so a source whose model changes (a node after an
    update) is described as it is now.
    """

    @property
    def manifest(self) -> Manifest:
        """The served bundle's manifest."""
        ...

    def describe(self) -> dict[str, Any]:
        """Backend, precision and the like (``Runtime.describe``)."""
        ...


def _default_predictor(
    runtime: Any, config: BatcherConfig | None = None, cache_bytes: int = 0
) -> DynamicBatcher:
    """The batcher requests go through when no predictor is given (owned by the server).

    This is the single place where the dynamic batcher plugs in: concurrent
    connections are merged into batched backend calls, and repeated requests
    are answered from a result cache when ``cache_bytes`` > 0.
    """
    cache = ResultCache(cache_bytes) if cache_bytes > 0 else None
    return DynamicBatcher(runtime, config if config is not None else BatcherConfig(), cache)


def warmup_inputs(manifest: Manifest) -> dict[str, np.ndarray]:
    """A small valid request for ``manifest`` (zeros), used to warm a model up."""
    return zero_request(manifest.graph)


class InferenceServer:
    """Serve one model over the Open Inference Protocol (KServe v2 REST).

    Example:
        >>> rt = Runtime.load("tep.bundle")                               # doctest: +SKIP
        >>> with InferenceServer(rt, port=8000) as server:                 # doctest: +SKIP
        ...     print(server.url)   # http://127.0.0.1:8000

    Args:
        runtime: What is served (a :class:`~edge_sdk.Runtime`, or any
            :class:`ModelSource`); metadata is read from it on every request.
        host: Address to bind; ``127.0.0.1`` by default (local clients only).
        port: TCP port; 0 picks a free one (see :attr:`port`).
        predictor: What requests go through. Default: a
            :class:`~edge_sdk.serving.batcher.DynamicBatcher` over ``runtime``,
            started and closed by the server. A given predictor is neither
            started nor closed.
        token: Bearer token required on every endpoint except
            ``/v2/health/*``; None serves without authentication.
        max_body_bytes: Largest request body; larger ones get 413 unread.
        metrics: Metrics to record into; default a new private set.
        max_connections: Connections open at once. At the limit a new
            connection evicts the one waiting longest without a complete
            request; when every connection is answering one, 503.
        idle_timeout_s: Seconds a keep-alive connection may stay silent
            between requests before it is closed (also the bound on writing
            an answer to a client that does not read).
        request_timeout_s: Seconds a request has from its first byte (a new
            connection's first request: from the connection) until its
            headers and body are read; later, 408 and the connection closes.
        warmup: Run one request before reporting ready.
        batcher: ``BatcherConfig`` of the default batcher (ignored when a
            ``predictor`` is given).
        cache_bytes: Result cache of the default batcher, in bytes (0: none):
            a repeated request is answered without running the model.

    Raises:
        BackendUnavailableError: ``prometheus_client`` is missing (``[serve]``
            extra) and no ``metrics`` were given.
    """

    def __init__(
        self,
        runtime: ModelSource,
        host: str = "127.0.0.1",
        port: int = 0,
        predictor: Predictor | None = None,
        token: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY,
        metrics: ServingMetrics | None = None,
        *,
        max_connections: int = 128,
        idle_timeout_s: float = 30.0,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        warmup: bool = True,
        batcher: BatcherConfig | None = None,
        cache_bytes: int = 0,
    ) -> None:
        if max_body_bytes <= 0:
            raise ValueError("max_body_bytes must be > 0")
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        if not (idle_timeout_s > 0 and request_timeout_s > 0):
            raise ValueError(
                f"idle_timeout_s and request_timeout_s must be > 0, got {idle_timeout_s} and "
                f"{request_timeout_s}"
            )
        self.source = runtime
        self.host = host
        self._requested_port = port
        self._token = token.encode() if token else None
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.request_timeout_s = request_timeout_s
        self._warmup = warmup
        self.metrics = metrics if metrics is not None else ServingMetrics()
        #: The batcher the server made (and starts and closes), if no predictor was given.
        self.batcher: DynamicBatcher | None = None
        self.predictor: Predictor
        if predictor is None:
            self.batcher = self.predictor = _default_predictor(runtime, batcher, cache_bytes)
        else:
            self.predictor = predictor
        self.metrics.bind(self._info, self.predictor)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop_requested = threading.Event()
        self._lock = threading.Lock()
        self._stopped = False

    # -- life cycle ---------------------------------------------------------------------
    def start(self) -> InferenceServer:
        """Bind, serve in a background thread, warm up, then report ready.

        Returns:
            The server (``with InferenceServer(...).start() as s`` works too).

        Raises:
            ConfigError: The address cannot be bound (port in use, bad host).
            EdgeSDKError: The warm-up request failed.
        """
        with self._lock:
            if self._httpd is not None:
                return self
            if self._stopped:
                raise RuntimeError("a stopped InferenceServer cannot be restarted")
            if self.batcher is not None:
                self.batcher.start()
            try:
                httpd = _Server((self.host, self._requested_port), self)
            except BaseException as exc:
                if self.batcher is not None:
                    self.batcher.close()
                if isinstance(exc, OSError):
                    raise ConfigError(
                        f"cannot listen on {self.host}:{self._requested_port}: "
                        f"{exc.strerror or exc}"
                    ) from exc
                raise
            self._httpd = httpd
            self._thread = threading.Thread(
                target=httpd.serve_forever,
                kwargs={"poll_interval": 0.2},
                name=f"edge-http:{self.port}",
                daemon=True,
            )
            self._thread.start()
        try:
            if self._warmup:
                self.predictor.infer(warmup_inputs(self.source.manifest))
        except BaseException:
            self.stop()
            raise
        self._ready.set()
        log.info("serving %s on %s", self.source.manifest.model.name, self.url)
        return self

    def stop(self) -> None:
        """Stop serving: close the listener and open connections, release the batcher."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            httpd, thread = self._httpd, self._thread
        self._ready.clear()
        self._stop_requested.set()
        if httpd is not None:
            httpd.shutdown()
            httpd.close_connections()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        if self.batcher is not None:
            self.batcher.close()

    def request_stop(self) -> None:
        """Ask :meth:`serve_forever` to return (safe from a signal handler)."""
        self._stop_requested.set()

    def serve_forever(self) -> None:
        """Start if needed and serve until :meth:`request_stop`, :meth:`stop` or Ctrl-C."""
        self.start()
        try:
            while not self._stop_requested.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> InferenceServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (the picked one when constructed with 0)."""
        if self._httpd is None:
            return self._requested_port
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8000``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ready(self) -> bool:
        """True once started and warmed up, until stopped."""
        return self._ready.is_set()

    # -- what is served -------------------------------------------------------------------
    def _info(self) -> dict[str, str]:
        m = self.source.manifest
        d = self.source.describe()
        return {
            "backend": str(d.get("backend") or ""),
            "model": m.model.name,
            "version": m.model.version,
            "precision": str(d.get("precision") or ""),
        }

    def server_metadata(self) -> dict[str, Any]:
        """Answer of ``GET /v2``."""
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def model_metadata(self) -> dict[str, Any]:
        """Answer of ``GET /v2/models/{name}``: symbolic dims are -1."""
        m = self.source.manifest
        backend = self.source.describe().get("backend") or "unknown"

        def tensors(specs: Any) -> list[dict[str, Any]]:
            return [
                {
                    "name": t.name,
                    "datatype": kserve_datatype(t.dtype),
                    "shape": [d if isinstance(d, int) else -1 for d in t.shape],
                }
                for t in specs
            ]

        return {
            "name": m.model.name,
            "versions": [m.model.version],
            "platform": f"{SERVER_NAME}/{backend}",
            "inputs": tensors(m.inputs),
            "outputs": tensors(m.outputs),
        }

    # -- request handling (called from connection threads) ---------------------------------
    def _handle(self, req: _Handler, method: str) -> tuple[int, bytes, dict[str, str]]:
        """Route one request; return status, body and extra headers."""
        path = urlsplit(req.path).path
        parts = [unquote(p) for p in path.strip("/").split("/")] if path.strip("/") else []
        if parts[:2] == ["v2", "health"] and len(parts) == 3 and parts[2] in ("live", "ready"):
            _allow(method, "GET")
            if parts[2] == "live":
                return _json(200, {"live": True})
            return _json(200 if self.ready else 503, {"ready": self.ready})
        self._authorize(req)
        if parts == ["v2"]:
            _allow(method, "GET")
            return _json(200, self.server_metadata())
        if parts == ["metrics"]:
            _allow(method, "GET")
            body, content_type = self.metrics.render()
            return 200, body, {"Content-Type": content_type}
        if len(parts) >= 3 and parts[:2] == ["v2", "models"]:
            name, rest = parts[2], parts[3:]
            version = None
            if len(rest) >= 2 and rest[0] == "versions":
                version, rest = rest[1], rest[2:]
            if rest == []:
                _allow(method, "GET")
                self._check_model(name, version)
                return _json(200, self.model_metadata())
            if rest == ["ready"]:
                _allow(method, "GET")
                self._check_model(name, version)
                return _json(200 if self.ready else 503, {"name": name, "ready": self.ready})
            if rest == ["infer"]:
                _allow(method, "POST")
                return self._infer(req, name, version)
        raise ProtocolError(404, f"no route {path!r}; see /v2 and /v2/models/{{name}}")

    def _authorize(self, req: _Handler) -> None:
        if self._token is None:
            return
        given = req.headers.get("Authorization", "").encode("latin-1", "replace")
        if not hmac.compare_digest(given, b"Bearer " + self._token):
            raise ProtocolError(
                401,
                "missing or wrong bearer token (send 'Authorization: Bearer <token>')",
                headers={"WWW-Authenticate": 'Bearer realm="edge-graph-sdk"'},
            )

    def _check_model(self, name: str, version: str | None) -> Manifest:
        m = self.source.manifest
        served = m.model
        if name != served.name:
            raise ProtocolError(
                404,
                f"unknown model {name!r}; this server serves {served.name!r} "
                f"(version {served.version})",
            )
        if version is not None and version != served.version:
            raise ProtocolError(
                404,
                f"model {name!r} has no version {version!r}; the served version is "
                f"{served.version!r}",
            )
        return m

    def _infer(
        self, req: _Handler, name: str, version: str | None
    ) -> tuple[int, bytes, dict[str, str]]:
        manifest = self._check_model(name, version)
        req.metrics_model = manifest.model.name
        if not self.ready:
            raise ProtocolError(
                503, "model is not ready (warming up or stopping)", kind="not_ready"
            )
        body = req.read_body(self.max_body_bytes)
        header_len = req.headers.get(BINARY_HEADER)
        view = memoryview(body)
        if header_len is not None:
            try:
                n = int(header_len)
            except ValueError:
                n = -1
            if not 0 <= n <= len(body):
                raise ProtocolError(
                    400,
                    f"{BINARY_HEADER} is {header_len!r}; expected the JSON header's length "
                    f"(0..{len(body)} bytes)",
                )
            head, binary = view[:n], view[n:]
        else:
            head, binary = view, view[:0]
        request = parse_json(head)
        inputs = decode_inputs(request, manifest, binary)
        wanted = wanted_outputs(request, manifest)
        try:
            result = self.predictor.infer(inputs)
        except InvalidInputError as exc:
            raise ProtocolError(400, str(exc)) from None
        except OverloadedError as exc:
            raise ProtocolError(503, str(exc), headers={"Retry-After": "1"}) from None
        response: dict[str, Any] = {
            "model_name": manifest.model.name,
            "model_version": manifest.model.version,
        }
        if "id" in request:
            response["id"] = request["id"]
        outputs, blobs = encode_outputs(result, wanted)
        response["outputs"] = outputs
        head_bytes = json.dumps(response, separators=(",", ":"), allow_nan=False).encode()
        if not blobs:
            return 200, head_bytes, {"Content-Type": "application/json"}
        return (
            200,
            b"".join([head_bytes, *blobs]),
            {"Content-Type": "application/octet-stream", BINARY_HEADER: str(len(head_bytes))},
        )


# -- request decoding ---------------------------------------------------------------------------


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise ProtocolError(
            405, f"method {method} not allowed here; use {allowed}", headers={"Allow": allowed}
        )


def _json(status: int, doc: Any) -> tuple[int, bytes, dict[str, str]]:
    return status, json.dumps(doc, separators=(",", ":")).encode(), {}


# -- connections: request deadlines and eviction -------------------------------------------------


class _Expired(Exception):
    """A request was not received in time (deadline passed, or evicted): answer 408.

    Not a ``TimeoutError``: the standard handler closes those silently.
    """


_IDLE, _READING, _BUSY = "idle", "reading", "busy"


class _Conn:
    """One open connection as the server sees it: phase, deadline, eviction.

    Phases: ``idle`` (waiting for a request: keep-alive, or a new connection),
    ``reading`` (a request has begun and is not complete: its deadline runs)
    and ``busy`` (the request is read completely and is being answered).
    Only idle and reading connections are evicted for a new one; a busy one
    holds its slot until answered.
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


class _DeadlineReader(io.RawIOBase):
    """The socket's read side, bounded by the request deadline, not only per read.

    An idle timeout alone lets a client that sends one byte every few seconds
    hold a connection for ever; here every read of a request waits at most
    until that request's deadline (headers and body together).
    """

    def __init__(self, conn: _Conn, idle_timeout_s: float) -> None:
        super().__init__()
        self._conn = conn
        self._idle_timeout_s = idle_timeout_s

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        conn = self._conn
        timeout = self._idle_timeout_s
        if conn.deadline is not None:
            timeout = min(timeout, conn.deadline - time.monotonic())
        reading = conn.phase == _READING
        if conn.evicted:
            return self._evicted(reading)
        if timeout <= 0:
            if reading:
                raise _Expired("deadline")
            raise TimeoutError("the first request did not begin in time")
        try:
            conn.sock.settimeout(timeout)
            n = conn.sock.recv_into(buf)
        except TimeoutError:
            if reading:
                raise _Expired("deadline") from None
            raise
        if conn.evicted:
            # Not only the shutdown's EOF wakes an evicted read: bytes the client sent after
            # the eviction (its next request on a keep-alive connection) can be returned by a
            # recv that was already blocked, as Linux keeps them readable after SHUT_RD. An
            # evicted connection serves nothing more.
            return self._evicted(reading)
        return n

    @staticmethod
    def _evicted(reading: bool) -> int:
        if reading:
            raise _Expired("evicted")
        return 0  # waiting for a request: end of stream, the connection closes quietly


class _Handler(BaseHTTPRequestHandler):
    """One connection: parses requests, hands them to the server, writes answers."""

    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = SERVER_NAME
    sys_version = ""
    wbufsize = 64 * 1024  # headers and body leave in one write; flushed per request
    metrics_model: str | None
    conn: _Conn
    rfile: io.BufferedReader  # over a _DeadlineReader (see setup)

    def setup(self) -> None:
        super().setup()
        # Not TCP (a unix socket), or already closed: nothing to tune.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn = self.server.conn_of(self.request)
        self.rfile.close()  # the plain reader: replaced by one that keeps the deadline
        self.rfile = io.BufferedReader(
            _DeadlineReader(self.conn, self.server.app.idle_timeout_s), 64 * 1024
        )

    def handle_one_request(self) -> None:
        """Wait for a request, then read and answer it within the request deadline."""
        app = self.server.app
        try:
            if not self.rfile.peek(1):  # the client closed, or the connection was evicted
                self.close_connection = True
                return
        except (OSError, _Expired):  # idle too long (or never began): close quietly
            self.close_connection = True
            return
        self.conn.begin_request(app.request_timeout_s)
        # What the standard parser leaves unset when the request line never completes.
        self.requestline, self.request_version, self.command = "", "HTTP/1.1", ""
        self._length: int | None = None
        try:
            super().handle_one_request()
        except _Expired as exc:
            self._refuse(self._expired(exc))
        finally:
            self.conn.answered()

    def _expired(self, exc: _Expired) -> ProtocolError:
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
                raise _too_large(length, limit)
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
            raise _too_large(length, limit)
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
        except _Expired as exc:
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
            status, body, headers = app._handle(self, method)
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
        # Idle before the answer leaves (handle_one_request flushes it): a client that has
        # its answer may open another connection at once, and at the cap that one must find
        # this connection evictable, not still answering (a 503 under load otherwise).
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


def _too_large(length: int, limit: int) -> ProtocolError:
    return ProtocolError(
        413, f"request body of {length} bytes exceeds the limit of {limit}", close=True
    )


_BUSY_BODY = b'{"error": "too many connections; retry later"}'
_BUSY_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
    % (len(_BUSY_BODY), _BUSY_BODY)
)


class _Server(ThreadingHTTPServer):
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

    def __init__(self, address: tuple[str, int], app: InferenceServer) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self._conns: dict[socket.socket, _Conn] = {}
        self._conns_lock = threading.Lock()
        # The idle timeout is a class attribute of the handler: one subclass per server.
        handler = type("_Handler", (_Handler,), {"timeout": app.idle_timeout_s})
        super().__init__(address, handler)

    def conn_of(self, request: socket.socket) -> _Conn:
        with self._conns_lock:
            return self._conns[request]

    def process_request(self, request: Any, client_address: Any) -> None:
        app = self.app
        conn = _Conn(request, time.monotonic() + app.request_timeout_s)
        victim: _Conn | None = None
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
    "DATATYPES",
    "EXTENSIONS",
    "InferenceServer",
    "ModelSource",
    "Predictor",
    "kserve_datatype",
    "warmup_inputs",
]
