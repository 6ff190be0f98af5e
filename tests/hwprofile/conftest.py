from __future__ import annotations

from pathlib import Path

import pytest
import torch.nn as nn

import hwprofile

FAST = hwprofile.MeasureConfig(min_runs=30, min_seconds=0.05, warmup_seconds=0.01)


def mlp(width: int, depth: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    cin = 64
    for _ in range(depth):
        layers += [nn.Linear(cin, width), nn.ReLU()]
        cin = width
    return nn.Sequential(*layers, nn.Linear(cin, 10))


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
