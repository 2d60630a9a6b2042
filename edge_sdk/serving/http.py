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

Why the standard library's ``ThreadingHTTPServer`` and how the transport bounds
what a client can hold: :mod:`edge_sdk.serving.http_transport`.

Limits: this server is meant for a plant network or for local clients, not
for the internet. It binds ``127.0.0.1`` by default; there is no TLS, no
HTTP/2 and no request-rate limiting. To expose it, put a reverse proxy
(nginx, Caddy, Envoy) in front for TLS, rate limits and connection
management, and set a bearer ``token``.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

import numpy as np

from .. import __version__
from ..errors import ConfigError
from ..graph import zero_request
from ..manifest import Manifest
from .batcher import BatcherConfig, DynamicBatcher
from .cache import ResultCache
from .http_transport import SERVER_NAME, HttpServer, RequestHandler
from .kserve import (
    BINARY_HEADER,
    DATATYPES,
    ProtocolError,
    decode_inputs,
    encode_outputs,
    kserve_datatype,
    parse_json,
    predict,
    response_head,
    wanted_outputs,
)
from .kserve_events import answer_events, event_tensors, is_events_request
from .metrics import ServingMetrics

log = logging.getLogger(__name__)

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
        self._httpd: HttpServer | None = None
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
                httpd = HttpServer((self.host, self._requested_port), self)
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

        events_in, events_out = event_tensors(m)  # an event-graph model also takes events
        return {
            "name": m.model.name,
            "versions": [m.model.version],
            "platform": f"{SERVER_NAME}/{backend}",
            "inputs": tensors(m.request_inputs) + events_in,
            "outputs": tensors(m.outputs) + events_out,
        }

    # -- request handling (called from connection threads) ---------------------------------
    def handle(self, req: RequestHandler, method: str) -> tuple[int, bytes, dict[str, str]]:
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

    def _authorize(self, req: RequestHandler) -> None:
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
        self, req: RequestHandler, name: str, version: str | None
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
        if is_events_request(request):  # events for a node's store: kserve_events.py
            return _json(200, answer_events(self.predictor, request, manifest))
        inputs = decode_inputs(request, manifest, binary)
        wanted = wanted_outputs(request, manifest)
        result = predict(lambda: self.predictor.infer(inputs))
        response = response_head(request, manifest)
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


__all__ = [
    "DATATYPES",
    "EXTENSIONS",
    "InferenceServer",
    "ModelSource",
    "Predictor",
    "kserve_datatype",
    "warmup_inputs",
]
