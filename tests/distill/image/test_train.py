from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import distill
from distill import (CachedLogits, Dataset, ImageSplit, OnlineTeacher, TrainConfig, build_criterion,
                     distill as run_distill, evaluate, train)
from distill.losses import registry
from distill.losses.registry import BuildContext, KDMethod, KDStep
from search_spaces import get_space


def _student(digits: distill.Dataset) -> nn.Module:
    torch.manual_seed(0)
    return get_space("mbconv").build(get_space("mbconv").smallest(), digits.input_shape, digits.num_classes)


def test_short_distillation_learns_and_agrees_with_the_teacher(digits: distill.Dataset,
                                                               digits_outputs: distill.TeacherOutputs) -> None:
    result = run_distill(_student(digits), digits, digits_outputs, TrainConfig(epochs=4))
    assert result.accuracy > 0.6  # chance is 0.1
    assert result.agreement > 0.6
    assert result.steps == 4 * int(np.ceil(len(digits.train) / 64))


def test_step_budget_overrides_epochs(digits: distill.Dataset) -> None:
    assert train(_student(digits), digits, None, TrainConfig(epochs=50, steps=7)).steps == 7


def test_cached_and_online_soft_targets_agree(digits: distill.Dataset, digits_teacher: distill.Teacher,
                                              digits_outputs: distill.TeacherOutputs) -> None:
    indices = np.array([5, 1, 300])
    inputs = torch.from_numpy(digits.normalise(digits.train.x[indices]))
    online = OnlineTeacher(digits_teacher.module)(indices, inputs)
    torch.testing.assert_close(CachedLogits(digits_outputs.train)(indices, inputs), online, atol=1e-4, rtol=1e-4)


def test_an_online_teacher_trains_like_its_cached_logits_and_replaces_them(
        digits: distill.Dataset, digits_teacher: distill.Teacher, digits_outputs: distill.TeacherOutputs) -> None:
    config = TrainConfig(epochs=4, seed=3)
    cached = run_distill(_student(digits), digits, digits_outputs, config)
    online = run_distill(_student(digits), digits, digits_outputs, config,
                         soft_targets=OnlineTeacher(digits_teacher.module))
    assert online.accuracy == pytest.approx(cached.accuracy, abs=0.01)
    torch.manual_seed(1)
    other_teacher = get_space("mbconv").build(get_space("mbconv").largest(), digits.input_shape, digits.num_classes)
    other = run_distill(_student(digits), digits, digits_outputs, config, soft_targets=OnlineTeacher(other_teacher))
    assert other.metrics.kl_to_teacher > cached.metrics.kl_to_teacher + 0.05  # it learnt another teacher's logits


def test_training_is_seeded(digits: distill.Dataset, digits_outputs: distill.TeacherOutputs) -> None:
    first = run_distill(_student(digits), digits, digits_outputs, TrainConfig(steps=20, seed=3))
    second = run_distill(_student(digits), digits, digits_outputs, TrainConfig(steps=20, seed=3))
    assert first.accuracy == second.accuracy


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="`0 <= alpha <= 1`"):
        TrainConfig(alpha=1.5)
    with pytest.raises(ValueError, match="budget must be positive"):
        TrainConfig(steps=0)


def test_evaluate_counts_accuracy_and_agreement() -> None:
    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :3]

    split = ImageSplit(np.eye(3, dtype=np.uint8)[[0, 1, 2, 2]].reshape(4, 1, 1, 3), np.array([0, 1, 2, 0]))
    data = Dataset("fixed", split, split, None, ["a", "b", "c"], mean=[0.0], std=[1.0], fingerprint="fixed")
    teacher = np.eye(3, dtype=np.float32)[[0, 1, 1, 1]]
    result = evaluate(Fixed(), data, split, teacher)
    assert result.accuracy == 0.75 and result.agreement == 0.5


@pytest.fixture(scope="module")
def digits_plan(digits: distill.Dataset, digits_teacher: distill.Teacher) -> distill.FeaturePlan:
    return distill.plan_features(_student(digits), digits_teacher.module, digits.input_shape)


@pytest.fixture(scope="module")
def digits_feature_outputs(digits: distill.Dataset, digits_teacher: distill.Teacher, cache_dir,
                           digits_plan: distill.FeaturePlan) -> distill.TeacherOutputs:
    layers = dict.fromkeys(layer for name in distill.list_losses() for layer in distill.teacher_layers(name, digits_plan))
    return distill.teacher_outputs(digits_teacher, digits, cache_dir, features=list(layers))


@pytest.mark.parametrize("kd", ["none", *distill.list_losses(), "kd+at:0.5+rkd:0.1"])
def test_every_method_trains_a_search_space_student(kd: str, digits: distill.Dataset,
                                                   digits_feature_outputs: distill.TeacherOutputs,
                                                   digits_outputs: distill.TeacherOutputs,
                                                   digits_plan: distill.FeaturePlan) -> None:
    result = run_distill(_student(digits), digits, [digits_feature_outputs, digits_outputs],
                         TrainConfig(steps=4, kd=kd), plan=digits_plan)
    assert result.steps == 4 and 0.0 <= result.accuracy <= 1.0 and np.isfinite(result.metrics.kl_to_teacher)


def test_result_reports_every_metric(digits: distill.Dataset, digits_outputs: distill.TeacherOutputs) -> None:
    result = run_distill(_student(digits), digits, digits_outputs, TrainConfig(steps=5))
    values = result.to_dict()
    assert set(values) == {"accuracy", "accuracy_low", "accuracy_high", "teacher_accuracy", "retention", "agreement",
                           "kl_to_teacher", "ece", "steps", "seconds", "stopped_at_rung"}
    assert values["teacher_accuracy"] == digits_outputs.accuracy(digits)
    assert values["retention"] == pytest.approx(values["accuracy"] / values["teacher_accuracy"])
    assert values["accuracy_low"] <= values["accuracy"] <= values["accuracy_high"]


class _Recorder(KDMethod):
    """Records the temperature of every step; its parameter has a gradient only through the loss."""

    def __init__(self, context: BuildContext) -> None:
        super().__init__()
        self.temperatures: list[float] = []
        self.after: int = 0
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, step: KDStep) -> torch.Tensor:
        self.temperatures.append(step.temperature)
        return self.scale * step.logits.pow(2).mean()

    def after_step(self, student: nn.Module) -> None:
        self.after += 1


def test_training_passes_the_scheduled_temperature_and_trains_the_criterion(
        digits: distill.Dataset, digits_outputs: distill.TeacherOutputs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._LOSSES, "recorder", _Recorder)
    monkeypatch.setattr(_Recorder, "name", "recorder", raising=False)
    config = TrainConfig(steps=5, kd="recorder", temperature=4.0, final_temperature=2.0, temperature_schedule="decay",
                         batch_size=16, reference_batch_size=256)
    student = _student(digits)
    criterion = build_criterion(student, config.kd, digits.input_shape, digits.num_classes,
                                teacher_logits=[digits_outputs.train])
    train(student, digits, CachedLogits(digits_outputs.train), config, criterion=criterion)
    recorder = criterion.methods["recorder"]
    assert recorder.temperatures == pytest.approx([2 * t for t in (4.0, 3.5, 3.0, 2.5, 2.0)])  # (256/16)^(1/4) = 2
    assert recorder.after == 5 and recorder.scale.item() != 1.0  # its parameter is optimised too


def test_class_weighting_needs_a_per_sample_kl_term(digits: distill.Dataset,
                                                    digits_outputs: distill.TeacherOutputs) -> None:
    with pytest.raises(ValueError, match=r"`class_weighted` weighs per-sample KL terms \(dml, ema, kd, mkd, self\), "
                                         r"but the spec 'dkd' has none"):
        run_distill(_student(digits), digits, digits_outputs, TrainConfig(steps=2, kd="dkd", class_weighted=True))


def test_auto_alpha_trains_with_balanced_terms(digits: distill.Dataset, digits_feature_outputs: distill.TeacherOutputs,
                                               digits_plan: distill.FeaturePlan) -> None:
    config = TrainConfig(steps=30, kd="kd+at", auto_alpha=True, class_weighted=True)
    result = run_distill(_student(digits), digits, digits_feature_outputs, config, plan=digits_plan)
    assert result.accuracy > 0.3  # chance is 0.1


def test_auto_alpha_changes_the_optimisation_step(digits: distill.Dataset,
                                                  digits_outputs: distill.TeacherOutputs) -> None:
    """The same seed and the same first batch: one step with the balanced terms lands elsewhere than with alpha."""
    def after_one_step(auto_alpha: bool) -> list[torch.Tensor]:
        student = _student(digits)
        config = TrainConfig(steps=1, kd="kd", alpha=0.5, auto_alpha=auto_alpha)
        train(student, digits, CachedLogits(digits_outputs.train), config)
        return [param.detach().clone() for param in student.parameters()]

    start = [param.detach().clone() for param in _student(digits).parameters()]
    plain, balanced, again = after_one_step(False), after_one_step(True), after_one_step(False)
    assert all(torch.equal(a, b) for a, b in zip(plain, again))  # the step is deterministic
    assert not all(torch.equal(a, b) for a, b in zip(plain, start))
    moved_apart = sum(int((a != b).sum()) for a, b in zip(plain, balanced))
    assert moved_apart > 0.01 * sum(p.numel() for p in plain), moved_apart


def test_ema_teacher_follows_the_student(digits: distill.Dataset, digits_outputs: distill.TeacherOutputs) -> None:
    student = _student(digits)
    config = TrainConfig(steps=3, kd=[{"name": "ema", "decay": 0.0}])
    criterion = build_criterion(student, config.kd, digits.input_shape, digits.num_classes,
                                teacher_logits=[digits_outputs.train])
    train(student, digits, CachedLogits(digits_outputs.train), config, criterion=criterion)
    for averaged, current in zip(criterion.methods["ema"].average.parameters(), student.parameters()):
        torch.testing.assert_close(averaged, current)  # decay 0: the average is the latest student
