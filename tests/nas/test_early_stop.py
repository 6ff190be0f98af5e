"""Noise-aware successive halving: the rule on numbers, then in real searches on real studies."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from nas.cli import main
from nas.early_stop import Validation, decide, difference_low, dominates, parse_rungs, wilson_interval


def test_rungs_parse_fractions_or_off() -> None:
    assert parse_rungs("1/9,1/3") == pytest.approx((1 / 9, 1 / 3))
    assert parse_rungs("0.25, 0.5") == (0.25, 0.5)
    assert parse_rungs("OFF") == ()


@pytest.mark.parametrize("text", ["", "1/3,1/9", "0.5,1", "0", "abc", "1/0", "0.2,0.2"])
def test_bad_rungs_are_refused_naming_the_form(text: str) -> None:
    with pytest.raises(ValueError, match="increasing fractions of the budget"):
        parse_rungs(text)


def test_dominance_needs_both_objectives_no_worse_and_one_better() -> None:
    assert dominates((0.9, 1.0), (0.8, 1.0)) and dominates((0.8, 0.5), (0.8, 1.0))
    assert not dominates((0.8, 1.0), (0.8, 1.0))  # equal points do not dominate
    assert not dominates((0.95, 2.0), (0.8, 1.0))  # more accurate but slower


DIGITS = Validation(samples=360, chance=0.1)


def test_wilson_interval_matches_the_textbook_values() -> None:
    assert wilson_interval(0.5, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson_interval(0.0, 50) == pytest.approx((0.0, 0.0713), abs=1e-4)  # sound at the edges
    assert wilson_interval(1.0, 50) == pytest.approx((0.9287, 1.0), abs=1e-4)


def test_the_difference_must_exceed_what_the_validation_set_resolves() -> None:
    assert difference_low(0.56, 0.50, 360) < 0  # 6 points on 360 samples: noise
    assert difference_low(0.65, 0.50, 360) > 0  # 15 points: real
    assert difference_low(0.56, 0.50, 20_000) > 0  # 6 points on 20,000 samples: real
    assert Validation.of(np.array([0, 0, 1, 2])) == Validation(4, 0.5)  # chance: the most frequent class


def test_a_trial_stops_when_a_third_of_its_peers_dominate_it_beyond_the_noise() -> None:
    point = (0.60, 1.0)
    better, worse = (0.9, 0.9), (0.5, 1.1)

    def stopped(peers: list[tuple[float, float]]) -> bool:
        return decide(point, dict(enumerate(peers)), DIGITS).stopped

    assert not stopped([better] * 3)  # too few peers to judge
    assert not stopped([better, worse, worse, worse])  # 1 of 4 < ceil(4/3) = 2
    assert stopped([better, better, worse, worse])  # 2 of 4
    assert not stopped([better] + [worse] * 5)  # 1 of 6 < ceil(6/3) = 2
    assert stopped([better] * 2 + [worse] * 4)  # 2 of 6
    assert not decide((0.5, 0.01), dict(enumerate([better] * 6)), DIGITS).stopped  # the fastest is never dominated


def test_peers_within_the_noise_never_stop_a_trial() -> None:
    decision = decide((0.60, 1.0), dict(enumerate([(0.63, 0.5)] * 6)), DIGITS)  # better and faster, by noise only
    assert not decision.stopped and decision.dominating == [] and decision.within_noise == list(range(6))
    assert "0 of 6 peers dominate it beyond the noise" in decision.reason
    big = Validation(samples=20_000, chance=0.1)  # the same gap on a large validation set is real
    assert decide((0.60, 1.0), dict(enumerate([(0.63, 0.5)] * 6)), big).stopped


def test_latency_alone_or_chance_never_stops_a_trial() -> None:
    faster_only = decide((0.60, 1.0), dict(enumerate([(0.60, 0.1)] * 6)), DIGITS)  # as accurate, 10x faster
    assert not faster_only.stopped and faster_only.dominating == [] and len(faster_only.within_noise) == 6
    at_chance = decide((0.097, 1.0), dict(enumerate([(0.103, 0.1)] * 6)), DIGITS)  # the first rung
    assert not at_chance.stopped and "indistinguishable from chance" in at_chance.reason
    # a peer far above the student but not above chance itself does not count: 0.12 on 360 samples is chance
    assert not decide((0.0, 1.0), dict(enumerate([(0.12, 0.1)] * 6)), DIGITS).stopped
    assert decide((0.0, 1.0), dict(enumerate([(0.25, 0.1)] * 6)), DIGITS).stopped


def _one_trial_search(tmp_path: Path, cache_dir: Path) -> tuple[list[str], str, optuna.Study]:
    """A search of one trial (45 steps, rungs at 5 and 15): its arguments, its storage and its study."""
    out = tmp_path / "run"
    args = ["search", "--trials", "1", "--steps", "45", "--teacher-epochs", "3", "--cache-dir", str(cache_dir),
            "--sampler", "random", "--refine", "0", "--out", str(out)]
    assert main(args) == 0
    storage = f"sqlite:///{out / 'study.db'}"
    return args, storage, optuna.load_study(storage=storage, study_name="search")


def _add_instant_peers(study: optuna.Study, count: int, accuracy: float, **attrs: Any) -> None:
    """``count`` earlier students of the first trial's architecture, instant and at ``accuracy`` at every rung."""
    first = study.trials[0]
    for _ in range(count):
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.PRUNED, params=first.params, distributions=first.distributions,
            user_attrs={"rungs": {"0": accuracy, "1": accuracy}, "latency": {"median_ms": 1e-6}, **attrs}))


def test_a_dominated_trial_is_stopped_at_the_first_rung_and_recorded(tmp_path: Path, cache_dir: Path) -> None:
    args, storage, study = _one_trial_search(tmp_path, cache_dir)
    out = tmp_path / "run"
    assert set(study.trials[0].user_attrs["rungs"]) == {"0", "1"}  # the rungs were recorded on the way
    _add_instant_peers(study, 4, 1.0, status="stopped_early")  # four earlier students, perfect and instant

    args[args.index("--trials") + 1] = "6"
    assert main(args) == 0
    stopped = optuna.load_study(storage=storage, study_name="search").trials[5]
    assert stopped.state == TrialState.PRUNED and stopped.user_attrs["status"] == "stopped_early"
    assert list(stopped.user_attrs["rungs"]) == ["0"] and stopped.user_attrs["steps"] == 5  # 45 / 9
    decision = stopped.user_attrs["rung_decisions"]["0"]  # what was compared, and why it stopped
    assert decision["stopped"] and decision["dominating"] == [1, 2, 3, 4] and decision["peers"] == 5
    assert decision["accuracy"] == stopped.user_attrs["rungs"]["0"] and decision["samples"] == 288
    assert "4 of 5 peers dominate it beyond the noise" in decision["reason"]
    with (out / "trials.csv").open() as handle:
        row = list(csv.DictReader(handle))[5]
    assert (row["state"], row["status"], row["stopped_at_rung"]) == ("PRUNED", "stopped_early", "0")
    assert json.loads(row["rung_accuracy"]) == stopped.user_attrs["rungs"]
    assert all(entry["trial"] != 5 for entry in json.loads((out / "pareto.json").read_text()))


def test_faster_peers_at_chance_never_stop_a_trial(tmp_path: Path, cache_dir: Path) -> None:
    """The issue's first rung: every student still at chance, and faster peers stopped the slower ones."""
    args, storage, study = _one_trial_search(tmp_path, cache_dir)
    alone = study.trials[0].user_attrs["rung_decisions"]["0"]
    assert not alone["stopped"] and alone["peers"] == 0 and "at least 4 are needed" in alone["reason"]
    _add_instant_peers(study, 6, alone["chance"])  # six at chance, all instant: they dominate nothing for real

    args[args.index("--trials") + 1] = "8"
    assert main(args) == 0
    trial = optuna.load_study(storage=storage, study_name="search").trials[7]
    assert trial.state == TrialState.COMPLETE and trial.user_attrs["status"] == "trained"
    decisions = trial.user_attrs["rung_decisions"]
    assert set(decisions) == {"0", "1"} and not any(d["stopped"] for d in decisions.values())
    assert all(d["dominating"] == [] and d["peers"] == 7 for d in decisions.values())
