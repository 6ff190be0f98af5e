"""`nas.pareto.hypervolume` against areas worked out by hand, the front table's columns, and how far each front
student leads the faster ones beyond the validation noise."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.distributions import FloatDistribution

from nas.pareto import format_table, front_records, hypervolume, noise_note, non_dominated

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


def test_non_dominated_keeps_the_points_no_other_beats_in_score_and_every_cost() -> None:
    points = {"fast": (0.8, 1.0), "slow": (0.9, 2.0), "worse": (0.85, 2.5), "tie": (0.8, 1.0)}
    assert non_dominated(points) == {"fast", "slow", "tie"}  # equal points do not dominate each other
    assert non_dominated({"big": (0.95, 3.0, 9.0), "small": (0.95, 3.0, 1.0)}) == {"small"}  # a third cost counts
    assert non_dominated({}) == set()


def test_the_table_shows_the_normalised_latency_beside_the_raw_median() -> None:
    record = {"trial": 3, "accuracy": 0.95, "agreement": 0.9, "latency_ms": 0.0198, "latency_raw_ms": 0.0176,
              "latency_p90_ms": 0.0183, "params": 9978, "macs": 184576}
    header, row = format_table([record]).splitlines()
    assert header.split() == ["trial", "accuracy", "agreement", "latency_ms", "latency_raw_ms", "params", "macs"]
    assert row.split() == ["3", "0.9500", "0.9000", "0.0198", "0.0176", "9978", "184576"]


def _study(students: dict[str, tuple[float, float, float, float]], intervals: bool = True) -> optuna.Study:
    """A real study of trained trials: architecture hash -> (accuracy, its 95% interval's ends, latency_ms); without
    ``intervals`` the metrics have none (as a text student's cosine)."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for arch_hash, (accuracy, low, high, latency) in students.items():
        metrics = {"accuracy": accuracy, **({"accuracy_low": low, "accuracy_high": high} if intervals else {})}
        study.add_trial(optuna.trial.create_trial(
            values=[accuracy, latency], params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
            user_attrs={"arch_hash": arch_hash, "score": accuracy, "status": "trained", "latency": {"median_ms": latency},
                        "metrics": metrics}))
    return study


def test_the_front_shows_which_students_lead_a_faster_one_beyond_the_noise() -> None:
    study = _study({"fast": (0.80, 0.76, 0.84, 0.5), "close": (0.81, 0.77, 0.85, 0.8), "clear": (0.92, 0.90, 0.94, 1.2)})
    records = {r["arch_hash"]: r for r in front_records(study)}
    assert records["fast"]["lead_low"] is None  # nothing on the front is faster
    # 0.81 - 0.80 - hypot(0.81 - 0.77, 0.84 - 0.80): the interval of the lead reaches below 0
    assert records["close"]["lead_low"] == pytest.approx(0.01 - math.hypot(0.04, 0.04))
    # ahead of both faster students beyond the noise; the smaller lead, over "close", counts
    assert records["clear"]["lead_low"] == pytest.approx(0.11 - math.hypot(0.02, 0.04))
    assert records["clear"]["lead_low"] > 0
    note = noise_note(list(records.values()))
    assert note is not None and f"trial {records['close']['trial']} " in note
    assert noise_note([records["fast"], records["clear"]]) is None


def test_students_without_an_accuracy_interval_have_no_lead() -> None:
    study = _study({"fast": (0.80, 0.76, 0.84, 0.5), "slow": (0.90, 0.88, 0.92, 1.0)}, intervals=False)
    assert [r["lead_low"] for r in front_records(study)] == [None, None]


def test_with_a_third_objective_only_students_cheaper_in_every_cost_count() -> None:
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for arch_hash, accuracy, latency, size in (("fast_big", 0.80, 0.5, 9e5), ("slow_small", 0.81, 1.0, 1e5),
                                               ("slow_big", 0.95, 1.2, 9e5)):
        study.add_trial(optuna.trial.create_trial(
            values=[accuracy, latency, size], params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
            user_attrs={"arch_hash": arch_hash, "score": accuracy, "status": "trained", "latency": {"median_ms": latency},
                        "metrics": {"accuracy": accuracy, "accuracy_low": accuracy - 0.02,
                                    "accuracy_high": accuracy + 0.02}}))
    records = {r["arch_hash"]: r for r in front_records(study)}
    assert records["fast_big"]["lead_low"] is None and records["slow_small"]["lead_low"] is None  # neither is cheaper
    # both are cheaper than slow_big in every cost: its smaller lead, over slow_small, counts
    assert records["slow_big"]["lead_low"] == pytest.approx(0.14 - math.hypot(0.02, 0.02))
