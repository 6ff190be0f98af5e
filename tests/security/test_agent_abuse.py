"""Issue 10's attacks on a real device agent on loopback, by a client holding the token: each gets a 4xx JSON answer
(``error`` and ``kind``) within the stated limit, never names the agent's temp folder, and the next ordinary request
is served."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import hwprofile
from tests.hwprofile.backends.hostile_pt2 import pickled_weight
from tests.security.conftest import BODY_TIMEOUT_S, LIMITS, MEASURE_S, QUICK, REQUEST_TIMEOUT_S, TOKEN, call

Answer = tuple[int, Any, float]


def _raw(url: str, head: str, trickle: bytes = b"", every_s: float = 0.2) -> Answer:
    """Send ``head``, then ``trickle`` one byte every ``every_s`` until the agent answers; read until it closes."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=15) as sock:
        sock.sendall(head.encode())
        for byte in trickle:
            if select.select([sock], [], [], every_s)[0]:
                break
            sock.sendall(bytes([byte]))
        data = b""
        try:
            while chunk := sock.recv(65536):  # until the agent drops the connection
                data += chunk
        except ConnectionResetError:
            pass
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2]), time.monotonic() - started


def _post(query: str, model: str) -> Callable[[str, dict[str, Path]], Answer]:
    return lambda url, models: call(url, "POST", f"/v1/profile?{query}", models[model].read_bytes())


def _headers(url: str, length: int, query: str = "") -> str:
    return (f"POST /v1/profile?{query} HTTP/1.1\r\nHost: agent\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n")


# case: (request, status, kind, seconds it must be answered within)
CASES: dict[str, tuple[Callable[[str, dict[str, Path]], Answer], int, str, float]] = {
    "loop_trip_count_1e12": (_post(QUICK, "loop"), 422, "time_limit", REQUEST_TIMEOUT_S + 3),
    "threads_10000": (_post("threads=10000", "small"), 400, "invalid_option", 2),
    "input_1x3x100000x100000": (_post(QUICK, "huge"), 400, "invalid_option", REQUEST_TIMEOUT_S),
    "batch_10000000": (_post("batch=10000000", "small"), 400, "invalid_option", 2),
    "constant_of_shape_1e5x1e5": (_post(QUICK, "blow_up"), 422, "memory_limit", REQUEST_TIMEOUT_S + 3),
    "garbage_onnx": (_post(QUICK, "garbage"), 422, "invalid_model", REQUEST_TIMEOUT_S),
    "external_data_traversal": (_post(QUICK, "traversal"), 422, "invalid_model", REQUEST_TIMEOUT_S),
    "oversize_body": (_post(QUICK, "oversize"), 413, "invalid_model", 2),
    "wrong_token": (lambda url, models: call(url, "GET", "/v1/info", token="wrong-token-0123456789abcdef"),
                    401, "unauthorized", 2),
    "authorization_200kb": (lambda url, models: call(url, "GET", "/v1/info", token="a" * 200_000),
                            431, "headers_too_large", 2),
    "headers_over_16kb_never_ending": (lambda url, models: _raw(url, "GET /v1/info HTTP/1.1\r\nX-Big: " + "b" * 20_000),
                                       431, "headers_too_large", 2),
    "body_at_1_byte_per_0.2s": (lambda url, models: _raw(url, _headers(url, 100, QUICK), b"x" * 100),
                                408, "timeout", BODY_TIMEOUT_S + 2),
    "headers_at_1_byte_per_0.2s": (lambda url, models: _raw(url, "GET /v1/info HTTP/1.1\r\n", b"X-Slow: " * 20),
                                   408, "timeout", BODY_TIMEOUT_S + 2),
    "unavailable_backend_10mb_body_never_sent": (lambda url, models: _raw(url, _headers(url, 10**7,
                                                                                        "backend=tensorrt")),
                                                 400, "backend_unavailable", 2),
}


def _served(url: str, models: dict[str, Path]) -> None:
    status, answer, _ = call(url, "POST", f"/v1/profile?{QUICK}", models["small"].read_bytes())
    assert status == 200 and answer["runs"] >= 5, answer


@pytest.mark.parametrize("case", CASES)
def test_abuse_gets_a_4xx_json_in_time_and_the_agent_keeps_serving(case: str, agent: str,
                                                                   models: dict[str, Path]) -> None:
    send, status, kind, within = CASES[case]
    got, answer, seconds = send(agent, models)
    assert (got, answer["kind"]) == (status, kind), answer
    assert isinstance(answer["error"], str) and answer["error"] and "\n" not in answer["error"]
    assert "nas-agent-" not in answer["error"], answer["error"]  # never the agent's upload folder
    assert seconds < within, f"answered after {seconds:.1f} s"
    _served(agent, models)


def test_measurement_seconds_are_lowered_to_the_cap_whatever_the_client_asks(agent: str,
                                                                             models: dict[str, Path]) -> None:
    query = "min_seconds=15&max_seconds=15&warmup_seconds=15&min_runs=1000000000&target_rel_precision=none"
    status, answer, seconds = call(agent, "POST", f"/v1/profile?{query}", models["small"].read_bytes())
    assert status == 200, answer
    assert answer["agent"]["lowered"] == {"warmup_seconds": 15.0, "min_seconds": 15.0, "max_seconds": 15.0}
    # warm-up, then at most 1 + repeats_if_unstable attempts, each of MEASURE_S
    assert answer["finished_at"] - answer["started_at"] < (1 + answer["attempts"]) * MEASURE_S + 1
    assert seconds < REQUEST_TIMEOUT_S


def test_a_pickle_in_a_pt2_upload_never_runs(agent: str, pt2_agent: str, pt2_program: Path, models: dict[str, Path],
                                             tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    malicious = pickled_weight(pt2_program, tmp_path / "malicious.pt2", marker).read_bytes()
    gpu = torch.cuda.is_available()
    for url, backend, status, kind, message in (
            (agent, "torch-cuda", 400, "backend_unavailable", "--allow-pt2"),  # refused before the body is read
            (pt2_agent, "torch-cuda", 422 if gpu else 400, "invalid_model" if gpu else "backend_unavailable", ""),
            (pt2_agent, "torch-cpu", 422, "invalid_model", "marks '1.bias' as a pickled object")):  # read, refused
        got, answer, _ = call(url, "POST", f"/v1/profile?backend={backend}&{QUICK}", malicious)
        assert (got, answer["kind"]) == (status, kind) and message in answer["error"], answer
        assert not marker.exists(), "the payload ran on the agent"
    got, answer, _ = call(pt2_agent, "POST", f"/v1/profile?backend=torch-cpu&{QUICK}", pt2_program.read_bytes())
    assert got == 200 and answer["params"] == 64 * 10 + 10  # a clean program goes the same way and is measured
    _served(agent, models)
    with pytest.raises(Exception):  # noqa: B017 - the payload is real: torch.export.load runs it, then fails
        torch.export.load(tmp_path / "malicious.pt2")
    assert marker.read_text() == "the payload ran"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (CPU-only torch / no GPU)")
def test_gpu_backends_measure_within_the_measurement_process_limits(serve_agent: Callable[..., str], pt2_program: Path,
                                                                    models: dict[str, Path]) -> None:
    url = serve_agent(TOKEN, limits=hwprofile.remote.AgentLimits(request_timeout_s=120), allow_pt2=True)
    status, answer, _ = call(url, "POST", f"/v1/profile?backend=torch-cuda&{QUICK}", pt2_program.read_bytes())
    assert status == 200 and answer["peak_gpu_memory_bytes"] > 0, answer  # CUDA works under the memory cap
    if "cuda" in hwprofile.get_backend("ort").providers():
        status, answer, _ = call(url, "POST", f"/v1/profile?provider=cuda&{QUICK}", models["small"].read_bytes())
        assert status == 200 and answer["provider"] == "CUDAExecutionProvider", answer


def test_requests_past_the_pending_limit_get_503_busy(serve_agent: Callable[..., str],
                                                      models: dict[str, Path]) -> None:
    url = serve_agent(TOKEN, limits=hwprofile.remote.AgentLimits(**{**LIMITS, "max_pending": 1}))
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=15) as holder:
        holder.sendall(_headers(url, 1000, QUICK).encode() + b"x")  # an upload that has not finished: held
        time.sleep(0.3)
        status, answer, _ = _post(QUICK, "small")(url, models)
        assert (status, answer["kind"]) == (503, "busy") and "--max-pending" in answer["error"]
    time.sleep(0.3)  # the held upload was dropped: its place is free again
    status, answer, _ = _post(QUICK, "small")(url, models)
    assert status == 200 and answer["median_ms"] > 0
