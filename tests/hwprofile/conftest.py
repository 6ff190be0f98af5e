from __future__ import annotations

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


class ScriptedRunner(hwprofile.Runner):
    """Runs nothing: run number ``call`` (1 is the cold run) takes ``latency(call)`` ms."""

    def __init__(self, backend: ScriptedBackend) -> None:
        self.backend, self.calls, self.opened = backend, 0, time.monotonic()

    def run(self) -> float:
        self.calls += 1
        return self.backend.latency(self.calls)

    def close(self) -> None:
        if self.backend.log is not None:
            self.backend.log.append((self.opened, time.monotonic()))


class ScriptedBackend(hwprofile.Backend):
    """A real backend whose latencies come from a script, so stability is decided by the script, not the machine.

    Model statistics are read from the ONNX file like ``ort``'s; ``open`` waits ``hold_s`` and ``log``
    collects each runner's (opened, closed) times.
    """

    latency: Callable[[int], float] = staticmethod(lambda call: 1.0)
    runtime_version = "1"
    hold_s = 0.0
    log: list[tuple[float, float]] | None = None

    def version(self) -> str:
        return self.runtime_version

    def open(self, path: Path, config: hwprofile.MeasureConfig) -> hwprofile.Runner:
        time.sleep(self.hold_s)
        return ScriptedRunner(self)


Scripted = Callable[..., hwprofile.MeasureConfig]  # the type of the `scripted` fixture


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    """``scripted(latency, **attributes)`` registers a :class:`ScriptedBackend` as ``"scripted"`` (again, with new
    attributes, if called again) and returns a :data:`QUICK` config that measures with it; the registration is
    undone after the test."""

    def register(latency: Callable[[int], float] = lambda call: 1.0, **attributes: Any) -> hwprofile.MeasureConfig:
        register_backend("scripted")(type("Scripted", (ScriptedBackend,), {"latency": staticmethod(latency),
                                                                           **attributes}))
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
