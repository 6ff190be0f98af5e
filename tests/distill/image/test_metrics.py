from __future__ import annotations

import math

import numpy as np
import pytest

from distill import quality_metrics
from distill.image.metrics import bootstrap_interval, expected_calibration_error


def _logits(probabilities: list[list[float]]) -> np.ndarray:
    return np.log(np.array(probabilities))


def test_ece_matches_a_hand_computed_example() -> None:
    # Confidences .9, .9 (bin 14, one right: |.5 − .9| = .4) and .6, .6 (bin 9, both right: |1 − .6| = .4);
    # each bin holds half the samples: ECE = .5 · .4 + .5 · .4 = .4.
    logits = _logits([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    assert expected_calibration_error(logits, np.array([0, 1, 0, 1])) == pytest.approx(0.4)
    # Bins are right-closed: a confidence of exactly 2/3 falls in (9/15, 10/15] with 0.62, not with 0.7.
    logits = _logits([[2 / 3, 1 / 3], [0.62, 0.38], [0.7, 0.3]])
    expected = 2 / 3 * abs(1 - (2 / 3 + 0.62) / 2) + 1 / 3 * abs(0 - 0.7)
    assert expected_calibration_error(logits, np.array([0, 0, 1])) == pytest.approx(expected)


def test_bootstrap_interval_matches_the_normal_approximation() -> None:
    correct = np.array([1.0] * 800 + [0.0] * 200)
    low, high = bootstrap_interval(correct, resamples=20000, seed=1)
    half_width = 1.96 * math.sqrt(0.8 * 0.2 / 1000)
    assert low == pytest.approx(0.8 - half_width, abs=0.003) and high == pytest.approx(0.8 + half_width, abs=0.003)
    assert bootstrap_interval(np.ones(50)) == (1.0, 1.0)
    with pytest.raises(ValueError, match=r"len\(correct\)=0"):
        bootstrap_interval(np.array([]))


def test_quality_metrics_by_hand() -> None:
    student = _logits([[0.5, 0.5 - 1e-9, 1e-9], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    teacher = _logits([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])
    labels = np.array([0, 1, 2, 2])
    metrics = quality_metrics(student, teacher, labels)
    # Student right on 0, 1, 2 (3/4); teacher on 0, 1, 3 (3/4); they agree on samples 0 and 1.
    assert (metrics.accuracy, metrics.teacher_accuracy, metrics.retention, metrics.agreement) == (0.75, 0.75, 1.0, 0.5)
    p_t, p_s = np.exp(teacher), np.exp(student)
    assert metrics.kl_to_teacher == pytest.approx(float((p_t * np.log(p_t / p_s)).sum(1).mean()), rel=1e-6)
    assert metrics.ece == pytest.approx(expected_calibration_error(student, labels))
    assert metrics.accuracy_low <= 0.75 <= metrics.accuracy_high
    assert math.isnan(quality_metrics(student, teacher, np.array([2, 2, 1, 1])).retention)  # teacher never right
