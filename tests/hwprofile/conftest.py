from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch.nn as nn

import hwprofile
from hwprofile.registry import register_backend, unregister_backend

FAST = hwprofile.MeasureConfig(min_runs=30, min_seconds=0.05, warmup_seconds=0.01)
# The protocol cut to its counts, for scripted backends: no warm-up, no time minimum, exactly 20 timed runs.
QUICK = dict(warmup_runs=0, warmup_seconds=0.0, min_seconds=0.0, min_runs=20, target_rel_precision=None)


def mlp(width: int, depth: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    cin = 64
    for _ in range(depth):
        layers += [nn.Linear(cin, width), nn.ReLU()]
        cin = width
    return nn.Sequential(*layers, nn.Linear(cin, 10))


def is_canary(path: Path) -> bool:
    """Whether a backend was asked to open the drift canary (its bytes, whatever the file's name: an agent names an
    upload ``model.onnx``)."""
    return path.read_bytes() == hwprofile.canary_bytes()


class ScriptedRunner(hwprofile.Runner):
    """Runs nothing: run number ``call`` (1 is the cold run) takes ``latency(call)`` ms."""

    def __init__(self, backend: ScriptedBackend, latency: Callable[[int], float]) -> None:
        self.backend, self.latency, self.calls, self.opened = backend, latency, 0, time.monotonic()

    def run(self) -> float:
        self.calls += 1
        return self.latency(self.calls)

    def close(self) -> None:
        if self.backend.log is not None:
            self.backend.log.append((self.opened, time.monotonic()))


class ScriptedBackend(hwprofile.Backend):
    """A real backend whose latencies come from a script, so stability is decided by the script, not the machine.

    Every model takes ``latency(call)`` ms, or ``model_latency(path, call)`` where that is set (e.g. to tell the drift
    canary, :func:`is_canary`, from a student). Model statistics are read from the ONNX file like ``ort``'s; ``open``
    waits ``hold_s`` and ``log`` collects each runner's (opened, closed) times.
    """

    latency: Callable[[int], float] = staticmethod(lambda call: 1.0)
    model_latency: Callable[[Path, int], float] | None = None
    runtime_version = "1"
    hold_s = 0.0
    log: list[tuple[float, float]] | None = None

    def version(self) -> str:
        return self.runtime_version

    def open(self, path: Path, config: hwprofile.MeasureConfig) -> hwprofile.Runner:
        time.sleep(self.hold_s)
        by_model = self.model_latency
        return ScriptedRunner(self, self.latency if by_model is None else lambda call: by_model(path, call))


class SteadyBackend(ScriptedBackend):
    """1 ms every run. At a module's top level, so that a device agent's measurement process can import it."""


class NoisyBackend(ScriptedBackend):
    """1 ms and 2 ms in turn: unstable on any machine (importable, like :class:`SteadyBackend`)."""

    latency = staticmethod(lambda call: 1.0 if call % 2 else 2.0)


class CanaryBackend(ScriptedBackend):
    """The drift canary takes 2 ms a run, any other model 1 ms (importable, like :class:`SteadyBackend`)."""

    model_latency = staticmethod(lambda path, call: 2.0 if is_canary(path) else 1.0)


Scripted = Callable[..., hwprofile.MeasureConfig]  # the type of the `scripted` fixture


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    """``scripted(latency, model_latency=..., **attributes)`` registers a :class:`ScriptedBackend` as ``"scripted"``
    (again, with new attributes, if called again), ``scripted(backend=SteadyBackend)`` registers that importable class,
    and either returns a :data:`QUICK` config that measures with it; the registration is undone after the test."""

    def register(latency: Callable[[int], float] = lambda call: 1.0, *, backend: type[ScriptedBackend] | None = None,
                 model_latency: Callable[[Path, int], float] | None = None,
                 **attributes: Any) -> hwprofile.MeasureConfig:
        by_model = {"model_latency": staticmethod(model_latency)} if model_latency is not None else {}
        register_backend("scripted")(backend or type("Scripted", (ScriptedBackend,),
                                                     {"latency": staticmethod(latency), **by_model, **attributes}))
        return hwprofile.MeasureConfig(backend="scripted", **QUICK)

    yield register
    unregister_backend("scripted")


@pytest.fixture(scope="session")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real exported student-sized model (dynamic batch, input 1x8x8)."""
    return hwprofile.export_onnx(mlp(64, 2), (1, 8, 8), tmp_path_factory.mktemp("models") / "mlp.onnx")


@pytest.fixture(autouse=True)
def _own_lock_and_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep test runs' engine cache and CLI measurement cache out of the home directory."""
    root = tmp_path_factory.getbasetemp()
    monkeypatch.setenv("HWPROFILE_ENGINE_CACHE", str(root / "engines"))
    monkeypatch.setenv("NAS_CACHE_DIR", str(root / "nas-cache"))
    monkeypatch.delenv(hwprofile.TOKEN_ENV, raising=False)


@pytest.fixture(autouse=True)
def _registry_left_as_found() -> Iterator[None]:
    """Every test leaves the backend registry as it found it: a test's own backend is unregistered after it."""
    before = hwprofile.backend_names()
    yield
    assert hwprofile.backend_names() == before, "a test left a backend registered"


@pytest.fixture
def not_an_agent() -> Iterator[Callable[..., str]]:
    """``not_an_agent(info, profile)`` starts a plain HTTP server on loopback that answers GET with the bytes ``info``
    and POST with ``profile`` (status 200, JSON); returns its URL. Servers stop after the test."""
    servers = []

    def start(info: bytes, profile: bytes = b"{}") -> str:
        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, body: bytes) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - the standard library's name
                self._answer(info)

            def do_POST(self) -> None:  # noqa: N802
                self._answer(profile)

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()
