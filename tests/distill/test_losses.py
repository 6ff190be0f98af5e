from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill import hinton_loss, kd_loss


def test_kd_is_zero_for_equal_logits() -> None:
    logits = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    assert kd_loss(logits, logits.clone(), temperature=3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_matches_the_closed_form_on_two_classes() -> None:
    # p_t = softmax([2, 0] / 2) = sigmoid(1); p_s = softmax([0, 0]) = 1/2; KL * T² with T = 2.
    p = 1 / (1 + math.exp(-1))
    expected = (p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)) * 4
    value = kd_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]]), temperature=2.0)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_kd_is_a_batch_mean() -> None:
    s, t = torch.randn(4, 6), torch.randn(4, 6)
    per_sample = [kd_loss(s[i:i + 1], t[i:i + 1], 2.0) for i in range(4)]
    assert kd_loss(s, t, 2.0).item() == pytest.approx(torch.stack(per_sample).mean().item(), rel=1e-5)


def test_kd_gradient_is_t_times_softened_difference() -> None:
    # d(KL * T²)/dz_s = T * (softmax(z_s / T) - softmax(z_t / T)) / batch
    generator = torch.Generator().manual_seed(1)
    student = torch.randn(3, 4, generator=generator, requires_grad=True)
    teacher = torch.randn(3, 4, generator=generator)
    for temperature in (1.0, 4.0):
        (grad,) = torch.autograd.grad(kd_loss(student, teacher, temperature), student)
        expected = temperature * (F.softmax(student / temperature, -1) - F.softmax(teacher / temperature, -1)) / 3
        torch.testing.assert_close(grad, expected.detach())


def test_hinton_loss_mixes_soft_and_hard_terms_by_alpha() -> None:
    s, t, y = torch.randn(5, 3), torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    soft, hard = kd_loss(s, t, 4.0), F.cross_entropy(s, y)
    assert hinton_loss(s, t, y, 4.0, alpha=0.7).item() == pytest.approx((0.7 * soft + 0.3 * hard).item(), rel=1e-6)
    assert hinton_loss(s, t, y, 4.0, alpha=0.0).item() == pytest.approx(hard.item(), rel=1e-6)
