"""`nas device serve` as a process: bad settings are one-line errors at start-up, and SIGTERM stops it at once, the
measurement it is running included."""

from __future__ import annotations

import http.client
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import hwprofile
from nas.cli import main
from tests.security.conftest import QUICK, TOKEN, call


@pytest.mark.parametrize(("args", "message"), [
    (["--port", "99999"], "--port must be in 1..65535, but got 99999"),
    (["--port", "0"], "--port must be in 1..65535"),
    (["--max-body-mb", "-1"], "--max-body-mb must be a number of MiB in \\(0, "),
    (["--max-body-mb", "0"], "--max-body-mb must be"),
    (["--max-body-mb", "nan"], "--max-body-mb must be"),
    (["--max-body-mb", "1e12"], "max_body_bytes \\(--max-body-mb\\)` must be in \\[1, max_memory_bytes="),
    (["--max-memory-mb", "100", "--max-body-mb", "200"], "max_body_bytes \\(--max-body-mb\\)"),
    (["--max-input-mb", "1e9"], "max_input_bytes \\(--max-input-mb\\)"),
    (["--max-batch", "0"], "max_batch \\(--max-batch\\)` must be >= 1"),
    (["--request-timeout", "0"], "request_timeout_s \\(--request-timeout\\)` must be a finite number"),
    (["--body-timeout", "inf"], "body_timeout_s \\(--body-timeout\\)"),
    (["--ssl-certfile", "cert.pem"], "HTTPS needs both --ssl-certfile and --ssl-keyfile"),
    (["--ssl-certfile", "cert.pem", "--ssl-keyfile", "key.pem"], "--ssl-certfile 'cert.pem' does not exist"),
])
def test_bad_settings_are_one_line_errors_at_start_up(args: list[str], message: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "token").write_text(TOKEN)
    assert main(["device", "serve", "--token-file", str(tmp_path / "token"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert re.search(message, err), err


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process (Linux /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if fields[0] != "Z":  # a zombie has exited
            parents[int(stat.parent.name)] = int(fields[1])
    return parents


def _descendants(pid: int) -> dict[int, int]:
    """The processes below ``pid``, each with its depth (1: a child)."""
    parents, found, frontier, depth = _parents(), {}, {pid}, 1
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found.update(dict.fromkeys(frontier, depth))
        depth += 1
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")
def test_sigterm_stops_the_agent_and_its_measurement_promptly(models: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    agent = subprocess.Popen([str(Path(sys.executable).with_name("nas")), "device", "serve", "--port", str(port),
                              "--token-file", str(tmp_path / "token"), "--request-timeout", "120"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        hwprofile.DeviceClient(url, TOKEN, retries=60, backoff_s=0.2).info()  # waits for the agent to start
        outcome: list[object] = []

        def measure() -> None:
            try:
                outcome.append(call(url, "POST", f"/v1/profile?{QUICK}", models["loop"].read_bytes()))
            except Exception as error:  # noqa: BLE001 - checked below
                outcome.append(error)

        loop = threading.Thread(target=measure, daemon=True)
        loop.start()  # the Loop bomb: it would run for 120 s
        deadline = time.monotonic() + 20
        while not (measuring := {pid for pid, depth in _descendants(agent.pid).items() if depth == 2}):
            assert time.monotonic() < deadline, "no measurement process started"
            time.sleep(0.1)  # the forkserver is a child of the agent; the measurement, a grandchild
        assert call(url, "GET", "/v1/info")[1]["busy"] is True
        below = set(_descendants(agent.pid))  # the measurement, the forkserver and multiprocessing's resource tracker
        started = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=20) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once shut down
        assert time.monotonic() - started < 6  # the shutdown grace (2 s), not the measurement's 120 s
        loop.join(timeout=10)
        assert not loop.is_alive()
        deadline = time.monotonic() + 5
        while left := below & set(_parents()):
            assert time.monotonic() < deadline, f"process(es) {left} outlived the agent (measurement: {measuring})"
            time.sleep(0.1)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert isinstance(outcome[0], (ConnectionError, http.client.HTTPException)), outcome  # dropped, not answered
