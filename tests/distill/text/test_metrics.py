from __future__ import annotations

import numpy as np
import pytest

import distill


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
