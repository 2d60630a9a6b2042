"""The Open Inference Protocol server, through a real HTTP client on a free port."""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from http_helpers import Client, Reply

from edge_sdk.serving.http import InferenceServer

pytestmark = pytest.mark.requires_backend("onnxruntime")

SENSOR = "tep-sensor-gcn"
INFER = f"/v2/models/{SENSOR}/infer"
BINARY = "Inference-Header-Content-Length"


def window(seed: int, batch: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 52, 20), dtype=np.float32)


def x_input(x: np.ndarray) -> dict[str, Any]:
    return {"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}


def infer_body(x: np.ndarray, **extra: Any) -> dict[str, Any]:
    return {"inputs": [x_input(x)], **extra}


def output(reply: Reply, name: str = "out") -> np.ndarray:
    assert reply.status == 200, reply.body
    for o in reply.json()["outputs"]:
        if o["name"] == name:
            return np.asarray(o["data"], np.float32).reshape(o["shape"])
    raise AssertionError(f"no output {name!r} in {reply.body[:200]!r}")


def error(reply: Reply, status: int) -> str:
    assert reply.status == status, (reply.status, reply.body)
    assert reply.headers["content-type"] == "application/json"
    return str(reply.json()["error"])


def raw_exchange(port: int, data: bytes, timeout: float = 5) -> bytes:
    """Send raw bytes, return everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}(?:{{(.*)}})? (\S+)$", line)
        if not m:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


# -- metadata and health --------------------------------------------------------------------


def test_metadata_names_datatypes_and_symbolic_dims(
    sensor_runtime: Any, gcn_runtime: Any, serve: Callable[..., Any], client_for: Any
) -> None:
    s = serve(sensor_runtime)
    c = client_for(s)
    server = c.get("/v2").json()
    assert server["name"] == "edge-graph-sdk" and "binary_tensor_data" in server["extensions"]
    meta = c.get(f"/v2/models/{SENSOR}").json()
    assert meta["name"] == SENSOR and meta["versions"] == ["1.0.0"]
    assert meta["platform"] == "edge-graph-sdk/onnxruntime"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 52, 20]}]
    assert meta["outputs"] == [{"name": "out", "datatype": "FP32", "shape": [-1, 22]}]
    assert c.get(f"/v2/models/{SENSOR}/versions/1.0.0").json() == meta
    assert "1.0.0" in error(c.get(f"/v2/models/{SENSOR}/versions/9.9.9"), 404)

    g = serve(gcn_runtime)
    gmeta = client_for(g).get("/v2/models/tiny-gcn").json()
    assert gmeta["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [-1, 8]},
        {"name": "edge_index", "datatype": "INT64", "shape": [2, -1]},
    ]


def test_live_at_once_ready_only_after_warmup(sensor_runtime: Any, client_for: Any) -> None:
    gate = threading.Event()

    class SlowStart:
        def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            gate.wait(10)
            return sensor_runtime.infer(inputs)

    server = InferenceServer(sensor_runtime, predictor=SlowStart())
    starter = threading.Thread(target=server.start)
    starter.start()
    try:
        deadline = time.monotonic() + 10
        while server.port == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        c = Client(server.port)
        assert c.get("/v2/health/live").json() == {"live": True}
        not_ready = c.get("/v2/health/ready")
        assert not_ready.status == 503 and not_ready.json() == {"ready": False}
        assert c.get(f"/v2/models/{SENSOR}/ready").status == 503
        assert c.post(INFER, infer_body(window(0))).status == 503
        gate.set()
        starter.join(10)
        assert c.get("/v2/health/ready").json() == {"ready": True}
        assert c.get(f"/v2/models/{SENSOR}/ready").status == 200
        c.close()
    finally:
        gate.set()
        starter.join(10)
        server.stop()


# -- inference --------------------------------------------------------------------------------


def test_static_inference_equals_runtime(
    sensor_runtime: Any, serve: Callable[..., Any], client_for: Any
) -> None:
    c = client_for(serve(sensor_runtime))
    x = window(1, batch=3)
    reply = c.post(INFER, infer_body(x, id="req-7"))
    doc = reply.json()
    assert doc["model_name"] == SENSOR and doc["model_version"] == "1.0.0"
    assert doc["id"] == "req-7"
    assert doc["outputs"][0]["datatype"] == "FP32" and doc["outputs"][0]["shape"] == [3, 22]
    np.testing.assert_allclose(output(reply), sensor_runtime.infer({"x": x})["out"], atol=1e-5)
    # Nested data is accepted too (row-major), and the versioned route answers the same.
    nested = {"inputs": [{**x_input(x), "data": x.tolist()}]}
    again = c.post(f"/v2/models/{SENSOR}/versions/1.0.0/infer", nested)
    np.testing.assert_allclose(output(again), output(reply), atol=1e-6)


def test_dynamic_gcn_inference_with_int64_edges(
    gcn_runtime: Any, serve: Callable[..., Any], client_for: Any
) -> None:
    c = client_for(serve(gcn_runtime))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((11, 8), dtype=np.float32)
    edges = rng.integers(0, 11, size=(2, 30)).astype(np.int64)
    body = {
        "inputs": [
            {"name": "x", "shape": [11, 8], "datatype": "FP32", "data": x.ravel().tolist()},
            {"name": "edge_index", "shape": [2, 30], "datatype": "INT64", "data": edges.tolist()},
        ]
    }
    reply = c.post("/v2/models/tiny-gcn/infer", body)
    ref = gcn_runtime.infer({"x": x, "edge_index": edges})
    (name,) = ref
    np.testing.assert_allclose(output(reply, name), ref[name], atol=1e-5)
    # Floats where INT64 is declared are refused, not truncated.
    body["inputs"][1]["data"] = (edges + 0.5).tolist()
    assert "edge_index" in error(c.post("/v2/models/tiny-gcn/infer", body), 400)


class TwoOutputs:
    """A model source and predictor with two outputs (filter tests), over the sensor runtime."""

    def __init__(self, rt: Any) -> None:
        from edge_sdk.io_contract import TensorSpec

        self.rt = rt
        extra = TensorSpec(name="probs", dtype="float32", shape=["batch_size", 22], level="batch")
        self.manifest = rt.manifest.model_copy(update={"outputs": [*rt.manifest.outputs, extra]})

    def describe(self) -> dict[str, Any]:
        return dict(self.rt.describe())

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.rt.infer(inputs)["out"]
        e = np.exp(out - out.max(axis=1, keepdims=True))
        return {"out": out, "probs": e / e.sum(axis=1, keepdims=True)}


def test_output_filter_returns_only_the_named_outputs(
    sensor_runtime: Any, serve: Callable[..., Any], client_for: Any
) -> None:
    two = TwoOutputs(sensor_runtime)
    c = client_for(serve(two, predictor=two))
    x = window(2)
    both = c.post(INFER, infer_body(x)).json()["outputs"]
    assert [o["name"] for o in both] == ["out", "probs"]
    only = c.post(INFER, infer_body(x, outputs=[{"name": "probs"}]))
    assert [o["name"] for o in only.json()["outputs"]] == ["probs"]
    np.testing.assert_allclose(output(only, "probs"), two.infer({"x": x})["probs"], atol=1e-6)
    msg = error(c.post(INFER, infer_body(x, outputs=[{"name": "logits"}])), 400)
    assert "logits" in msg and "probs" in msg


# -- bad requests -------------------------------------------------------------------------------


def test_bad_requests_get_400_naming_the_problem(
    sensor_runtime: Any, serve: Callable[..., Any], client_for: Any
) -> None:
    c = client_for(serve(sensor_runtime))
    x = window(4)
    assert "JSON" in error(c.post(INFER, b'{"inputs": [}'), 400)
    nan_body = json.dumps(infer_body(x)).replace(str(x.ravel()[5].item()), "NaN", 1)
    assert "NaN" in error(c.post(INFER, nan_body.encode()), 400)
    assert "inputs" in error(c.post(INFER, {"id": "no inputs"}), 400)

    wrong_type = {"inputs": [{**x_input(x), "datatype": "FP64"}]}
    msg = error(c.post(INFER, wrong_type), 400)
    assert "'x'" in msg and "FP32" in msg and "FP64" in msg

    short = {"inputs": [{**x_input(x), "data": x.ravel()[:-1].tolist()}]}
    msg = error(c.post(INFER, short), 400)
    assert "1039" in msg and "1040" in msg and "[1, 52, 20]" in msg

    bad_shape = {"inputs": [{**x_input(x[:, :51]), "shape": [1, 51, 20]}]}
    assert "x" in error(c.post(INFER, bad_shape), 400)

    unknown = {"inputs": [x_input(x), {**x_input(x), "name": "edge_index"}]}
    msg = error(c.post(INFER, unknown), 400)
    assert "edge_index" in msg and "['x']" in msg

    strings = {"inputs": [{**x_input(x), "data": ["1.0"] * 1040}]}
    assert "'x'" in error(c.post(INFER, strings), 400)

    # The connection survived all of it.
    np.testing.assert_allclose(
        output(c.post(INFER, infer_body(x))), sensor_runtime.infer(x)["out"], atol=1e-5
    )


def test_wire_takes_inputs_as_the_metadata_publishes_them(
    sensor_runtime: Any, serve: Callable[..., Any], client_for: Any
) -> None:
    c = client_for(serve(sensor_runtime))
    assert c.get(f"/v2/models/{SENSOR}").json()["inputs"][0]["shape"] == [-1, 52, 20]
    x = window(20)[0]  # one [52, 20] window without its batch dim
    rank2 = {"inputs": [{"name": "x", "shape": [52, 20], "datatype": "FP32", "data": x.tolist()}]}
    msg = error(c.post(INFER, rank2), 400)
    assert msg.startswith("x: expected rank 3 [-1, 52, 20]") and "received rank 2 [52, 20]" in msg
    raw = x.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [52, 20],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ]
        }
    ).encode()
    binary = c.post(INFER, header + raw, headers={BINARY: str(len(header))})
    assert error(binary, 400).startswith("x: expected rank 3")

    # Booleans are refused, never read as 0.0 / 1.0: all of them, or one among numbers.
    flat = x.ravel().tolist()
    for data in ([True] * 1040, [*flat[:-1], True], [[True, *flat[1:20]], *x[1:].tolist()]):
        body = {"inputs": [{"name": "x", "shape": [1, 52, 20], "datatype": "FP32", "data": data}]}
        msg = error(c.post(INFER, body), 400)
        assert "'x'" in msg and "booleans" in msg, msg
    as_bool = {"inputs": [{"name": "x", "shape": [1, 52, 20], "datatype": "BOOL", "data": data}]}
    assert "expects FP32" in error(c.post(INFER, as_bool), 400)
    # The same window with its batch dim is served.
    np.testing.assert_allclose(
        output(c.post(INFER, infer_body(x[None]))), sensor_runtime.infer(x[None])["out"], atol=1e-5
    )


def test_routes_models_and_methods(
    sensor_runtime: Any, serve: Callable[..., Any], client_for: Any
) -> None:
    c = client_for(serve(sensor_runtime))
    msg = error(c.post("/v2/models/resnet/infer", infer_body(window(0))), 404)
    assert "resnet" in msg and SENSOR in msg
    assert SENSOR in error(c.get("/v2/models/resnet"), 404)
    assert "/v3/x" in error(c.get("/v3/x"), 404)
    reply = c.get(INFER)
    assert "POST" in error(reply, 405) and reply.headers["allow"] == "POST"
    assert error(c.request("DELETE", "/v2"), 405)


def test_body_over_limit_is_refused_before_reading(
    sensor_runtime: Any, serve: Callable[..., Any]
) -> None:
    s = serve(sensor_runtime, max_body_bytes=1024)
    started = time.monotonic()
    answer = raw_exchange(
        s.port,
        f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n{{}}".encode(),
    )
    assert time.monotonic() - started < 3  # answered without waiting for the 1 GB
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"Connection: close" in head
    assert "1024" in json.loads(body)["error"]
    no_length = raw_exchange(s.port, f"POST {INFER} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert no_length.startswith(b"HTTP/1.1 411")


def test_expect_100_continue(sensor_runtime: Any, serve: Callable[..., Any]) -> None:
    s = serve(sensor_runtime, max_body_bytes=100_000)
    head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
    over = raw_exchange(s.port, (head + "Content-Length: 200000\r\n\r\n").encode())
    assert over.startswith(b"HTTP/1.1 413") and b"100 Continue" not in over
    body = json.dumps(infer_body(window(9))).encode()
    with socket.create_connection(("127.0.0.1", s.port), timeout=5) as sock:
        sock.sendall((head + f"Content-Length: {len(body)}\r\n\r\n").encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue")  # sent at once
        sock.sendall(body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")


def test_at_the_cap_a_new_connection_evicts_an_idle_one_and_503_only_when_all_are_busy(
    sensor_runtime: Any, serve: Callable[..., Any]
) -> None:
    entered, release = threading.Event(), threading.Event()

    class Held:
        """Holds requests (not the warm-up) until released: a slot busy answering."""

        hold = False

        def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            if self.hold:
                entered.set()
                release.wait(20)
            return sensor_runtime.infer(inputs)

    held = Held()
    s = serve(sensor_runtime, predictor=held, max_connections=1)
    held.hold = True
    first = Client(s.port)
    assert first.get("/v2/health/live").status == 200  # holds the only slot (keep-alive, idle)
    second = Client(s.port)
    assert second.get("/v2/health/live").status == 200  # took the idle connection's slot
    with pytest.raises((OSError, http.client.HTTPException)):
        first.get("/v2/health/live")  # evicted: closed by the server
    first.close()

    # A complete request being answered keeps its slot: now a new connection gets 503.
    answers: list[Reply] = []
    busy = threading.Thread(
        target=lambda: answers.append(second.post(INFER, infer_body(window(3))))
    )
    busy.start()
    try:
        assert entered.wait(10)
        refused = raw_exchange(s.port, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _, body = refused.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in head
        assert "connections" in json.loads(body)["error"]
    finally:
        release.set()
        busy.join(20)
    np.testing.assert_allclose(
        output(answers[0]), sensor_runtime.infer(window(3))["out"], atol=1e-5
    )
    s.stop()  # closes the idle keep-alive connection too
    with pytest.raises((OSError, http.client.HTTPException)):
        second.get("/v2/health/live")
    second.close()


def test_bearer_token_guards_everything_but_health(
    sensor_runtime: Any, serve: Callable[..., Any], client_for: Any
) -> None:
    c = client_for(serve(sensor_runtime, token="s3cret"))
    assert c.get("/v2/health/live").status == 200
    assert c.get("/v2/health/ready").status == 200
    for path in ("/v2", f"/v2/models/{SENSOR}", "/metrics"):
        assert c.get(path).status == 401
    assert c.get("/v2", headers={"Authorization": "Bearer wrong"}).status == 401
    reply = c.post(INFER, infer_body(window(5)))
    assert "Bearer" in error(reply, 401) and reply.headers["www-authenticate"].startswith("Bearer")
    auth = {"Authorization": "Bearer s3cret"}
    assert c.get(f"/v2/models/{SENSOR}", headers=auth).status == 200
    ok = c.post(INFER, infer_body(window(5)), headers=auth)
    np.testing.assert_allclose(output(ok), sensor_runtime.infer(window(5))["out"], atol=1e-5)


def test_binary_tensor_request_and_response(
    sensor_runtime: Any, serve: Callable[..., Any], client_for: Any
) -> None:
    c = client_for(serve(sensor_runtime))
    x = window(6, batch=2)
    raw = x.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 52, 20],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    reply = c.post(
        INFER,
        header + raw,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert reply.status == 200, reply.body
    n = int(reply.headers["inference-header-content-length"])
    doc = json.loads(reply.body[:n])
    (out,) = doc["outputs"]
    assert "data" not in out and out["shape"] == [2, 22]
    size = out["parameters"]["binary_data_size"]
    assert size == 2 * 22 * 4 == len(reply.body) - n
    got = np.frombuffer(reply.body[n:], "<f4").reshape(2, 22)
    np.testing.assert_allclose(got, sensor_runtime.infer(x)["out"], atol=1e-5)

    # Binary in, JSON out (no binary_data_output).
    mixed_header = json.dumps({"inputs": json.loads(header)["inputs"]}).encode()
    mixed = c.post(
        INFER,
        mixed_header + raw,
        headers={"Inference-Header-Content-Length": str(len(mixed_header))},
    )
    np.testing.assert_allclose(output(mixed), got, atol=1e-6)

    # A binary section that does not match the declared size.
    short = c.post(
        INFER,
        header + raw[:-4],
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert "binary" in error(short, 400)


class Exploding:
    def __init__(self, rt: Any) -> None:
        self.rt, self.calls = rt, 0

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.calls == 2:  # the first call is the warm-up
            raise RuntimeError("engine fell over")
        return self.rt.infer(inputs)


def test_internal_error_is_500_and_the_server_keeps_serving(
    sensor_runtime: Any, serve: Callable[..., Any], client_for: Any
) -> None:
    c = client_for(serve(sensor_runtime, predictor=Exploding(sensor_runtime)))
    msg = error(c.post(INFER, infer_body(window(7))), 500)
    assert "internal error" in msg and "fell over" not in msg
    assert c.post(INFER, infer_body(window(7))).status == 200


# -- concurrency and metrics ------------------------------------------------------------------


def test_32_concurrent_clients_each_get_their_own_result(
    sensor_runtime: Any, serve: Callable[..., Any], client_for: Any
) -> None:
    from edge_sdk.serving.batcher import BatcherConfig

    # A generous delay so that merging does not depend on the machine's speed.
    s = serve(sensor_runtime, batcher=BatcherConfig(max_batch=32, max_delay_ms=20))
    n = 32
    windows = [window(100 + i) for i in range(n)]
    results: list[np.ndarray | None] = [None] * n
    barrier = threading.Barrier(n)
    failures: list[BaseException] = []

    def one(i: int) -> None:
        client = Client(s.port)
        try:
            client.get("/v2/health/ready")  # connect before the barrier
            barrier.wait(10)
            results[i] = output(client.post(INFER, infer_body(windows[i])))
        except BaseException as exc:
            failures.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures[:3]
    expected = sensor_runtime.infer(np.concatenate(windows))["out"]
    for i in range(n):
        np.testing.assert_allclose(results[i], expected[i : i + 1], atol=1e-5)

    text = client_for(s).get("/metrics").body.decode()
    assert metric(text, "edge_sdk_http_requests_total", model=SENSOR, code="200") >= n
    assert metric(text, "edge_sdk_http_request_seconds_count") >= n
    assert 'edge_sdk_model_info{backend="onnxruntime"' in text
    assert s.batcher is not None and s.predictor is s.batcher  # the default predictor
    assert metric(text, "edge_sdk_batch_size_count") > 0
    assert metric(text, "edge_sdk_batch_size_sum") >= n
    # Requests were merged: fewer backend calls than requests (+1 for the warm-up).
    assert 0 < s.batcher.stats["batches"] < n + 1


def test_result_cache_answers_a_repeated_request(
    sensor_runtime: Any, serve: Callable[..., Any], client_for: Any
) -> None:
    s = serve(sensor_runtime, cache_bytes=1 << 20)
    c = client_for(s)
    first, again = (output(c.post(INFER, infer_body(window(11)))) for _ in range(2))
    np.testing.assert_array_equal(first, again)
    other = output(c.post(INFER, infer_body(window(12))))
    assert not np.allclose(first, other)
    text = c.get("/metrics").body.decode()
    assert metric(text, "edge_sdk_cache_hits_total") == 1
    assert metric(text, "edge_sdk_cache_misses_total") >= 2  # the two distinct windows


# -- CLI ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        try:
            c = Client(port, timeout=2)
            ok = c.get("/v2/health/ready").status == 200
            c.close()
            if ok:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("server did not become ready")


@pytest.mark.parametrize("command", ["serve", "run --http"])
def test_cli_serves_until_sigterm(sensor_bundle: Path, tmp_path: Path, command: str) -> None:
    port = free_port()
    if command == "serve":
        args = ["serve", str(sensor_bundle), "--port", str(port), "--threads", "1"]
        args += ["--request-timeout-s", "1", "--max-connections", "16"]
    else:
        args = ["run", "--bundle", str(sensor_bundle), "--state-dir", str(tmp_path / "state")]
        args += ["--http", str(port), "--threads", "1", "--telemetry-interval", "0"]
    env = {**os.environ, "EDGE_SDK_HTTP_TOKEN": "tok"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_sdk.cli.node_cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        wait_ready(port, proc)
        c = Client(port)
        assert c.post(INFER, infer_body(window(8))).status == 401
        reply = c.post(INFER, infer_body(window(8)), headers={"Authorization": "Bearer tok"})
        assert output(reply).shape == (1, 22)
        c.close()
        if command == "serve":  # the limit reached the server: a stalled body gets 408
            head = f"POST {INFER} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok\r\n"
            stalled = raw_exchange(port, (head + "Content-Length: 10\r\n\r\n{").encode())
            assert stalled.startswith(b"HTTP/1.1 408") and b"within 1 s" in stalled
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert f"127.0.0.1:{port}" in out.decode()


def test_port_in_use_is_a_one_line_user_error(sensor_bundle: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["serve", str(sensor_bundle), "--port", str(port)]
        proc = subprocess.run(
            [sys.executable, "-m", "edge_sdk.cli.node_cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 3, proc.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_prometheus_client_is_imported_only_when_serving() -> None:
    from edge_sdk._optional import install_hint

    assert install_hint("prometheus_client") == 'pip install "edge-graph-sdk[serve]"'
    code = (
        "import sys, edge_sdk.runtime, edge_sdk.serving.http, edge_sdk.cli.node_cli\n"
        "assert 'prometheus_client' not in sys.modules, 'imported too early'\n"
        "from edge_sdk.serving.metrics import ServingMetrics\n"
        "ServingMetrics()\n"
        "assert 'prometheus_client' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
