"""`nas.pareto.hypervolume` against areas worked out by hand."""

from __future__ import annotations

import pytest

from nas.pareto import hypervolume

# (accuracy, latency ms): a front of three, one dominated point and one slower than the reference.
POINTS = [(0.9, 2.0), (0.8, 1.0), (0.5, 0.5), (0.7, 3.0), (0.95, 5.0)]


def test_hypervolume_is_the_staircase_area_up_to_the_reference() -> None:
    # Reference (0, 4 ms): 0.5 x (1.0 - 0.5) + 0.8 x (2.0 - 1.0) + 0.9 x (4.0 - 2.0) = 0.25 + 0.8 + 1.8.
    assert hypervolume(POINTS, (0.0, 4.0)) == pytest.approx(2.85)
    assert hypervolume(reversed(POINTS), (0.0, 4.0)) == pytest.approx(2.85)  # order does not matter
    # Reference (0.6, 4 ms): only what lies above 0.6 counts: 0.2 x (2.0 - 1.0) + 0.3 x (4.0 - 2.0).
    assert hypervolume(POINTS, (0.6, 4.0)) == pytest.approx(0.8)


def test_points_not_better_than_the_reference_add_nothing() -> None:
    assert hypervolume([], (0.0, 4.0)) == 0.0
    assert hypervolume([(0.95, 5.0), (0.9, 4.0), (0.0, 1.0)], (0.0, 4.0)) == 0.0
    assert hypervolume([(0.9, 2.0), (0.9, 2.0)], (0.0, 4.0)) == pytest.approx(1.8)  # a repeated point counts once
