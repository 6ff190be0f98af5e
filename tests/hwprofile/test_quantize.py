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


# The least top-1 agreement of a tensorrt-format file with its fp32 model on 1,000 fixed random inputs (measured
# here: 0.968, the ort format 0.974: symmetric int8 spends half its range on the negative side of post-ReLU values).
TENSORRT_AGREEMENT = 0.95


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


@pytest.mark.parametrize("fmt", hwprofile.INT8_FORMATS)
def test_graph_structure_does_not_depend_on_the_weights(trained: Path, digits: distill.Dataset,
                                                        tmp_path: Path, fmt: str) -> None:
    """What lets a search measure an untrained copy's latency before training it, in either format."""
    untrained = _export(1, tmp_path / "untrained.onnx")
    few = _feeds(digits, 32)
    a = onnx.load(str(hwprofile.quantize_int8(untrained, tmp_path / "a.onnx", few, int8_format=fmt)))
    b = onnx.load(str(hwprofile.quantize_int8(trained, tmp_path / "b.onnx", _feeds(digits), int8_format=fmt)))
    assert [(n.op_type, list(n.input), list(n.output)) for n in a.graph.node] == \
        [(n.op_type, list(n.input), list(n.output)) for n in b.graph.node]
    sizes = [hwprofile.model_stats(tmp_path / name).size_bytes for name in ("a.onnx", "b.onnx")]
    assert sizes[0] == pytest.approx(sizes[1], abs=8)  # zero points are varints: a byte or so each


def test_unknown_method_names_the_known_ones(trained: Path, digits: distill.Dataset, tmp_path: Path) -> None:
    with pytest.raises(hwprofile.InvalidOptionError, match="choose one of minmax, percentile"):
        hwprofile.quantize_int8(trained, tmp_path / "x.onnx", _feeds(digits), method="entropy")


def _zero_points(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The zero point of every QuantizeLinear/DequantizeLinear node, by node name, read from the graph's initializers."""
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    nodes = [node for node in model.graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert nodes and all(len(node.input) == 3 for node in nodes)  # every zero point is explicit
    return {node.name: initializers[node.input[2]] for node in nodes}


def test_tensorrt_format_is_symmetric_int8_and_keeps_the_predictions(trained: Path, digits: distill.Dataset,
                                                                      tmp_path: Path) -> None:
    """What TensorRT's explicit quantization takes: int8 Q/DQ pairs, every zero point 0 (no uint8 activation, no
    int32 bias); ONNX Runtime runs the file, and it keeps the fp32 model's top-1 on fixed random inputs."""
    rng = np.random.default_rng(0)
    calibration = [{"input": rng.standard_normal((64, 1, 8, 8), dtype=np.float32)} for _ in range(4)]
    x = np.random.default_rng(1).standard_normal((1000, 1, 8, 8), dtype=np.float32)
    output = hwprofile.quantize_int8(trained, tmp_path / "trt.onnx", calibration, int8_format="tensorrt")
    model = hwprofile.load_onnx(output)
    zero_points = _zero_points(model)
    assert {str(zp.dtype) for zp in zero_points.values()} == {"int8"}
    assert all(not zp.any() for zp in zero_points.values())
    assert "Relu" in {node.op_type for node in model.graph.node}  # kept: symmetric ranges do not fold it
    fp32, int8 = _logits(trained, x).argmax(1), _logits(output, x).argmax(1)
    assert (fp32 == int8).mean() >= TENSORRT_AGREEMENT
    ort_format = _zero_points(hwprofile.load_onnx(hwprofile.quantize_int8(trained, tmp_path / "ort.onnx", calibration)))
    assert {"uint8", "int32"} <= {str(zp.dtype) for zp in ort_format.values()}  # the default format is not that


def test_unknown_format_names_the_known_ones(trained: Path, digits: distill.Dataset, tmp_path: Path) -> None:
    with pytest.raises(hwprofile.InvalidOptionError, match="Unknown int8 format 'int4'; choose one of ort, tensorrt"):
        hwprofile.quantize_int8(trained, tmp_path / "x.onnx", _feeds(digits), int8_format="int4")
    assert not (tmp_path / "x.onnx").exists()


def test_a_quantized_file_is_not_converted_to_fp16(trained: Path, digits: distill.Dataset, tmp_path: Path) -> None:
    """Its precision is in the file (TensorRT builds its Q/DQ pairs as they are): fp16 would change its scales."""
    output = hwprofile.quantize_int8(trained, tmp_path / "trt.onnx", _feeds(digits), int8_format="tensorrt")
    with pytest.raises(hwprofile.InvalidOptionError, match="precision='fp16' converts a float model, but .*trt.onnx"
                                                           "' is quantized"):
        hwprofile.measure_latency(output, hwprofile.MeasureConfig(precision="fp16"))


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
