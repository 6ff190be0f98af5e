"""The client alone: its token, its address, and an agent that is not there."""

from __future__ import annotations

import socket
import time
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
    monkeypatch.setenv(hwprofile.TOKEN_ENV, TOKEN)
    assert hwprofile.DeviceClient(agent).info()["api"] == 1


def test_an_unreachable_agent_is_a_clear_error_after_retries() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        unreachable = client(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.01, connect_timeout_s=1)
        started = time.monotonic()
        with pytest.raises(hwprofile.AgentError, match=f"127.0.0.1:{port} is unreachable after 3 attempt\\(s\\)"):
            unreachable.info()
    assert time.monotonic() - started < 5
    with pytest.raises(hwprofile.InvalidOptionError, match="must look like http://HOST:PORT"):
        client("127.0.0.1:8765")
