"""Distillation losses, functional like ``torch.nn.functional``."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """Hinton et al. (2015): batch-mean KL(p_t || p_s) of temperature-softened outputs, times T².

    The T² factor keeps the gradient magnitude of the soft term independent of the temperature.
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature**2


def hinton_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                temperature: float = 4.0, alpha: float = 0.9) -> torch.Tensor:
    """``alpha * kd_loss + (1 - alpha) * cross_entropy``: alpha balances soft and hard targets."""
    soft = kd_loss(student_logits, teacher_logits, temperature)
    hard = F.cross_entropy(student_logits, targets)
    return alpha * soft + (1.0 - alpha) * hard
