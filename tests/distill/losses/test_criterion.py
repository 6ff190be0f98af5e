"""The criterion of a spec, built for a search-space student: every registered method must move the student."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import distill
from distill import KDStep, TeacherCNN, build_criterion, plan_features, teacher_layers
from distill.features import capture, extract
from search_spaces import get_space

INPUT_SHAPE, CLASSES, BATCH = (1, 8, 8), 10, 16


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(BATCH, *INPUT_SHAPE, generator=_seeded(0)), torch.arange(BATCH) % CLASSES


@pytest.fixture(scope="module")
def teachers() -> list[nn.Module]:
    """Two untrained built-in teachers: their outputs on the batch stand for the cached ones."""
    modules = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        modules.append(TeacherCNN(INPUT_SHAPE, CLASSES).eval())
    return modules


def _student() -> nn.Module:
    torch.manual_seed(0)
    space = get_space("mbconv")
    return space.build(space.smallest(), INPUT_SHAPE, CLASSES)


@pytest.mark.parametrize("name", distill.list_losses())
def test_every_method_alone_sends_a_finite_non_zero_gradient_to_the_student(
        name: str, batch: tuple[torch.Tensor, torch.Tensor], teachers: list[nn.Module]) -> None:
    x, y = batch
    student = _student()
    plan = plan_features(student, teachers[0], INPUT_SHAPE)
    logits, features = extract(teachers[0], x.numpy(), teacher_layers(name, plan))
    second, _ = extract(teachers[1], x.numpy(), [])
    criterion = build_criterion(student, name, INPUT_SHAPE, CLASSES, teacher_logits=[logits, second],
                                teacher_features=features, plan=plan)
    with torch.no_grad():  # one step away from where the criterion was built (the EMA teacher lags behind)
        for param in student.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=_seeded(3)))
    student.train()
    with capture(student, criterion.student_paths) as outputs:
        step = KDStep(np.arange(BATCH), x, y, student(x), dict(outputs), torch.from_numpy(logits), temperature=4.0)
        term = criterion.methods[name](step)
    term.backward()
    grads = [param.grad for param in student.parameters() if param.grad is not None]
    assert grads, f"no gradient from {name!r} reaches the student"
    assert all(torch.isfinite(grad).all() for grad in grads), name
    norm = torch.sqrt(sum(grad.pow(2).sum() for grad in grads))
    assert norm > 1e-6, f"the {name!r} term moves the student by a gradient of norm {norm.item()}"


def test_criterion_is_cross_entropy_plus_weighted_terms(batch: tuple[torch.Tensor, torch.Tensor],
                                                       teachers: list[nn.Module]) -> None:
    x, y = batch
    student = _student()
    logits, _ = extract(teachers[0], x.numpy(), [])
    criterion = build_criterion(student, "kd+dkd:0.5", INPUT_SHAPE, CLASSES, teacher_logits=[logits])
    step = KDStep(np.arange(BATCH), x, y, student(x), {}, torch.from_numpy(logits), temperature=2.0)
    losses = criterion(step)
    assert set(losses) == {"ce", "kd", "dkd"}
    expected = 0.2 * losses["ce"] + 0.8 * (losses["kd"] + 0.5 * losses["dkd"])
    torch.testing.assert_close(criterion.combine(losses, alpha=0.8), expected)
    plain = build_criterion(student, "none", INPUT_SHAPE, CLASSES)
    plain_losses = plain(step)
    assert set(plain_losses) == {"ce"} and plain.combine(plain_losses, alpha=0.8) is plain_losses["ce"]
