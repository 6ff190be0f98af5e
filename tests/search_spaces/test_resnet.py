from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pytest
import torch
import torch.nn as nn

import hwprofile
from search_spaces import Arch, ResNetSpace, get_space
from search_spaces.resnet import ResidualBlock

Sampler = Callable[..., list[Arch]]
# Each stage's output resolution: the stem halves inputs over 64 px, later stages halve while 2x2 remains.
STAGE_SIZES = {(1, 8, 8): [(8, 8), (4, 4), (2, 2)], (1, 28, 28): [(28, 28), (14, 14), (7, 7)],
               (3, 32, 32): [(32, 32), (16, 16), (8, 8)], (3, 96, 96): [(48, 48), (24, 24), (12, 12)],
               (3, 128, 112): [(64, 56), (32, 28), (16, 14)]}


def _count(arch: Arch) -> int:
    return sum(p.numel() for p in get_space("resnet").build(arch, (1, 8, 8), 10).parameters())


def test_sampled_archs_are_json_valid_reproducible_and_use_both_blocks(sampled_archs: Sampler) -> None:
    space = get_space("resnet")
    assert isinstance(space, ResNetSpace) and space.name == "resnet"
    archs = sampled_archs("resnet", 20)
    for arch in archs:
        assert json.loads(json.dumps(arch)) == arch
        assert len(arch["stages"]) == 3
    assert {arch["block"] for arch in archs} == {"basic", "bottleneck"}
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3)).ask()
    arch = space.sample(trial)
    assert space.sample(optuna.trial.FixedTrial(trial.params)) == arch


@pytest.mark.parametrize("input_shape", STAGE_SIZES)
def test_build_downsamples_as_the_input_allows(input_shape: tuple[int, int, int], sampled_archs: Sampler) -> None:
    space = get_space("resnet")
    for arch in [space.smallest(), space.largest(), *sampled_archs("resnet", 2)]:
        model = space.build(arch, input_shape, 7).eval()
        shapes: list[tuple[int, ...]] = []
        for stage in model.stages:
            stage.register_forward_hook(lambda module, args, out: shapes.append(tuple(out.shape[1:])))
        with torch.no_grad():
            assert model(torch.randn(3, *input_shape)).shape == (3, 7)
        assert shapes == [(stage["width"], *size) for stage, size in zip(arch["stages"], STAGE_SIZES[input_shape])]


def test_blocks_are_basic_or_bottleneck_with_a_projection_shortcut_where_the_shape_changes() -> None:
    basic, bottleneck = ResidualBlock("basic", 16, 32, 2), ResidualBlock("bottleneck", 32, 32, 1)
    convs = lambda block: [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0])  # noqa: E731
                           for m in block.body.modules() if isinstance(m, nn.Conv2d)]
    assert convs(basic) == [(16, 32, 3, 2), (32, 32, 3, 1)]
    assert convs(bottleneck) == [(32, 8, 1, 1), (8, 8, 3, 1), (8, 32, 1, 1)]
    assert isinstance(basic.shortcut[0], nn.Conv2d) and basic.shortcut[0].stride == (2, 2)
    assert isinstance(bottleneck.shortcut, nn.Identity)
    x = torch.randn(2, 32, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(bottleneck.eval()(x), torch.relu(bottleneck.body(x) + x))
    with pytest.raises(ValueError, match="`block` must be one of basic, bottleneck, but got block='dense'"):
        ResidualBlock("dense", 16, 16, 1)


def test_arch_choices_change_the_module() -> None:
    space = get_space("resnet")
    arch = space.smallest()
    changed = {**arch, "stem_kernel": 7, "stages": [{"depth": 3, "width": 32}, *arch["stages"][1:]]}
    small, large = space.build(arch, (1, 8, 8), 10), space.build(changed, (1, 8, 8), 10)
    assert small.stem[0].kernel_size == (3, 3) and large.stem[0].kernel_size == (7, 7)
    assert len(small.stages[0]) == 1 and len(large.stages[0]) == 3
    assert large.stages[1][0].body[0][0].in_channels == 32
    assert _count(changed) > _count(arch)


def test_smallest_and_largest_bracket_every_sampled_arch(sampled_archs: Sampler) -> None:
    space = get_space("resnet")
    smallest, largest = _count(space.smallest()), _count(space.largest())
    assert all(smallest < _count(arch) < largest for arch in sampled_archs("resnet", 30))
    assert space.smallest()["block"] == "bottleneck" and space.largest()["block"] == "basic"


@pytest.mark.parametrize("input_shape", [(1, 8, 8), (3, 96, 96)])
def test_students_export_to_onnx_with_a_dynamic_batch(input_shape: tuple[int, int, int], tmp_path: Path,
                                                      sampled_archs: Sampler) -> None:
    space = get_space("resnet")
    for index, arch in enumerate([space.smallest(), space.largest(), *sampled_archs("resnet", 2, seed=1)]):
        torch.manual_seed(index)
        student = space.build(arch, input_shape, 10).eval()
        path = hwprofile.export_onnx(student, input_shape, tmp_path / f"s{index}.onnx")
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        [graph_input] = session.get_inputs()
        assert graph_input.shape == ["batch", *input_shape]
        for batch in (1, 5):
            x = torch.randn(batch, *input_shape)
            got = session.run(None, {graph_input.name: x.numpy()})[0]
            with torch.no_grad():
                expected = student(x).numpy()
            assert got.shape == (batch, 10)
            assert np.abs(got - expected).max() <= 1e-4, arch
