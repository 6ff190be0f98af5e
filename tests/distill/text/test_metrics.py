from __future__ import annotations

import numpy as np
import pytest

import distill
from distill.text.metrics import mean_cosine


def test_text_fidelity() -> None:
    rng = np.random.default_rng(0)
    teacher = rng.standard_normal((50, 16))
    same = distill.text_fidelity(teacher, teacher)
    assert same.cosine == pytest.approx(1.0) and same.neighbour_agreement == 1.0 and same.k == 10
    rotation = np.linalg.qr(rng.standard_normal((16, 16)))[0]
    rotated = distill.text_fidelity(teacher @ rotation, teacher)  # neighbours survive a rotation, cosines do not
    assert rotated.neighbour_agreement == 1.0 and rotated.cosine < 0.9
    unrelated = distill.text_fidelity(rng.standard_normal((50, 16)), teacher)
    assert unrelated.neighbour_agreement < 0.5 and abs(unrelated.cosine) < 0.2
    assert distill.text_fidelity(teacher[:4], teacher[:4], k=10).k == 3


def test_the_cosine_interval_brackets_the_mean_and_narrows_with_more_texts() -> None:
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(400, 8))
    student = teacher + rng.normal(scale=0.8, size=teacher.shape)
    few, many = (distill.cosine_interval(student[:n], teacher[:n]) for n in (40, 400))
    for (low, high), n in ((few, 40), (many, 400)):
        assert low < mean_cosine(student[:n], teacher[:n]) < high
    assert many[1] - many[0] < 0.5 * (few[1] - few[0])  # ~1/sqrt(10) as wide
    assert distill.cosine_interval(teacher, teacher) == pytest.approx([1.0, 1.0])
