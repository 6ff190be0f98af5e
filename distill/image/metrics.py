"""Quality of a distilled student against its labels and its teacher, from logits alone."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Metrics:
    accuracy: float
    accuracy_low: float  # bootstrap 95% percentile interval of the accuracy
    accuracy_high: float
    teacher_accuracy: float
    retention: float  # accuracy / teacher_accuracy (NaN for a teacher with no correct prediction)
    agreement: float  # top-1 agreement with the teacher
    kl_to_teacher: float  # mean KL(p_teacher ‖ p_student) at temperature 1, in nats
    ece: float  # expected calibration error over 15 equal-width confidence bins


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def expected_calibration_error(logits: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """ECE, Guo et al. ICML 2017: ``Σ_b (|B_b| / n) · |acc(B_b) − conf(B_b)|`` over confidence bins
    ``((b − 1) / bins, b / bins]``, the confidence being the top softmax probability."""
    probabilities = np.exp(log_softmax(np.asarray(logits, dtype=np.float64)))
    confidence, predictions = probabilities.max(axis=1), probabilities.argmax(axis=1)
    correct = predictions == labels
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for b in np.unique(index):
        members = index == b
        total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(total)


def bootstrap_interval(correct: np.ndarray, resamples: int = 1000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy of the 0/1 array ``correct``.

    Resampling n outcomes with replacement from k correct ones gives Binomial(n, k/n) correct ones, so each
    resample's accuracy is drawn from that distribution directly (the same bootstrap, O(resamples) work).
    """
    if len(correct) == 0 or resamples < 1 or not 0 < level < 1:
        raise ValueError(f"`len(correct) >= 1`, `resamples >= 1` and `0 < level < 1` must hold, but got "
                         f"({len(correct)=}, {resamples=}, {level=}).")
    n = len(correct)
    accuracies = np.random.default_rng(seed).binomial(n, float(np.mean(correct)), size=resamples) / n
    low, high = np.quantile(accuracies, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def quality_metrics(student_logits: np.ndarray, teacher_logits: np.ndarray, labels: np.ndarray, *,
                    bins: int = 15, resamples: int = 1000, seed: int = 0) -> Metrics:
    """Accuracy (with a bootstrap 95% interval), retention, agreement, KL to the teacher and ECE."""
    student_logits, teacher_logits = np.asarray(student_logits, np.float64), np.asarray(teacher_logits, np.float64)
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape or labels.shape != student_logits.shape[:1]:
        raise ValueError(f"Student and teacher logits must be (samples, classes) of the same shape and labels "
                         f"(samples,), but got ({student_logits.shape=}, {teacher_logits.shape=}, {labels.shape=}).")
    predictions, teacher_predictions = student_logits.argmax(axis=1), teacher_logits.argmax(axis=1)
    correct = (predictions == labels).astype(np.float64)
    accuracy, teacher_accuracy = float(correct.mean()), float((teacher_predictions == labels).mean())
    log_p_student, log_p_teacher = log_softmax(student_logits), log_softmax(teacher_logits)
    kl = float((np.exp(log_p_teacher) * (log_p_teacher - log_p_student)).sum(axis=1).mean())
    low, high = bootstrap_interval(correct, resamples, seed=seed)
    return Metrics(
        accuracy=accuracy, accuracy_low=low, accuracy_high=high, teacher_accuracy=teacher_accuracy,
        retention=accuracy / teacher_accuracy if teacher_accuracy > 0 else math.nan,
        agreement=float((predictions == teacher_predictions).mean()), kl_to_teacher=kl,
        ece=expected_calibration_error(student_logits, labels, bins),
    )
