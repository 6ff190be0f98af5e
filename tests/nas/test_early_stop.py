"""Pareto-aware successive halving: the rule on numbers, then in a real search on a real study."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.cli import main
from nas.early_stop import dominates, parse_rungs, should_stop


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


def test_a_trial_stops_when_a_third_of_its_peers_dominate_it() -> None:
    point = (0.80, 1.0)
    better, worse = (0.9, 0.9), (0.7, 1.1)
    assert not should_stop(point, [better] * 3)  # too few peers to judge
    assert not should_stop(point, [better, worse, worse, worse])  # 1 of 4 < ceil(4/3) = 2
    assert should_stop(point, [better, better, worse, worse])  # 2 of 4
    assert not should_stop(point, [better] + [worse] * 5)  # 1 of 6 < ceil(6/3) = 2
    assert should_stop(point, [better] * 2 + [worse] * 4)  # 2 of 6
    assert not should_stop((0.5, 0.01), [better] * 6)  # the fastest is never dominated


def test_a_dominated_trial_is_stopped_at_the_first_rung_and_recorded(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "run"
    args = ["search", "--trials", "1", "--steps", "45", "--teacher-epochs", "3", "--cache-dir", str(cache_dir),
            "--sampler", "random", "--out", str(out)]
    assert main(args) == 0
    storage = f"sqlite:///{out / 'study.db'}"
    study = optuna.load_study(storage=storage, study_name="search")
    first = study.trials[0]
    assert set(first.user_attrs["rungs"]) == {"0", "1"}  # the rungs were recorded on the way
    for _ in range(4):  # four earlier students, perfect and instant at every rung
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.PRUNED, params=first.params, distributions=first.distributions,
            user_attrs={"rungs": {"0": 1.0, "1": 1.0}, "latency": {"median_ms": 1e-6}, "status": "stopped_early"}))

    args[args.index("--trials") + 1] = "6"
    assert main(args) == 0
    stopped = optuna.load_study(storage=storage, study_name="search").trials[5]
    assert stopped.state == TrialState.PRUNED and stopped.user_attrs["status"] == "stopped_early"
    assert list(stopped.user_attrs["rungs"]) == ["0"] and stopped.user_attrs["steps"] == 5  # 45 / 9
    with (out / "trials.csv").open() as handle:
        row = list(csv.DictReader(handle))[5]
    assert (row["state"], row["status"], row["stopped_at_rung"]) == ("PRUNED", "stopped_early", "0")
    assert json.loads(row["rung_accuracy"]) == stopped.user_attrs["rungs"]
    assert all(entry["trial"] != 5 for entry in json.loads((out / "pareto.json").read_text()))
