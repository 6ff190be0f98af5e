"""Fake quantization for QAT: the numbers ONNX Runtime's static quantization gives, gradients straight through, and
plain modules again afterwards with the fine-tuned weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto
from onnxruntime.quantization.quant_utils import quantize_data

import distill
from distill import ActivationFakeQuant, WeightFakeQuant, prepare_qat, quantization_aware, remove_qat
from search_spaces import get_space


def _ort_dequantized(values: np.ndarray, qtype: int, symmetric: bool) -> np.ndarray:
    """``values`` quantized by ONNX Runtime's own weight/activation routine, then dequantized: (q - zero point) * scale."""
    zero_point, scale, quantized = quantize_data(values, qtype, symmetric)
    return ((quantized.astype(np.float64) - zero_point) * scale).astype(np.float32)


def test_weights_round_per_output_channel_as_onnx_runtime_does() -> None:
    torch.manual_seed(0)
    weight = torch.randn(6, 3, 3, 3) * torch.tensor([1e-3, 0.1, 1.0, 5.0, 1.0, 0.0]).view(6, 1, 1, 1)  # channel 5: zeros
    found = WeightFakeQuant()(weight).numpy()
    expected = np.stack([_ort_dequantized(channel.flatten(), TensorProto.INT8, True).reshape(channel.shape)
                         for channel in weight.numpy()])
    np.testing.assert_array_equal(found, expected)
    assert len(np.unique(found[3])) <= 255 and not np.array_equal(found, weight.numpy())  # on the int8 grid
    assert (found[5] == 0).all()


@pytest.mark.parametrize("shift", [1.0, 5.0])  # a range across 0, and one above it (widened to hold 0: zero point 0)
def test_activations_round_to_uint8_over_the_observed_range_as_onnx_runtime_does(shift: float) -> None:
    x = torch.randn(4096, generator=torch.Generator().manual_seed(1)) * 3 + shift
    quant = ActivationFakeQuant().train()
    found = quant(x).numpy()  # the first batch sets the range
    zero_point, scale, _ = quantize_data(x.numpy(), TensorProto.UINT8, False)
    assert quant.qparams() == (torch.tensor([float(scale)]), torch.tensor([int(zero_point)], dtype=torch.int32))
    np.testing.assert_allclose(found, _ort_dequantized(x.numpy(), TensorProto.UINT8, False), rtol=0, atol=1e-6)
    assert (int(zero_point) == 0) == (x.min().item() > 0)


def test_the_observer_follows_a_moving_average_in_training_and_is_frozen_in_eval() -> None:
    quant = ActivationFakeQuant(momentum=0.25)
    assert torch.equal(quant.eval()(torch.tensor([-7.0, 9.0])), torch.tensor([-7.0, 9.0]))  # nothing observed yet
    quant.train()
    quant(torch.tensor([-1.0, 2.0]))
    quant(torch.tensor([-5.0, 6.0]))
    assert (quant.min_val.item(), quant.max_val.item()) == (-2.0, 3.0)  # -1 + 0.25 * (-5 + 1), 2 + 0.25 * (6 - 2)
    out = quant.eval()(torch.tensor([-10.0, 10.0]))
    assert (quant.min_val.item(), quant.max_val.item()) == (-2.0, 3.0)
    scale = 5.0 / 255
    assert out.tolist() == pytest.approx([-round(2.0 / scale) * scale, (255 - round(2.0 / scale)) * scale])  # clipped


def test_gradients_pass_straight_through_the_rounding() -> None:
    torch.manual_seed(0)
    layer = prepare_qat(nn.Sequential(nn.Linear(5, 3))).train()[0]
    x = torch.randn(8, 5, requires_grad=True)
    layer(x).sum().backward()
    original = layer.parametrizations.weight.original
    quantized_input = layer.input_quant(x.detach())  # the range is the batch's: no input is clipped
    # d/dW sum(q(x) q(W)^T + b) = sum over the batch of q(x), for every output; d/dx = sum over outputs of q(W)
    torch.testing.assert_close(original.grad, quantized_input.sum(0).expand(3, 5))
    torch.testing.assert_close(x.grad, layer.weight.detach().sum(0).expand(8, 5))
    assert not torch.equal(layer.weight, original) and layer.bias.grad is not None


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4),
                         nn.Flatten(), nn.Linear(144, 3))


def test_removing_the_fake_quantization_leaves_plain_modules_with_the_trained_weights() -> None:
    model, plain = _net(), _net()
    keys = sorted(model.state_dict())
    with quantization_aware(model):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(3):
            optimizer.zero_grad()
            model(torch.randn(16, 1, 8, 8)).square().mean().backward()
            optimizer.step()
        trained = {name: value.detach().clone() for name, value in model.named_parameters()}
    assert [type(module) for module in model] == [type(module) for module in plain]
    assert sorted(model.state_dict()) == keys  # (the weight is now registered after the bias)
    assert all(not module._forward_pre_hooks and not hasattr(module, "input_quant") for module in model.modules())
    assert torch.equal(model[0].weight, trained["0.parametrizations.weight.original"])  # the float weights, not rounded
    assert not torch.equal(model[0].weight, plain[0].weight)  # trained
    x = torch.randn(2, 1, 8, 8)
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(model.eval()(x), plain.eval()(x), rtol=0, atol=0)  # computes in float again
    with pytest.raises(ValueError, match="fake-quantized already"):
        prepare_qat(prepare_qat(model))
    assert remove_qat(model) is model


def test_a_distilled_student_fine_tunes_fake_quantized_in_the_distillation_loop(digits: distill.Dataset,
                                                                                digits_teacher: distill.Teacher,
                                                                                tmp_path: Path) -> None:
    """The real loop (channels-last, BatchNorm, hswish, squeeze-excite) trains through the fake quantization; its
    observers saw the training batches, and the student is scored with them frozen."""
    space = get_space("mbconv")
    torch.manual_seed(0)
    arch = space.smallest()
    arch = {**arch, "stages": [{**stage, "se": True, "act": "hswish"} for stage in arch["stages"]]}
    student = space.build(arch, digits.input_shape, digits.num_classes)
    outputs = distill.teacher_outputs(digits_teacher, digits, tmp_path)
    distilled = distill.distill(student, digits, outputs, distill.TrainConfig(steps=120, seed=0))
    before = student.stem[0].weight.detach().clone()
    with quantization_aware(student):
        result = distill.distill(student, digits, outputs, distill.TrainConfig(steps=30, lr=3e-4, seed=0))
        observed = [layer.input_quant for layer in distill.quantized_layers(student)]
        assert observed and all(bool(quant.observed) and quant.max_val > quant.min_val for quant in observed)
    assert distilled.accuracy > 0.6 and result.accuracy > distilled.accuracy - 0.1
    assert not any(isinstance(module, (WeightFakeQuant, ActivationFakeQuant)) for module in student.modules())
    assert not torch.equal(student.stem[0].weight, before)
