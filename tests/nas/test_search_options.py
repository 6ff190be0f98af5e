"""`nas search` options beyond the defaults: distillation methods, --search-kd, the measurement cache, a device agent."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from nas.cli import main
from nas.config import SearchConfig
from nas.search import KD_CHOICES, open_study
from search_spaces import get_space

TOKEN = "search-token-0123456789abcdef"


def _args(out: Path, cache_dir: Path, trials: int = 2) -> list[str]:
    return ["search", "--trials", str(trials), "--steps", "10", "--teacher-epochs", "3", "--cache-dir",
            str(cache_dir), "--sampler", "random", "--early-stop", "off", "--out", str(out)]


def _trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(storage=f"sqlite:///{out / 'study.db'}", study_name="search").trials


def test_feature_distillation_reads_cached_teacher_features(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "at"
    assert main([*_args(out, cache_dir), "--kd", "kd+at:0.5"]) == 0
    trials = _trials(out)
    assert all(t.state == TrialState.COMPLETE and t.user_attrs["distillation"]["kd"] == "kd+at:0.5" for t in trials)
    assert all(0 <= t.user_attrs["metrics"]["ece"] <= 1 and t.user_attrs["metrics"]["retention"] > 0 for t in trials)
    assert list((cache_dir / "features").glob("*.npy")), "the teacher's features are cached on disk"


def test_search_kd_chooses_method_temperature_and_alpha_per_trial(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "search-kd"
    assert main([*_args(out, cache_dir, trials=4), "--search-kd"]) == 0
    trials = _trials(out)
    assert len(trials) == 4
    for trial in trials:
        assert trial.params["kd"] in KD_CHOICES and 1 <= trial.params["kd_temperature"] <= 8
        assert trial.user_attrs["distillation"] == {"kd": trial.params["kd"], "temperature": trial.params["kd_temperature"],
                                                    "alpha": trial.params["kd_alpha"]}
    best = json.loads((out / "pareto.json").read_text())[0]
    assert best["kd"] in KD_CHOICES and best["temperature"] is not None

    assert main(["export", str(out), "--trial", str(best["trial"]), "--epochs", "0.2",
                 "--output", str(tmp_path / "s.onnx")]) == 0
    assert json.loads((tmp_path / "s.json").read_text())["distillation"]["kd"] == best["kd"]


def test_identical_students_are_measured_once_across_searches(tmp_path: Path, cache_dir: Path) -> None:
    assert main(_args(tmp_path / "first", cache_dir)) == 0
    assert main(_args(tmp_path / "second", cache_dir)) == 0  # same seed: the same students
    first, second = _trials(tmp_path / "first"), _trials(tmp_path / "second")
    assert [t.user_attrs["arch"] for t in first] == [t.user_attrs["arch"] for t in second]
    assert all(t.user_attrs["latency"]["cached"] for t in second)
    raw = [t.user_attrs["latency"]["median_ms"] for t in first]
    assert raw == [t.user_attrs["latency"]["median_ms"] for t in second]
    # each search normalises to its own canary baseline; a cached measurement keeps the canary figures it was taken
    # with, and the second search normalises it with them
    assert [t.user_attrs["latency"]["canary"] for t in first] == [t.user_attrs["latency"]["canary"] for t in second]
    baseline = optuna.load_study(storage=f"sqlite:///{tmp_path / 'second' / 'study.db'}",
                                 study_name="search").user_attrs["canary_baseline"]["canary_ms"]
    assert [t.values[1] for t in second] == pytest.approx(
        [t.user_attrs["latency"]["canary"]["ratio"] * baseline for t in second])


def test_latency_measured_on_a_device_agent(tmp_path: Path, cache_dir: Path,
                                            serve_agent: Callable[..., str]) -> None:
    url = serve_agent(TOKEN)
    token = tmp_path / "token.txt"
    token.write_text(TOKEN + "\n")
    out = tmp_path / "remote"
    assert main([*_args(out, cache_dir), "--target", url, "--token-file", str(token), "--no-cache"]) == 0
    assert all(t.user_attrs["latency"]["target"] == url and not t.user_attrs["latency"]["cached"]
               for t in _trials(out))


def test_an_unreachable_agent_is_a_one_line_error(tmp_path: Path, cache_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "token.txt"
    token.write_text(TOKEN)
    assert main([*_args(tmp_path / "o", cache_dir), "--target", "http://127.0.0.1:9", "--token-file", str(token)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "127.0.0.1:9" in err


@pytest.mark.parametrize(("flags", "message"), [
    (["--kd", "kd+nope"], "Unknown distillation method 'nope'"),
    (["--early-stop", "1/3,1/9"], "increasing fractions of the budget"),
])
def test_bad_distillation_settings_fail_at_once(flags: list[str], message: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--out", str(tmp_path / "o"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("error: ") and "\n" not in err


def test_the_sampler_seed_seeds_the_sampler_alone(tmp_path: Path) -> None:
    studies = iter(range(100))

    def first_arch(**seeds: int) -> dict:  # of a new study
        config = SearchConfig(sampler="random", out=str(tmp_path / str(next(studies))), **seeds)
        return get_space("mbconv").sample(open_study(config, create=True).ask())

    assert first_arch(seed=0, sampler_seed=5) == first_arch(seed=5) != first_arch(seed=0)
    assert first_arch(seed=3, sampler_seed=5) == first_arch(seed=5)
    assert SearchConfig(seed=3, sampler_seed=5).seed == 3  # the split, the teacher and the students keep --seed
