"""Static INT8 quantization by ONNX Runtime, of a small real CNN calibrated on real digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
from onnx import numpy_helper

import distill
import hwprofile


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def _export(seed: int, path: Path, digits: distill.Dataset | None = None) -> Path:
    torch.manual_seed(seed)
    model = SmallCNN()
    if digits is not None:  # a few hundred steps: a real classifier, whose int8 copy must keep its predictions
        x, y = torch.from_numpy(digits.normalise(digits.train.x)), torch.from_numpy(digits.train.y).long()
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
        for step in range(150):
            rows = torch.randint(0, len(y), (64,))
            optimiser.zero_grad()
            nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
            optimiser.step()
    return hwprofile.export_onnx(model, (1, 8, 8), path)


def _feeds(digits: distill.Dataset, count: int = 256) -> list[dict[str, np.ndarray]]:
    x = digits.normalise(digits.train.x[:count])
    return [{"input": x[start:start + 64]} for start in range(0, count, 64)]


def _logits(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


@pytest.fixture(scope="module")
def trained(digits: distill.Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _export(0, tmp_path_factory.mktemp("int8") / "cnn.onnx", digits)


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_int8_file_is_qdq_per_channel_and_keeps_the_predictions(trained: Path, digits: distill.Dataset,
                                                                 tmp_path: Path, method: str) -> None:
    output = hwprofile.quantize_int8(trained, tmp_path / "int8.onnx", _feeds(digits), method=method)
    model = hwprofile.load_onnx(output)  # passes the ONNX checker
    ops = [node.op_type for node in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    conv_weights = [node.input[1] for node in model.graph.node if node.op_type == "Conv"]
    producers = {out: node for node in model.graph.node for out in node.output}
    scales = []
    for weight in conv_weights:  # each Conv reads its weight through a DequantizeLinear of int8 values
        dequantize = producers[weight]
        assert dequantize.op_type == "DequantizeLinear" and initializers[dequantize.input[0]].dtype == np.int8
        scales.append(initializers[dequantize.input[1]])
    assert [scale.shape for scale in scales] == [(8,), (16,)]  # per output channel
    x = digits.normalise(digits.val.x)
    fp32, int8 = _logits(trained, x).argmax(1), _logits(output, x).argmax(1)
    assert (fp32 == digits.val.y).mean() > 0.8  # a real classifier
    assert (fp32 == int8).mean() >= 0.97


def test_calibration_method_changes_the_ranges(trained: Path, digits: distill.Dataset, tmp_path: Path) -> None:
    def activation_scales(path: Path) -> list[float]:
        model = onnx.load(str(path))
        initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        return [float(initializers[node.input[1]]) for node in model.graph.node
                if node.op_type == "QuantizeLinear" and initializers[node.input[1]].ndim == 0]

    minmax = activation_scales(hwprofile.quantize_int8(trained, tmp_path / "a.onnx", _feeds(digits)))
    percentile = activation_scales(hwprofile.quantize_int8(trained, tmp_path / "b.onnx", _feeds(digits),
                                                           method="percentile"))
    assert len(minmax) == len(percentile) and minmax != percentile
    assert sum(percentile) < sum(minmax)  # outliers clipped: narrower ranges


def test_graph_structure_does_not_depend_on_the_weights(trained: Path, digits: distill.Dataset,
                                                        tmp_path: Path) -> None:
    """What lets a search measure an untrained copy's latency before training it."""
    untrained = _export(1, tmp_path / "untrained.onnx")
    few = _feeds(digits, 32)
    a = onnx.load(str(hwprofile.quantize_int8(untrained, tmp_path / "a.onnx", few)))
    b = onnx.load(str(hwprofile.quantize_int8(trained, tmp_path / "b.onnx", _feeds(digits))))
    assert [(n.op_type, list(n.input), list(n.output)) for n in a.graph.node] == \
        [(n.op_type, list(n.input), list(n.output)) for n in b.graph.node]
    sizes = [hwprofile.model_stats(tmp_path / name).size_bytes for name in ("a.onnx", "b.onnx")]
    assert sizes[0] == pytest.approx(sizes[1], abs=8)  # zero points are varints: a byte or so each


def test_unknown_method_names_the_known_ones(trained: Path, digits: distill.Dataset, tmp_path: Path) -> None:
    with pytest.raises(hwprofile.InvalidOptionError, match="choose one of minmax, percentile"):
        hwprofile.quantize_int8(trained, tmp_path / "x.onnx", _feeds(digits), method="entropy")


def test_a_model_the_quantizer_cannot_handle_is_a_quantization_error(digits: distill.Dataset, tmp_path: Path) -> None:
    class Overflow(nn.Module):  # activations overflow to inf: no finite scale exists
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.head = nn.Conv2d(1, 4, 3), nn.Linear(4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.exp(self.conv(x) * 1000).mean((2, 3)))

    path = hwprofile.export_onnx(Overflow(), (1, 8, 8), tmp_path / "overflow.onnx")
    with pytest.raises(hwprofile.QuantizationError, match="ONNX Runtime cannot quantize .*overflow.onnx"):
        hwprofile.quantize_int8(path, tmp_path / "x.onnx", _feeds(digits))
    assert not (tmp_path / "x.onnx").exists()
