from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from distill import FeatureLayer, FeaturePlan, LayerPair, TeacherCNN, TeacherError, plan_features
from distill.features import capture, extract, probe
from distill.losses.functional import at_loss
from search_spaces import get_space


def _student(input_shape: tuple[int, int, int]) -> nn.Module:
    space = get_space("mbconv")
    return space.build(space.smallest(), input_shape, 10)


def test_layer_pools_to_the_given_size_and_keys_by_reduction() -> None:
    feature = torch.arange(16.0).view(1, 1, 4, 4)
    pooled = FeatureLayer("a", (2, 2)).reduce(feature)
    torch.testing.assert_close(pooled, torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    assert FeatureLayer("features.2", (8, 8), attention_p=2.0).key == "features.2-8x8-at2"
    assert FeatureLayer("classifier.1").key == "classifier.1"
    with pytest.raises(ValueError, match=r"'head' gives shape \(3, 5\)"):
        FeatureLayer("head", (1, 1)).reduce(torch.zeros(3, 5))


def test_attention_layer_keeps_one_channel_that_at_loss_reads_like_the_full_map() -> None:
    # Channels 3 and -4 at one position: (mean_c |A|²)^(1/2) = √((9 + 16) / 2) = 5/√2.
    feature = torch.tensor([[[[3.0]], [[-4.0]]]])
    reduced = FeatureLayer("a", attention_p=2.0).reduce(feature)
    assert reduced.shape == (1, 1, 1, 1) and reduced.item() == pytest.approx(5 / 2**0.5)
    student, teacher = torch.randn(4, 3, 5, 5), torch.randn(4, 16, 5, 5)
    for p in (1.0, 2.0, 3.0):
        cached = FeatureLayer("t", (5, 5), attention_p=p).reduce(teacher)
        assert at_loss(student, cached, p).item() == pytest.approx(at_loss(student, teacher, p).item(), rel=1e-5)


def test_attention_is_pooled_after_the_channel_reduction() -> None:
    # Positions with |A|² = 1 and 9 (one channel): pooled to 1x1, (mean |A|²)^(1/2) = √5, not mean |A| = 2.
    reduced = FeatureLayer("a", (1, 1), attention_p=2.0).reduce(torch.tensor([[[[1.0, -3.0]]]]))
    assert reduced.item() == pytest.approx(5**0.5)


def test_stages_are_matched_to_teacher_maps_of_the_same_size() -> None:
    # digits (8x8): student stages at 8, 4, 2; the teacher's stem ends at 8 (features.2), its last map is 4x4
    # (features), pooled to 2x2 for the last stage.
    plan = plan_features(_student((1, 8, 8)), TeacherCNN((1, 8, 8), 10), (1, 8, 8))
    assert plan.maps == (LayerPair("stages.0", "features.2", (8, 8)), LayerPair("stages.1", "features", (4, 4)),
                         LayerPair("stages.2", "features", (2, 2)))
    assert plan.embedding == LayerPair("head", "classifier.1", None)
    # MNIST (28x28): the stem at 28, the first stage at 14, the second and the residual block at 7.
    plan = plan_features(_student((1, 28, 28)), TeacherCNN((1, 28, 28), 10), (1, 28, 28))
    assert [(pair.teacher, pair.size) for pair in plan.maps] == [("features.2", (28, 28)), ("features.6", (14, 14)),
                                                                 ("features", (7, 7))]


def test_the_teacher_runs_once_however_many_students_are_planned() -> None:
    teacher, calls = TeacherCNN((1, 8, 8), 10), []
    teacher.register_forward_hook(lambda module, inputs, output: calls.append(1))
    plans = [plan_features(_student((1, 8, 8)), teacher, (1, 8, 8)) for _ in range(3)]
    assert len(calls) == 1 and plans[0] == plans[2]


class _Staged(nn.Module):
    """A student with one stage at half the input's resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.ModuleList([nn.Conv2d(1, 2, 3, stride=2, padding=1)])
        self.head = nn.Flatten()
        self.classifier = nn.Linear(2 * 64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.stages[0](x)))


def test_a_stage_without_an_equal_teacher_map_gets_the_next_larger_one() -> None:
    # Teacher maps: 16x16 (conv, relu) and 4x4 (pool); the student's 8x8 stage gets the deeper 16x16 one.
    teacher = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(4), nn.Flatten(), nn.Linear(64, 10))
    plan = plan_features(_Staged(), teacher, (1, 16, 16))
    assert plan.maps == (LayerPair("stages.0", "1", (8, 8)),)  # pooled from 16x16 to 8x8 when cached
    assert plan.embedding == LayerPair("head", "3", None)  # the last vectors before the logits
    with pytest.raises(ValueError, match="Automatic stage matching needs a student with an nn.ModuleList `stages`"):
        plan_features(teacher, teacher, (1, 16, 16))


def test_explicit_paths_are_checked() -> None:
    student, teacher = _student((1, 8, 8)), TeacherCNN((1, 8, 8), 10)
    with pytest.raises(ValueError, match=r"The teacher has no tensor output at module path 'features.99'"):
        plan_features(student, teacher, (1, 8, 8), maps=[("stages.0", "features.99")])
    with pytest.raises(ValueError, match=r"teacher's at least as large, but got student 'stages.0' \(8, 8, 8\) and "
                                         r"teacher 'features.6' \(64, 4, 4\)"):
        plan_features(student, teacher, (1, 8, 8), maps=[("stages.0", "features.6")])
    plan = plan_features(student, teacher, (1, 8, 8), maps=[("stages.2", "features.6")], embedding=("head", "features"))
    assert plan == FeaturePlan(maps=(LayerPair("stages.2", "features.6", (2, 2)),),
                               embedding=LayerPair("head", "features", (1, 1)))


def test_probe_lists_output_shapes_without_the_logits() -> None:
    shapes = probe(TeacherCNN((1, 8, 8), 10), (1, 8, 8))
    assert shapes["features.0"] == (32, 8, 8) and shapes["features"] == (128, 4, 4)
    assert shapes["classifier.1"] == (128,) and "classifier" not in shapes and "classifier.2" not in shapes


def test_extract_returns_the_logits_and_float16_reduced_outputs_of_one_pass() -> None:
    torch.manual_seed(0)
    teacher = TeacherCNN((1, 8, 8), 10).eval()
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(np.float32)
    layers = [FeatureLayer("features.2", (4, 4)), FeatureLayer("features.2", attention_p=2.0)]
    logits, features = extract(teacher, x, layers, batch_size=2)
    with torch.no_grad(), capture(teacher, ["features.2"]) as outputs:
        expected_logits = teacher(torch.from_numpy(x))
    np.testing.assert_allclose(logits, expected_logits.numpy(), rtol=1e-5, atol=1e-6)
    assert features[layers[0]].dtype == np.float16 and features[layers[0]].shape == (5, 32, 4, 4)
    np.testing.assert_allclose(features[layers[0]], F.adaptive_avg_pool2d(outputs["features.2"], 4).numpy(),
                               rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(features[layers[1]], outputs["features.2"].pow(2).mean(1, keepdim=True).sqrt().numpy(),
                               rtol=1e-3, atol=1e-3)


def test_capture_removes_its_hooks() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with capture(model, ["0"]) as outputs:
        model(torch.ones(1, 2))
    assert set(outputs) == {"0"}
    outputs.clear()
    model(torch.ones(1, 2))
    assert outputs == {} and not model[0]._forward_hooks


def test_teachers_without_a_module_cannot_be_planned() -> None:
    class OnnxLike:
        identity = "onnx"

    with pytest.raises(TeacherError, match="need a PyTorch nn.Module teacher .* but got OnnxLike"):
        plan_features(_student((1, 8, 8)), OnnxLike(), (1, 8, 8))
    scripted = torch.jit.script(TeacherCNN((1, 8, 8), 10))
    with pytest.raises(TeacherError, match="but got RecursiveScriptModule"):
        plan_features(_student((1, 8, 8)), scripted, (1, 8, 8))
