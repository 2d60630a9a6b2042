"""Alert explanations in a child process at a lower CPU priority.

An alert's *why* costs dozens of inferences (:mod:`.occlusion`), and fraud
raises alerts in bursts. Made on the worker thread, a burst's explanations
held back every decision queued behind them; made on a second thread of the
node, they competed with the decisions for the CPU and for Python's GIL (the
copies are built in Python). In a child process they hold no lock of the
node's, and the child lowers its own priority (``nice`` :data:`NICE`), so the
kernel gives the CPU to the decisions, the broker link and the outbox first
and explanations take what is left.

The child loads the node's model itself, on the same engine and precision as
the node's runtime, and checks that its artifact has the same sha256, so a
*why* explains the score it sits beside. Requests and answers are pickled over
a pipe: a request holds the alerts' subgraphs (a few kB each).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import EdgeSDKError

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from ..eventgraph import Subgraph
    from ..runtime import Runtime

log = logging.getLogger(__name__)

#: How much the child lowers its CPU priority (``os.nice``; 19 is the lowest).
NICE = 10
#: Longest one request may take before the child is deemed stuck and replaced.
TIMEOUT_S = 60.0


class ExplainerError(EdgeSDKError):
    """The child could not explain a request (it died, hung, or failed to load the model)."""


class _Died(ExplainerError):
    """The child was gone when asked, or died before it answered."""


@dataclass(frozen=True)
class ModelKey:
    """Which model the child must load to explain the node's scores.

    Attributes:
        source: The bundle directory the node's runtime came from.
        backend, precision: The node runtime's engine and precision.
        sha256: Its artifact's digest (the child refuses another file).
        profile, trusted_keys: As the node loads models.
        threads: The child's inference threads (1: it shares the CPU with the node).
    """

    source: str
    backend: str
    precision: str
    sha256: str
    profile: str = "auto"
    threads: int | None = 1
    trusted_keys: tuple[str, ...] = ()

    @classmethod
    def of(cls, rt: Runtime, source: Path, profile: str, trusted_keys: Sequence[Path]) -> ModelKey:
        """The key of the node's runtime ``rt``, loaded from ``source``."""
        return cls(
            source=str(source),
            backend=rt.backend.name,
            precision=str(rt.artifact.precision),
            sha256=rt.artifact.sha256,
            profile=profile,
            trusted_keys=tuple(str(k) for k in trusted_keys),
        )


class ExplainerProcess:
    """A child process that explains alerts; started at the first request.

    Thread-safe: one request at a time. A child that dies or hangs is replaced
    at the next request; that request raises :class:`ExplainerError`.

    Args:
        nice: Added to the child's CPU niceness.
        timeout_s: Longest wait for one answer.
    """

    def __init__(self, nice: int = NICE, timeout_s: float = TIMEOUT_S) -> None:
        self.nice = nice
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None
        #: Children started (1 after the first request; more after a failure).
        self.starts = 0

    @property
    def pid(self) -> int | None:
        """The child's process id (None: not running)."""
        proc = self._proc
        return proc.pid if proc is not None and proc.is_alive() else None

    def explain(
        self, key: ModelKey, graphs: Sequence[Subgraph], scores: Sequence[float | None], top_k: int
    ) -> list[list[dict[str, Any]]]:
        """:func:`~edge_sdk.node.occlusion.explain` of ``graphs``, run by the child.

        A child that dies during the request (or had died unseen while idle)
        is replaced and asked once more.

        Raises:
            ExplainerError: A second child died too, a child did not answer
                within ``timeout_s``, or it could not load the model ``key`` names.
        """
        request = (key, list(graphs), list(scores), top_k)
        with self._lock:
            try:
                kind, value = self._ask(request)
            except _Died:
                kind, value = self._ask(request)
        if kind != "ok":
            raise ExplainerError(str(value))
        return value

    def _ask(self, request: tuple[Any, ...]) -> tuple[str, Any]:
        """One request to the (started if need be) child; its ``(kind, value)`` answer."""
        if self._proc is None or not self._proc.is_alive():
            self._start()
        conn = self._conn
        assert conn is not None
        try:
            conn.send(request)
            if not conn.poll(self.timeout_s):
                self._stop(kill=True)
                raise ExplainerError(f"no answer within {self.timeout_s:g} s; restarted")
            answer: tuple[str, Any] = conn.recv()
            return answer
        except (EOFError, OSError) as exc:
            proc = self._proc
            self._stop(kill=True)
            code = proc.exitcode if proc is not None else None
            raise _Died(f"the explainer process died (exit code {code})") from exc

    def close(self) -> None:
        """Stop the child: asked to exit, killed if it has not within 2 s."""
        with self._lock:
            self._stop(kill=False)

    def _start(self) -> None:
        self._stop(kill=True)
        # spawn, not fork: the node's threads (paho, the pump, the engine's pools)
        # would be copied mid-flight by a fork.
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=serve, args=(child, self.nice), name="edge-node-explainer", daemon=True
        )
        t0 = time.monotonic()
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        self.starts += 1
        log.info(
            "explainer process %d started in %.2f s (nice +%d)",
            proc.pid,
            time.monotonic() - t0,
            self.nice,
        )

    def _stop(self, kill: bool) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            try:
                if not kill:
                    conn.send(None)
            except OSError:
                pass
            conn.close()
        if proc is not None:
            proc.join(0.1 if kill else 2.0)
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)


def serve(conn: Connection, nice: int) -> None:
    """The child: answer ``(key, graphs, scores, top_k)`` requests until ``None`` or EOF."""
    from ..runtime import Runtime
    from .occlusion import explain

    with contextlib.suppress(OSError):  # a platform without it: the node's priority
        os.nice(nice)
    loaded: tuple[ModelKey, Runtime] | None = None
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        key, graphs, scores, top_k = request
        try:
            if loaded is None or loaded[0] != key:
                if loaded is not None:
                    loaded[1].close()
                    loaded = None
                rt = Runtime.load(
                    key.source,
                    profile=key.profile,
                    backend=key.backend,
                    threads=key.threads,
                    precision=key.precision,
                    trusted_keys=[Path(k) for k in key.trusted_keys] or None,
                )
                if rt.artifact.sha256 != key.sha256:
                    rt.close()
                    raise ExplainerError(
                        f"{key.source} holds another {key.backend} {key.precision} artifact "
                        "than the node serves (sha256 differs)"
                    )
                loaded = (key, rt)
            conn.send(("ok", explain(loaded[1], graphs, scores, top_k)))
        except Exception as exc:  # answered, never fatal: the node logs it
            conn.send(("error", f"{type(exc).__name__}: {exc}"[:500]))


__all__ = ["NICE", "ExplainerError", "ExplainerProcess", "ModelKey", "serve"]
