"""`nas.load_study`: the study a search wrote, opened from its saved config; it never creates one. The `--trials`
limit that workers sharing a study stop at."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from nas import ConfigError, SearchConfig, load_study, open_study
from nas.search import trial_limit


def _saved(out: Path, **settings: str) -> SearchConfig:
    """The config.json a search writes, without running one."""
    config = SearchConfig(out=str(out), **settings)
    config.save()
    return config


def test_load_study_opens_the_study_of_the_saved_config(tmp_path: Path) -> None:
    config = _saved(tmp_path / "run")
    open_study(config, create=True).enqueue_trial({"x": 1})
    study = load_study(tmp_path / "run")
    assert study.study_name == "search" and study.user_attrs["config"] == config.to_dict()
    assert len(study.trials) == 1


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_load_study_never_creates_a_study(tmp_path: Path, storage: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match="holds no config.json"):
        load_study(empty)
    assert list(empty.iterdir()) == []

    out = tmp_path / "no-study"  # a config.json, but the search stopped before creating its study
    settings = {"storage": f"journal:{out / 'study.journal'}"} if storage == "journal" else {}
    _saved(out, **settings)
    with pytest.raises(ConfigError, match="No study 'search': storage .* does not exist"):
        load_study(out)
    assert [path.name for path in out.iterdir()] == ["config.json"]


def test_load_study_names_a_study_the_storage_lacks(tmp_path: Path) -> None:
    config = _saved(tmp_path / "run")
    open_study(config, create=True)
    with pytest.raises(ConfigError, match=r"No study 'other' in sqlite:///.*study\.db"):
        load_study(tmp_path / "run", study="other")
    assert optuna.get_all_study_names(config.storage) == ["search"]


def test_a_worker_stops_when_finished_and_other_workers_running_trials_reach_the_limit(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}")
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    elsewhere = study.ask()  # another worker's trial, still running

    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=10, callbacks=[trial_limit(3)])
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2  # 2 finished + 1 running = the 3 asked for
    study.tell(elsewhere, 0.5)
    assert len(study.trials) == 3
