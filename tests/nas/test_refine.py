"""Front refinement: the front recomputed from refined scores, on real studies, and in a real search run twice."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution

from nas import best_trial, front_records, pareto_front
from nas.cli import main
from nas.config import ConfigError, SearchConfig
from nas.front import REFINED_PREFIX, refinements


def _study(points: dict[str, tuple[float, float]]) -> optuna.Study:
    """A real study of trained trials: architecture hash -> (score, latency_ms)."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for arch_hash, (score, latency) in points.items():
        study.add_trial(optuna.trial.create_trial(
            values=[score, latency], params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
            user_attrs={"arch_hash": arch_hash, "score": score, "status": "trained",
                        "metrics": {"accuracy": score}, "latency": {"median_ms": latency}}))
    return study


def _refine(study: optuna.Study, arch_hash: str, score: float) -> None:
    study.set_user_attr(REFINED_PREFIX + arch_hash, {"score": score, "steps": 90, "metrics": {"accuracy": score}})


def test_the_front_is_recomputed_from_refined_scores() -> None:
    study = _study({"fast": (0.80, 0.5), "slow": (0.90, 1.0), "off": (0.70, 0.7)})
    assert [t.user_attrs["arch_hash"] for t in pareto_front(study)] == ["fast", "slow"]
    _refine(study, "slow", 0.75)  # longer training shows the slow one is not better: off the front
    assert [t.user_attrs["arch_hash"] for t in pareto_front(study)] == ["fast"]
    assert best_trial(study).user_attrs["arch_hash"] == "fast"
    _refine(study, "fast", 0.95)
    [record] = front_records(study)
    assert (record["score"], record["score_short"], record["accuracy"], record["refined_steps"]) == (0.95, 0.8, 0.95, 90)
    _refine(study, "off", 0.99)  # a slower student that refines above the fast one joins the front
    assert [t.user_attrs["arch_hash"] for t in pareto_front(study)] == ["fast", "off"]
    assert best_trial(study).user_attrs["arch_hash"] == "off"


def test_refine_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match="--refine must be >= 0"):
        SearchConfig(refine=-1)


def test_a_search_refines_its_front_once_and_keeps_both_scores(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "run"
    args = ["search", "--trials", "5", "--steps", "30", "--teacher-epochs", "3", "--cache-dir", str(cache_dir),
            "--sampler", "random", "--early-stop", "off", "--refine", "1", "--out", str(out)]
    assert main(args) == 0
    storage = f"sqlite:///{out / 'study.db'}"
    study = optuna.load_study(storage=storage, study_name="search")
    first = refinements(study)
    assert len(first) == 1
    [(arch_hash, record)] = first.items()
    trial = study.trials[record["trial"]]
    assert trial.user_attrs["arch_hash"] == arch_hash and record["score_short"] == trial.values[0]
    assert record["steps"] == 90 == record["metrics"]["steps"] and record["score"] == record["metrics"]["accuracy"]
    front = json.loads((out / "pareto.json").read_text())
    for entry in front:  # the refined student, if still on the front, shows both scores; the others their short one
        assert entry["score"] == entry["accuracy"]
        if entry["refined_steps"] is None:
            assert entry["score_short"] == entry["score"] and entry["arch_hash"] != arch_hash
        else:
            assert (entry["arch_hash"], entry["score"], entry["score_short"]) == \
                (arch_hash, record["score"], record["score_short"])

    args[args.index("--refine") + 1] = "3"  # resumed with more: the earlier refinement is kept, not redone
    assert main(args) == 0
    study = optuna.load_study(storage=storage, study_name="search")
    second = refinements(study)
    assert second[arch_hash] == record and len(second) <= 4  # kept as it was; at most 3 more
    on_front = [t.user_attrs["arch_hash"] in second for t in pareto_front(study)]
    assert all(on_front) or sum(on_front) >= 3  # every front student refined, or 3 of them
    assert main(args) == 0  # a finished search run again refines nothing more
    assert refinements(optuna.load_study(storage=storage, study_name="search")) == second
