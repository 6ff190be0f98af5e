"""`nas profile` and `nas device serve|info`, end to end."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import hwprofile
from nas.cli import main
from nas.config import default_cache_dir
from tests.hwprofile.conftest import Scripted, is_canary

TOKEN = "cli-token-0123456789abcdef"


def test_profile_prints_a_summary_and_caches(small_onnx: Path, capsys: pytest.CaptureFixture[str],
                                            scripted: Scripted) -> None:
    assert main(["profile", str(small_onnx), "--threads", "2", "--no-cache"]) == 0
    out = capsys.readouterr().out
    for text in ("=== Performance summary ===", "percentile(90%)", "median = ", "CV = ", "Session creation:",
                 "first run (cold)", "CPUExecutionProvider", "threads 2", "Parameters: ", "Normalised: median = ",
                 "x canary baseline"):
        assert text in out, text
    # steady runs, so the first measurement is kept whatever the machine; the canary runs at 2 ms, the model at 1 ms
    scripted(model_latency=lambda path, call: 2.0 if is_canary(path) else 1.0)
    assert main(["profile", str(small_onnx), "--backend", "scripted", "--threads", "2", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["cached"] is False and first["stable"] is True
    assert (first["canary"]["canary_ms"], first["canary"]["ratio"], first["canary"]["spread"]) == (2.0, 0.5, 0.0)
    assert first["drift"] == {"canary_baseline_ms": 2.0, "canary_ms": 2.0, "normalised_ms": 1.0, "drift": 0.0,
                              "latency_drift": False, "remeasured": 0}
    assert main(["profile", str(small_onnx), "--backend", "scripted", "--threads", "2", "--json"]) == 0
    cached = json.loads(capsys.readouterr().out)
    assert cached["cached"] is True and cached["threads"] == 2 and cached["started_at"] == first["started_at"]
    assert main(["profile", str(small_onnx), "--backend", "scripted", "--threads", "2", "--json", "--no-cache"]) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert fresh["cached"] is False
    assert {"median_ms", "p90_ms", "cv", "runs", "params", "macs", "size_bytes"} <= set(fresh)


@pytest.mark.parametrize(("args", "message"), [
    (["--provider", "tpu"], "Unknown ONNX Runtime execution provider 'tpu'; available here:"),
    (["--dim", "seq"], "--dim expects NAME=N"),
    (["--dim", "seq=4"], "dims \\['seq'\\] name no dynamic dimension"),
    (["--threads", "0"], "`threads` and `batch` must be >= 1"),
    (["--target", "http://127.0.0.1:9"], "No device token"),
    (["--target", "http://127.0.0.1:99999", "--token-file", __file__], "http://HOST:PORT \\(PORT in 1..65535\\)"),
])
def test_profile_errors_are_one_line(small_onnx: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                     message: str) -> None:
    assert main(["profile", str(small_onnx), "--no-cache", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert re.search(message, err), err


def test_device_serve_and_remote_profile(small_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("uvicorn", reason="the device agent needs the 'agent' extra (starlette, uvicorn)")
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    script = Path(sys.executable).with_name("nas")
    server = subprocess.Popen([str(script), "device", "serve", "--port", str(port), "--token-file", str(token_file)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = hwprofile.DeviceClient(url, TOKEN, retries=40, backoff_s=0.1)  # waits for the agent to start
        info = client.info()
        assert info["fingerprint"]["cores"] == os.cpu_count()
        assert main(["device", "info", "--target", url, "--token-file", str(token_file)]) == 0
        assert json.loads(capsys.readouterr().out)["api"] == 2
        assert main(["profile", str(small_onnx), "--target", url, "--token-file", str(token_file), "--json"]) == 0
        remote = json.loads(capsys.readouterr().out)
        assert remote["target"] == url and remote["runs"] >= 1 and remote["params"] > 0
        assert remote["canary"]["model_sha256"] == hwprofile.canary_sha256()  # measured beside it, by the agent
        # Whether that one was stable (and so cached) depends on the machine's noise: forget it. This one is stable
        # by its thresholds (the CV's, and the canary's), and stored where `nas profile` looks, under the key of its
        # setup (the thresholds are not in it), with the canary figures it keeps, so `nas profile` must find it.
        cache = Path(default_cache_dir()) / "measurements.sqlite"
        cache.unlink(missing_ok=True)
        baseline = dataclasses.replace(hwprofile.measure_baseline(target=client), threshold=1e9)
        seeded = hwprofile.profile(small_onnx, hwprofile.MeasureConfig(cv_threshold=1e9), cache=cache, target=client,
                                   baseline=baseline)
        assert seeded.latency.stable and seeded.cached is False and seeded.canary is not None
        assert main(["profile", str(small_onnx), "--target", url, "--token-file", str(token_file), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["started_at"] == seeded.started_at  # from the cache
        assert main(["profile", str(small_onnx), "--target", url, "--token-file", str(token_file)]) == 0
        out = capsys.readouterr().out
        assert f"(device agent {url})" in out and "from the measurement cache" in out
        token_file.write_text("wrong-token-0123456789")
        assert main(["profile", str(small_onnx), "--target", url, "--token-file", str(token_file), "--no-cache"]) == 2
        assert "rejected the token" in capsys.readouterr().err
    finally:
        server.send_signal(signal.SIGINT)
        output = server.communicate(timeout=20)[0]
    assert "Uvicorn running on" in output


def test_device_serve_refuses_a_bad_token_file(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("nas")
    (tmp_path / "short").write_text("abc")
    for name, message in (("absent", "Cannot read the token file"), ("short", "use at least 16")):
        done = subprocess.run([str(script), "device", "serve", "--token-file", str(tmp_path / name)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and message in done.stderr, done.stderr


@pytest.mark.parametrize("target", ["http://127.0.0.1:99999", "not-an-address"])
def test_device_info_with_a_bad_address_is_one_line(target: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "token").write_text(TOKEN)
    assert main(["device", "info", "--target", target, "--token-file", str(tmp_path / "token")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "http://HOST:PORT" in err


def test_device_info_against_a_server_that_is_not_an_agent_fails(not_an_agent: Callable[..., str], tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "token").write_text(TOKEN)
    url = not_an_agent(b'{"hello": 1}')
    assert main(["device", "info", "--target", url, "--token-file", str(tmp_path / "token")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"error: The device agent {url} answered GET /v1/info with {{\"hello\": 1}}")
