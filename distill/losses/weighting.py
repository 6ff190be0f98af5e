"""Weights of distillation terms: per class (imbalanced data), per teacher (confidence), per term (gradient norms)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def class_frequency_weights(labels: np.ndarray, num_classes: int) -> Tensor:
    """Inverse class-frequency weights ``w_c = (N / K) / n_c`` (scikit-learn's ``class_weight="balanced"``).

    A sample of class ``c`` weighs ``w_c``, so every class contributes the same total weight ``N / K`` and the
    mean weight over the ``N`` labels is 1.
    """
    counts = np.bincount(labels, minlength=num_classes)
    if len(counts) != num_classes or counts.min() == 0:
        raise ValueError(f"Every class 0..{num_classes - 1} must occur in the labels, and no other, but got counts "
                         f"{counts.tolist()}.")
    return torch.from_numpy(len(labels) / num_classes / counts).float()


def confidence_weights(teacher_logits: Tensor, targets: Tensor) -> Tensor:
    """Per-sample teacher weights of CA-MKD, Zhang et al. ICASSP 2022, "Confidence-Aware Multi-Teacher KD".

    For teacher logits (batch, K, classes) with ``CE_k`` teacher k's cross-entropy on the label:
    ``w_k = (1 − softmax_k(CE)_k) / (K − 1)`` — the more confident teacher weighs more; each row sums to 1.
    A single teacher weighs 1.
    """
    if teacher_logits.ndim != 3 or targets.shape != teacher_logits.shape[:1]:
        raise ValueError(f"`teacher_logits` must be (batch, teachers, classes) and `targets` (batch,), but got "
                         f"(teacher_logits.shape={tuple(teacher_logits.shape)}, targets.shape={tuple(targets.shape)}).")
    teachers = teacher_logits.shape[1]
    if teachers == 1:
        return torch.ones(teacher_logits.shape[:2], device=teacher_logits.device)
    index = targets.view(-1, 1, 1).expand(-1, teachers, 1)
    cross_entropy = -F.log_softmax(teacher_logits, dim=2).gather(2, index).squeeze(2)
    return (1.0 - F.softmax(cross_entropy, dim=1)) / (teachers - 1)


def balanced_backward(losses: Mapping[str, Tensor], weights: Mapping[str, float], params: Sequence[Tensor],
                      num_student_params: int, reference: str = "ce", eps: float = 1e-12) -> dict[str, float]:
    """Automatic α: accumulate ``g_ref + Σ_k w_k · s_k · g_k`` into ``.grad``, with ``s_k = ‖g_ref‖ / ‖g_k‖``.

    ``g_k`` is the gradient of ``losses[k]``; the norms are taken over ``params[:num_student_params]`` (the
    student's parameters, not the terms' own projections), so with weight 1 every term moves the student as far
    as the cross-entropy does. Like GradNorm (Chen et al. ICML 2018) with the reference term as the target norm.
    Returns the scales ``s_k``.
    """
    if reference not in losses:
        raise ValueError(f"The reference term {reference!r} must be one of the losses, but got {sorted(losses)}.")
    names = [reference, *(name for name in losses if name != reference)]
    gradients = {}
    for position, name in enumerate(names):
        grads = torch.autograd.grad(losses[name], params, retain_graph=position < len(names) - 1, allow_unused=True)
        gradients[name] = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]

    def norm(name: str) -> Tensor:
        return torch.sqrt(sum(g.pow(2).sum() for g in gradients[name][:num_student_params]))

    reference_norm = norm(reference)
    scales = {name: float(reference_norm / norm(name).clamp_min(eps)) for name in names[1:]}
    for index, param in enumerate(params):
        total = gradients[reference][index] + sum(weights[name] * scales[name] * gradients[name][index]
                                                  for name in names[1:])
        param.grad = total if param.grad is None else param.grad + total
    return scales
