"""`nas.pareto.hypervolume` against areas worked out by hand, and the front table's columns."""

from __future__ import annotations

import pytest

from nas.pareto import format_table, hypervolume

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


def test_the_table_shows_the_normalised_latency_beside_the_raw_median() -> None:
    record = {"trial": 3, "accuracy": 0.95, "agreement": 0.9, "latency_ms": 0.0198, "latency_raw_ms": 0.0176,
              "latency_p90_ms": 0.0183, "params": 9978, "macs": 184576}
    header, row = format_table([record]).splitlines()
    assert header.split() == ["trial", "accuracy", "agreement", "latency_ms", "latency_raw_ms", "params", "macs"]
    assert row.split() == ["3", "0.9500", "0.9000", "0.0198", "0.0176", "9978", "184576"]
