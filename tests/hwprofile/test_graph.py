from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch
import torch.nn as nn

import hwprofile


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 5, stride=2, padding=2, groups=8)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.depthwise(self.conv(x)).flatten(1))


def test_params_macs_and_size_of_a_known_model(tmp_path: Path) -> None:
    path = hwprofile.export_onnx(ConvNet(), (3, 8, 8), tmp_path / "net.onnx")
    stats = hwprofile.model_stats(path)
    conv = 8 * 8 * 8 * (3 * 3 * 3)  # out C*H*W x (Cin/groups * k * k)
    depthwise = 8 * 4 * 4 * (1 * 5 * 5)
    fc = 10 * 128
    assert stats.macs == conv + depthwise + fc
    assert stats.params == sum(p.numel() for p in ConvNet().parameters())
    assert stats.size_bytes == path.stat().st_size


def test_matmul_macs_count_batch_dimensions(tmp_path: Path) -> None:
    class Attention(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x @ x.transpose(-1, -2)).flatten(1)

    stats = hwprofile.model_stats(hwprofile.export_onnx(Attention(), (4, 6, 5), tmp_path / "mm.onnx"))
    assert stats.macs == 4 * 6 * 6 * 5


def test_export_has_dynamic_batch_and_passes_the_checker(tmp_path: Path) -> None:
    path = hwprofile.export_onnx(ConvNet(), (3, 8, 8), tmp_path / "net.onnx")
    model = hwprofile.load_onnx(path)
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"
    assert [o.name for o in model.graph.output] == [hwprofile.export.OUTPUT_NAME]


def test_missing_and_corrupt_files_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(hwprofile.InvalidModelError, match="does not exist"):
        hwprofile.model_stats(tmp_path / "absent.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(hwprofile.InvalidModelError, match="corrupt.onnx' is not a valid ONNX model"):
        hwprofile.model_stats(corrupt)
    truncated = tmp_path / "truncated.onnx"
    data = hwprofile.export_onnx(ConvNet(), (3, 8, 8), tmp_path / "ok.onnx").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(hwprofile.InvalidModelError, match="truncated.onnx"):
        hwprofile.measure_latency(truncated)
    assert isinstance(onnx.load(str(tmp_path / "ok.onnx")), onnx.ModelProto)
