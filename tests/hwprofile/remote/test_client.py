"""The client alone: its token, its address, and an agent that is not there."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import hwprofile
from tests.hwprofile.remote.conftest import TOKEN, client


def test_token_comes_from_a_file_or_the_environment(agent: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(hwprofile.InvalidOptionError, match="No device token: give --token-file FILE or set "
                                                           "\\$NAS_DEVICE_TOKEN"):
        hwprofile.read_token()
    with pytest.raises(hwprofile.InvalidOptionError, match="Cannot read the token file .*absent"):
        hwprofile.read_token(tmp_path / "absent")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(hwprofile.InvalidOptionError, match="is empty"):
        hwprofile.read_token(tmp_path / "empty")
    (tmp_path / "token").write_text(TOKEN + "\n")
    assert hwprofile.read_token(tmp_path / "token") == TOKEN
    (tmp_path / "two-lines").write_text(f"  {TOKEN}  \nmade with secrets.token_urlsafe(32)\n")
    assert hwprofile.read_token(tmp_path / "two-lines") == TOKEN  # the first line only, so the agent accepts it
    assert hwprofile.DeviceClient(agent, hwprofile.read_token(tmp_path / "two-lines")).info()["api"] == 2
    (tmp_path / "accented").write_text("tökén-0123456789abcdef\n")
    with pytest.raises(hwprofile.InvalidOptionError, match="characters an HTTP header cannot carry"):
        hwprofile.read_token(tmp_path / "accented")
    monkeypatch.setenv(hwprofile.TOKEN_ENV, TOKEN)
    assert hwprofile.DeviceClient(agent).info()["api"] == 2


def test_an_unreachable_agent_is_a_clear_error_after_retries() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        unreachable = client(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.01, connect_timeout_s=1)
        started = time.monotonic()
        with pytest.raises(hwprofile.AgentError, match=f"127.0.0.1:{port} is unreachable after 3 attempt\\(s\\)"):
            unreachable.info()
    assert time.monotonic() - started < 5
    for url in ("127.0.0.1:8765", "http://127.0.0.1:99999", "http://127.0.0.1:0", "http://127.0.0.1:port"):
        with pytest.raises(hwprofile.InvalidOptionError, match="like http://HOST:PORT \\(PORT in 1..65535\\)"):
            client(url)


@pytest.mark.parametrize("info", [b'{"hello": 1}', b"[1, 2, 3]", b'"agent"', b"null",
                                  b'{"api": 1, "fingerprint": {}, "backends": {"ort": {"available": true}}}'])
def test_a_server_that_is_not_an_agent_is_a_one_line_agent_error(not_an_agent: Callable[..., str], info: bytes,
                                                                  small_onnx: Path) -> None:
    url = not_an_agent(info)
    with pytest.raises(hwprofile.AgentError) as raised:
        client(url).info()
    message = str(raised.value)
    assert f"{url} answered GET /v1/info with" in message and "not a device agent's info" in message
    assert "\n" not in message


@pytest.mark.parametrize("answer", [b'{"hello": 1}', b"[1, 2, 3]", b'{"median_ms": "fast"}'])
def test_an_answer_that_is_not_a_measurement_is_an_agent_error(not_an_agent: Callable[..., str], answer: bytes,
                                                                small_onnx: Path) -> None:
    info = b'{"api": 1, "fingerprint": {}, "backends": {"ort": {"available": true, "version": "1"}}}'
    url = not_an_agent(info, answer)
    with pytest.raises(hwprofile.AgentError, match=f"{url} answered POST /v1/profile with .*, not a measurement"):
        client(url).profile(small_onnx)
