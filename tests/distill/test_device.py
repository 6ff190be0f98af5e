"""Where training runs: ``--device`` resolution, its one-line error, and the loop on an explicit CPU placement."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn as nn

import distill
from distill import DeviceError, Placement, TrainConfig, distill as run_distill, resolve_device
from distill.device import computes_bf16, placed
from search_spaces import get_space


def _student(digits: distill.Dataset) -> nn.Module:
    torch.manual_seed(0)
    return get_space("mbconv").build(get_space("mbconv").smallest(), digits.input_shape, digits.num_classes)


@pytest.mark.parametrize("spec", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_specs_are_auto_cpu_cuda_or_an_indexed_cuda(spec: str) -> None:
    distill.check_device_spec(spec)


@pytest.mark.parametrize("spec", ["gpu", "CUDA", "cuda:", "cuda:x", "cpu:0", "mps", ""])
def test_other_device_specs_are_rejected_with_the_known_forms(spec: str) -> None:
    with pytest.raises(DeviceError, match=r"one of auto, cpu, cuda, cuda:N, but got"):
        distill.check_device_spec(spec)


def test_auto_is_the_first_cuda_device_when_there_is_one_else_the_cpu() -> None:
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto") == resolve_device() == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert distill.describe_device(torch.device("cpu")) == "cpu"


def test_a_cuda_device_this_machine_lacks_is_a_one_line_error() -> None:
    missing = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(DeviceError) as error:
        resolve_device(f"cuda:{missing}")
    message = str(error.value)
    assert "\n" not in message and f"--device cuda:{missing}" in message and "--device cpu or auto" in message
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match=r"--device cuda asks for CUDA device 0, but torch sees no CUDA device"):
            Placement.on("cuda")


def test_a_cpu_trains_channels_last_and_bf16_only_where_it_computes_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = Placement.on("cpu")
    assert (cpu.device, cpu.bf16, cpu.channels_last, cpu.cuda) == (torch.device("cpu"), False, True, False)
    native = computes_bf16(cpu.device)
    assert Placement.on("cpu", bf16=True).bf16 is native and cpu.with_native_bf16().bf16 is native
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)  # a CPU without AVX512-BF16
    assert not Placement.on("cpu", bf16=True).bf16 and not cpu.with_native_bf16().bf16
    with pytest.raises(DeviceError, match=r"computes bf16 natively .* but cpu here does not"):
        Placement(torch.device("cpu"), bf16=True)


def test_placed_brings_a_module_back_where_it_was_in_the_contiguous_format() -> None:
    conv = nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    with placed(conv, torch.device("cpu")):
        assert conv.weight.device == torch.device("cpu")
    assert conv.weight.is_contiguous()
    with placed(None, torch.device("cpu")):  # no module (e.g. an ONNX teacher): nothing to move
        pass


def test_distillation_on_an_explicit_cpu_placement_gives_the_results_of_the_default(
        digits: distill.Dataset, digits_outputs: distill.TeacherOutputs) -> None:
    steps: list[int] = []
    config = TrainConfig(steps=12, batch_size=32)
    default = run_distill(_student(digits), digits, digits_outputs, config)
    counted = Placement.on("cpu", before_step=lambda: steps.append(len(steps)))
    placed_run = run_distill(_student(digits), digits, digits_outputs, config, placement=counted)
    assert dataclasses.replace(placed_run, seconds=0.0) == dataclasses.replace(default, seconds=0.0)
    assert steps == list(range(12))  # the hook ran before every step


def test_the_student_stays_on_the_cpu_after_a_run(digits: distill.Dataset,
                                                  digits_outputs: distill.TeacherOutputs) -> None:
    student = _student(digits)
    run_distill(student, digits, digits_outputs, TrainConfig(steps=2), placement=Placement.on("cpu"))
    assert {p.device for p in student.parameters()} == {torch.device("cpu")}
    assert all(p.is_contiguous() for p in student.parameters())
    logits = distill.predict(student, digits.normalise(np.asarray(digits.val.x[:4])))
    assert logits.shape == (4, digits.num_classes) and logits.dtype == np.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here (CPU-only torch / no GPU)")
def test_cuda_trains_in_fp32_and_the_default_memory_format() -> None:
    cuda = Placement.on("cuda")
    assert (cuda.device.type, cuda.bf16, cuda.channels_last, cuda.cuda) == ("cuda", False, False, True)
    assert Placement.on("cuda", bf16=True, channels_last=True).bf16  # still there when asked for
