from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import distill
from distill import (CachedLogits, DistillError, OnlineTeacher, TrainConfig, build_criterion, distill as run_distill,
                     evaluate, train)
from distill import registry
from distill.registry import BuildContext, KDMethod, KDStep
from search_spaces import get_space


def _student(digits: distill.Dataset) -> nn.Module:
    torch.manual_seed(0)
    return get_space("mbconv").build(get_space("mbconv").smallest(), digits.input_shape, digits.num_classes)


def test_short_distillation_learns_and_agrees_with_the_teacher(digits: distill.Dataset,
                                                               digits_outputs: distill.TeacherOutputs) -> None:
    result = run_distill(_student(digits), digits, digits_outputs, TrainConfig(epochs=4))
    assert result.accuracy > 0.6  # chance is 0.1
    assert result.agreement > 0.6
    assert result.steps == 4 * int(np.ceil(len(digits.x_train) / 64))


def test_step_budget_overrides_epochs(digits: distill.Dataset) -> None:
    assert train(_student(digits), digits, None, TrainConfig(epochs=50, steps=7)).steps == 7


def test_cached_and_online_soft_targets_agree(digits: distill.Dataset, digits_teacher: distill.Teacher,
                                              digits_outputs: distill.TeacherOutputs) -> None:
    indices = np.array([5, 1, 300])
    inputs = torch.from_numpy(digits.x_train[indices])
    online = OnlineTeacher(digits_teacher.module)(indices, inputs)
    torch.testing.assert_close(CachedLogits(digits_outputs.train)(indices, inputs), online, atol=1e-4, rtol=1e-4)


def test_training_is_seeded(digits: distill.Dataset, digits_outputs: distill.TeacherOutputs) -> None:
    first = run_distill(_student(digits), digits, digits_outputs, TrainConfig(steps=20, seed=3))
    second = run_distill(_student(digits), digits, digits_outputs, TrainConfig(steps=20, seed=3))
    assert first.accuracy == second.accuracy


def test_rungs_are_asked_in_eval_mode_and_can_stop_training(digits: distill.Dataset,
                                                             digits_outputs: distill.TeacherOutputs) -> None:
    asked: list[tuple[int, bool]] = []

    def stop_at_second_rung(rung: int, model: nn.Module) -> bool:
        asked.append((rung, model.training))
        return rung == 1

    rungs = distill.Rungs((1 / 9, 1 / 3), stop_at_second_rung)
    result = run_distill(_student(digits), digits, digits_outputs, TrainConfig(steps=90), rungs=rungs)
    assert asked == [(0, False), (1, False)]
    assert (result.steps, result.stopped_at_rung, result.to_dict()["stopped_at_rung"]) == (30, 1, 1)
    never = distill.Rungs((1 / 9, 1 / 3), lambda rung, model: False)
    assert run_distill(_student(digits), digits, digits_outputs, TrainConfig(steps=90), rungs=never).steps == 90


def test_nan_loss_stops_with_a_clear_error(digits: distill.Dataset, digits_outputs: distill.TeacherOutputs) -> None:
    class Diverging(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1)) * float("nan")

    with pytest.raises(DistillError, match="loss became nan at step 1 of"):
        train(Diverging(), digits, CachedLogits(digits_outputs.train), TrainConfig(steps=5))


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match="`0 <= alpha <= 1`"):
        TrainConfig(alpha=1.5)
    with pytest.raises(ValueError, match="budget must be positive"):
        TrainConfig(steps=0)


def test_evaluate_counts_accuracy_and_agreement() -> None:
    class Fixed(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :3]

    x = np.eye(3, dtype=np.float32)[[0, 1, 2, 2]].reshape(4, 1, 1, 3)
    teacher = np.eye(3, dtype=np.float32)[[0, 1, 1, 1]]
    result = evaluate(Fixed(), x, np.array([0, 1, 2, 0]), teacher)
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
    criterion = build_criterion(student, digits, config, teachers=[digits_outputs])
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


def test_ema_teacher_follows_the_student(digits: distill.Dataset, digits_outputs: distill.TeacherOutputs) -> None:
    student = _student(digits)
    config = TrainConfig(steps=3, kd=[{"name": "ema", "decay": 0.0}])
    criterion = build_criterion(student, digits, config, teachers=[digits_outputs])
    train(student, digits, CachedLogits(digits_outputs.train), config, criterion=criterion)
    for averaged, current in zip(criterion.methods["ema"].average.parameters(), student.parameters()):
        torch.testing.assert_close(averaged, current)  # decay 0: the average is the latest student
