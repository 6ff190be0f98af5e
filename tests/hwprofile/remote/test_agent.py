"""The device agent as a real HTTP server on 127.0.0.1, with its client."""

from __future__ import annotations

import dataclasses
import http.client
import json
import re
import select
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import hwprofile
from tests.hwprofile.conftest import NoisyBackend, Scripted, SteadyBackend
from tests.hwprofile.remote.conftest import LIMIT, TOKEN, client

agent_module = pytest.importorskip("hwprofile.remote.agent", reason="the device agent needs the 'agent' extra")
create_app = agent_module.create_app

QUICK = {"min_runs": "20", "min_seconds": "0.02", "warmup_seconds": "0.005"}


def _call(url: str, method: str, path: str, body: bytes | None = None, token: str | None = TOKEN,
          content_type: str = "application/octet-stream") -> tuple[int, Any]:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_every_request_needs_the_bearer_token(agent: str, small_onnx: Path) -> None:
    for token in (None, "", "wrong-token-0123456789abcdef", TOKEN[:-1]):
        status, body = _call(agent, "GET", "/v1/info", token=token)
        assert status == 401 and body["kind"] == "unauthorized"
        status, _ = _call(agent, "POST", "/v1/profile", small_onnx.read_bytes(), token=token)
        assert status == 401
    status, info = _call(agent, "GET", "/v1/info")
    assert status == 200 and info["fingerprint"] == hwprofile.device_fingerprint()
    assert info["backends"]["ort"]["available"] and "cpu" in info["backends"]["ort"]["providers"]
    assert info["max_body_bytes"] == LIMIT == info["limits"]["max_body_bytes"]
    assert info["limits"]["max_threads"] == hwprofile.device_fingerprint()["usable_cores"]
    torch_cuda = info["backends"]["torch-cuda"]  # refused without allow_pt2, whether or not a GPU is here
    assert torch_cuda["available"] is False and torch_cuda["reason"].startswith(agent_module.PT2_REFUSED)
    with pytest.raises(hwprofile.AgentError, match="rejected the token \\(HTTP 401\\)"):
        client(agent, token="wrong-token-0123456789abcdef").info()


def test_remote_measurement_has_the_keys_of_a_local_one(agent: str, small_onnx: Path) -> None:
    config = hwprofile.MeasureConfig.from_query({**QUICK, "threads": "2", "batch": "3"})
    remote = client(agent).profile(small_onnx, config)
    local = hwprofile.measure_local(small_onnx, config)
    assert set(remote.to_dict()) == set(local.to_dict()) | {"agent"}
    assert remote.target == agent and remote.setup["threads"] == 2 and remote.setup["batch"] == 3
    assert remote.model == local.model and remote.model_sha256 == local.model_sha256
    assert remote.latency.runs >= 20 and remote.latency.median_ms > 0


def test_garbage_gets_a_json_error_and_the_agent_keeps_serving(agent: str, small_onnx: Path) -> None:
    status, body = _call(agent, "POST", "/v1/profile?" + "&".join(f"{k}={v}" for k, v in QUICK.items()),
                         b"\x00not an onnx model" * 50)
    assert status == 422 and body["kind"] == "invalid_model"
    assert "the uploaded model is not a valid ONNX model" in body["error"]
    truncated = small_onnx.read_bytes()[:500]
    status, body = _call(agent, "POST", "/v1/profile", truncated)
    assert status == 422 and "uploaded model" in body["error"]
    status, body = _call(agent, "POST", "/v1/profile", b"")
    assert status == 400 and "empty" in body["error"]
    status, body = _call(agent, "POST", "/v1/profile", small_onnx.read_bytes(), content_type="application/json")
    assert status == 415 and "application/octet-stream" in body["error"]
    status, body = _call(agent, "GET", "/v1/nothing")
    assert status == 404 and "error" in body
    status, body = _call(agent, "POST", "/v1/profile?" + "&".join(f"{k}={v}" for k, v in QUICK.items()),
                         small_onnx.read_bytes())
    assert status == 200 and body["runs"] >= 20
    bad = small_onnx.parent / "bad.onnx"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(hwprofile.InvalidModelError, match="HTTP 422.*not a valid ONNX model"):
        client(agent).profile(bad)


@pytest.mark.parametrize(("query", "message"), [
    ("threads=0", "`threads` and `batch` must be >= 1"),
    ("speed=11", "Unknown option\\(s\\) 'speed'"),
    ("backend=onnx", "Unknown backend 'onnx'"),
    ("provider=tpu", "Unknown ONNX Runtime execution provider 'tpu'"),
])
def test_bad_options_get_400_naming_them(agent: str, small_onnx: Path, query: str, message: str) -> None:
    status, body = _call(agent, "POST", f"/v1/profile?{query}", small_onnx.read_bytes())
    assert status == 400, body
    assert re.search(message, body["error"])


def test_bodies_over_the_limit_get_413_without_being_read_whole(agent: str, small_onnx: Path, tmp_path: Path) -> None:
    port = int(agent.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:  # declared too large: refused on headers
        sock.sendall(f"POST /v1/profile HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: "
                     f"application/octet-stream\r\nContent-Length: {LIMIT + 1}\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:  # chunked, no length: counted as it streams
        sock.sendall(f"POST /v1/profile HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: "
                     f"application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        chunk, sent = b"x" * 16384, 0
        try:
            while sent < 64 * LIMIT and not select.select([sock], [], [], 0.01)[0]:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent answered and closed while this chunk was on its way
        answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413"), answer
        assert LIMIT < sent < 8 * LIMIT  # answered soon after the limit, long before the body would have ended
    big = tmp_path / "big.onnx"
    big.write_bytes(b"\x00" * (LIMIT + 1))
    with pytest.raises(hwprofile.InvalidModelError, match=f"over the device agent's limit of {LIMIT} bytes"):
        client(agent).profile(big)  # the client checks the limit from /v1/info before uploading
    status, _ = _call(agent, "GET", "/v1/info")
    assert status == 200


def test_concurrent_clients_are_measured_one_at_a_time(agent: str, small_onnx: Path) -> None:
    config = hwprofile.MeasureConfig.from_query({**QUICK, "min_seconds": "0.4"})
    results: list[hwprofile.Measurement] = []
    errors: list[BaseException] = []

    def measure() -> None:
        try:
            results.append(client(agent).profile(small_onnx, config))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=measure) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.1)
    asked = time.monotonic()
    status, info = _call(agent, "GET", "/v1/info")  # the event loop answers while a measurement runs
    info_s = time.monotonic() - asked
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 4
    assert status == 200 and info["busy"] is True and info_s < 0.4  # within one measurement, not after all
    spans = sorted((r.started_at, r.finished_at) for r in results)
    assert all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:])), spans
    assert all(end - start >= 0.4 for start, end in spans)
    assert max(r.extra["agent"]["queued_s"] for r in results) >= 3 * 0.4  # the last one waited for three others


def test_short_tokens_are_refused() -> None:
    with pytest.raises(hwprofile.InvalidOptionError, match="use at least 16"):
        create_app("short")


def test_profile_checks_the_model_before_uploading_it(agent: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage" * 10)
    with pytest.raises(hwprofile.InvalidModelError, match="bad.onnx' is not a valid ONNX model"):
        hwprofile.profile(bad, target=client(agent))


def test_remote_measurements_go_through_the_cache(serve_agent: Callable[..., str], scripted: Scripted,
                                                  small_onnx: Path, tmp_path: Path) -> None:
    config = scripted(backend=SteadyBackend)  # steady on any machine; importable, so the agent's child runs it
    url = serve_agent(TOKEN)  # an agent started while 'scripted' is registered, so it offers it
    remote = client(url)
    cache = hwprofile.MeasurementCache(tmp_path / "remote.sqlite")
    first = hwprofile.profile(small_onnx, config, cache=cache, target=remote)
    again = hwprofile.profile(small_onnx, config, cache=cache, target=remote)
    assert first.cached is False and first.latency.stable and first.extra["agent"]["body_bytes"] > 0
    assert first.latency.median_ms == 1.0  # the script ran, in the agent's measurement process
    assert again.cached is True and again.latency == first.latency and again.started_at == first.started_at
    assert again.target == url and len(cache) == 1
    scripted(backend=NoisyBackend)  # the agent's runs turn noisy: that result is not kept
    batch = dataclasses.replace(config, batch=2)
    flagged = hwprofile.profile(small_onnx, batch, cache=cache, target=remote)
    assert flagged.latency.stable is False and len(cache) == 1
    assert hwprofile.profile(small_onnx, batch, cache=cache, target=remote).cached is False
    with pytest.raises(hwprofile.BackendUnavailableError, match="cannot use backend 'tensorrt'.*Usable there: ort"):
        hwprofile.profile(small_onnx, hwprofile.MeasureConfig(backend="tensorrt"), cache=cache, target=remote)


def test_a_backend_its_measurement_process_cannot_import_is_not_offered(serve_agent: Callable[..., str],
                                                                      scripted: Scripted, small_onnx: Path) -> None:
    config = scripted(lambda call: 1.0)  # a class made inside a function: the child could not unpickle it
    url = serve_agent(TOKEN)
    assert "define it at a module's top level" in client(url).info()["backends"]["scripted"]["reason"]
    status, body = _call(url, "POST", "/v1/profile?backend=scripted", small_onnx.read_bytes())
    assert status == 400 and body["kind"] == "backend_unavailable"
    with pytest.raises(hwprofile.BackendUnavailableError, match="cannot use backend 'scripted'"):
        hwprofile.profile(small_onnx, config, target=client(url))


def test_error_kinds_come_back_as_their_exceptions(agent: str, small_onnx: Path) -> None:
    status, body = _call(agent, "POST", "/v1/profile?provider=tpu", small_onnx.read_bytes())
    assert status == 400 and body["kind"] == "backend_unavailable"
    with pytest.raises(hwprofile.BackendUnavailableError, match="HTTP 400.*execution provider 'tpu'"):
        client(agent).profile(small_onnx, hwprofile.MeasureConfig(provider="tpu"))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_the_agent_serves_https_and_the_client_checks_its_certificate(serve_agent: Callable[..., str],
                                                                      small_onnx: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    url = serve_agent(TOKEN, ssl_certfile=str(cert), ssl_keyfile=str(key)).replace("http://", "https://")
    with pytest.raises(hwprofile.AgentError, match="failed the TLS handshake: CERTIFICATE_VERIFY_FAILED .*SSL_CERT_FILE"):
        client(url).info()  # a certificate nobody vouches for is refused
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    assert client(url).profile(small_onnx, hwprofile.MeasureConfig.from_query(QUICK)).latency.runs >= 20
    with pytest.raises(hwprofile.AgentError, match="HTTP 431"):  # answered over TLS too, not reset
        client(url, token="a" * 200_000).info()
