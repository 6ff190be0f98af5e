from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from distill import KDTerm
from distill.losses.functional import kd_loss
from distill.losses.online import ema_update, mutual_losses
from distill.losses.registry import BuildContext, KDStep


def _context(student: nn.Module, shapes: dict[str, tuple[int, ...]] | None = None) -> BuildContext:
    return BuildContext(student=student, student_shapes=shapes or {}, num_classes=2, plan=None, teacher_features={},
                        teacher_logits=[], class_weights=None, seed=0)


def _step(inputs: torch.Tensor, logits: torch.Tensor, targets: list[int], features: dict | None = None,
          temperature: float = 1.0) -> KDStep:
    return KDStep(indices=np.arange(len(logits)), inputs=inputs, targets=torch.tensor(targets), logits=logits,
                  features=features or {}, teacher_logits=None, temperature=temperature)


def test_mutual_learning_terms_are_symmetric_and_train_only_their_own_network() -> None:
    # Two networks: L_0 = KL(p_1 ‖ p_0), L_1 = KL(p_0 ‖ p_1); [2, 0] vs uniform at T = 2 gives the closed form.
    first, second = torch.tensor([[0.0, 0.0]], requires_grad=True), torch.tensor([[2.0, 0.0]], requires_grad=True)
    losses = mutual_losses([first, second], temperature=2.0)
    p = 1 / (1 + math.exp(-1))
    assert losses[0].item() == pytest.approx((p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)) * 4, rel=1e-6)
    assert losses[1].item() == pytest.approx((0.5 * math.log(0.5 / p) + 0.5 * math.log(0.5 / (1 - p))) * 4, rel=1e-6)
    (grad_first, grad_second) = torch.autograd.grad(losses[0], [first, second], allow_unused=True)
    assert grad_second is None and grad_first.abs().sum() > 0  # the other network's prediction is a fixed target
    # Three networks: each term is the mean over the two others.
    third = torch.tensor([[0.0, 1.0]])
    losses = mutual_losses([first, second, third], temperature=1.0)
    assert losses[2].item() == pytest.approx(((kd_loss(third, first, 1.0) + kd_loss(third, second, 1.0)) / 2).item())


def test_dml_term_is_the_student_mimicry_plus_each_peer_loss() -> None:
    torch.manual_seed(0)
    student = nn.Linear(3, 2)
    term = KDTerm("dml", options={"peers": 2})
    method = term.method(_context(student), **term.resolved)
    assert len(method.peers) == 2 and not torch.equal(method.peers[0].weight, student.weight)  # re-initialised
    assert not torch.equal(method.peers[0].weight, method.peers[1].weight)
    inputs, targets = torch.randn(4, 3), [0, 1, 1, 0]
    logits = student(inputs)
    value = method(_step(inputs, logits, targets))
    peer_logits = [peer(inputs) for peer in method.peers]
    everyone = [logits, *peer_logits]
    mimicry = [torch.stack([kd_loss(own, other, 1.0) for j, other in enumerate(everyone) if j != k]).mean()
               for k, own in enumerate(everyone)]
    expected = mimicry[0] + sum(F.cross_entropy(p, torch.tensor(targets)) + m for p, m in zip(peer_logits, mimicry[1:]))
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)


def test_ema_update_is_the_weighted_average_of_the_parameters() -> None:
    average, model = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        average.weight.fill_(1.0)
        model.weight.fill_(3.0)
        model.running_mean.fill_(5.0)
    ema_update(average, model, decay=0.75)
    torch.testing.assert_close(average.weight, torch.full((2,), 0.75 * 1.0 + 0.25 * 3.0))
    ema_update(average, model, decay=0.75)  # twice: 3 − (3 − 1) · 0.75²
    torch.testing.assert_close(average.weight, torch.full((2,), 3.0 - 2.0 * 0.75**2))
    torch.testing.assert_close(average.running_mean, torch.zeros(2))  # its own statistics, not the student's


def test_ema_teacher_teaches_from_the_average_and_updates_after_each_step() -> None:
    student = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        student.weight.copy_(torch.eye(2))
    term = KDTerm("ema", options={"decay": 0.5})
    method = term.method(_context(student), **term.resolved)
    assert not any(p.requires_grad for p in method.average.parameters())
    with torch.no_grad():
        student.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 1.0]]))
    method.after_step(student)  # average weight: (I + diag(3, 1)) / 2 = diag(2, 1)
    torch.testing.assert_close(method.average.weight, torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    inputs = torch.tensor([[1.0, 0.0]])
    value = method(_step(inputs, torch.zeros(1, 2), [0], temperature=2.0))  # teacher logits [2, 0], student uniform
    p = 1 / (1 + math.exp(-1))
    assert value.item() == pytest.approx((p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)) * 4, rel=1e-5)


class _TwoStages(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stages = nn.ModuleList([nn.Conv2d(1, 2, 1), nn.Conv2d(2, 2, 1)])
        self.classifier = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.stages[1](self.stages[0](x)).mean(dim=(2, 3)))


def test_self_distillation_trains_an_exit_per_shallow_stage_from_the_final_head() -> None:
    student = _TwoStages()
    term = KDTerm("self")
    method = term.method(_context(student, {"stages.0": (2, 3, 3), "stages.1": (2, 3, 3)}), **term.resolved)
    assert method.student_paths == ("stages.0",) and len(method.exits) == 1
    linear = method.exits[0][2]
    with torch.no_grad():
        linear.weight.copy_(torch.eye(2))
        linear.bias.zero_()
    feature = torch.zeros(1, 2, 3, 3)
    feature[0, 0] = 2.0  # pooled: exit logits [2, 0]
    final = torch.zeros(1, 2, requires_grad=True)  # the final head: uniform
    value = method(_step(torch.zeros(1, 1, 3, 3), final, [1], {"stages.0": feature}, temperature=1.0))
    # CE of [2, 0] on label 1 plus KL(uniform ‖ softmax([2, 0])) at T = 1.
    p = 1 / (1 + math.exp(-2))
    expected = -math.log(1 - p) + 0.5 * math.log(0.5 / p) + 0.5 * math.log(0.5 / (1 - p))
    assert value.item() == pytest.approx(expected, rel=1e-5)
    (grad,) = torch.autograd.grad(value, final, allow_unused=True)
    assert grad is None  # the final head teaches; it is not pulled toward the exit
    with pytest.raises(ValueError, match="at least 2 stages"):
        single = copy.deepcopy(student)
        single.stages = nn.ModuleList([single.stages[0]])
        term.method(_context(single, {"stages.0": (2, 3, 3)}), **term.resolved)
