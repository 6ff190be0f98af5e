from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from distill.losses.weighting import balanced_backward, class_frequency_weights, confidence_weights


def test_class_frequency_weights_are_n_over_k_over_count() -> None:
    # N = 6, K = 3, counts 3, 2, 1 → (6/3)/3, (6/3)/2, (6/3)/1.
    weights = class_frequency_weights(np.array([0, 0, 0, 1, 1, 2]), 3)
    torch.testing.assert_close(weights, torch.tensor([2 / 3, 1.0, 2.0]))
    per_sample = weights[torch.tensor([0, 0, 0, 1, 1, 2])]
    assert per_sample.mean().item() == pytest.approx(1.0)  # the mean weight over the labels is 1
    assert [per_sample[torch.tensor([0, 0, 0, 1, 1, 2]) == c].sum().item() for c in range(3)] == pytest.approx([2, 2, 2])


def test_class_frequency_weights_need_every_class() -> None:
    with pytest.raises(ValueError, match=r"Every class 0..2 must occur .* but got counts \[2, 0, 1\]"):
        class_frequency_weights(np.array([0, 0, 2]), 3)


def test_confidence_weights_follow_ca_mkd() -> None:
    # Teacher 0 gives the label probability 1/2 (CE = ln 2), teacher 1 gives 1/4 (CE = ln 4):
    # softmax([ln 2, ln 4]) = [1/3, 2/3] → w = 1 − that, over K − 1 = 1: [2/3, 1/3].
    logits = torch.log(torch.tensor([[[0.5, 0.5], [0.25, 0.75]]]))
    torch.testing.assert_close(confidence_weights(logits, torch.tensor([0])), torch.tensor([[2 / 3, 1 / 3]]))
    three = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(confidence_weights(three, torch.tensor([0, 1, 2, 3])).sum(dim=1), torch.ones(4))
    assert confidence_weights(three[:, :1], torch.tensor([0, 1, 2, 3])).tolist() == [[1.0]] * 4


def test_auto_alpha_gives_every_term_the_reference_gradient_norm() -> None:
    torch.manual_seed(0)
    model, projection = nn.Linear(3, 2), nn.Linear(2, 2)
    x = torch.randn(5, 3)
    out = model(x)
    losses = {"ce": out.pow(2).mean(), "kd": 10.0 * out.sum(), "at": projection(out).abs().mean()}
    params = [*model.parameters(), *projection.parameters()]
    grads = {name: torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
             for name, loss in losses.items()}

    def norm(name: str) -> float:  # over the model's parameters only
        return math.sqrt(sum(g.pow(2).sum().item() for g in grads[name][:2]))

    scales = balanced_backward(losses, {"kd": 1.0, "at": 0.5}, params, num_student_params=2)
    assert scales == pytest.approx({"kd": norm("ce") / norm("kd"), "at": norm("ce") / norm("at")})
    for name in ("kd", "at"):  # each scaled term moves the model as far as the cross-entropy does
        assert scales[name] * norm(name) == pytest.approx(norm("ce"))
    expected = grads["ce"][0] + scales["kd"] * grads["kd"][0] + 0.5 * scales["at"] * grads["at"][0]
    torch.testing.assert_close(model.weight.grad, expected)
    torch.testing.assert_close(projection.weight.grad, 0.5 * scales["at"] * grads["at"][2])
