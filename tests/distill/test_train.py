from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import distill
from distill import CachedLogits, DistillError, OnlineTeacher, TrainConfig, distill as run_distill, evaluate, train
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
