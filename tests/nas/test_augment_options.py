"""`nas search --augment/--views` (students on cached teacher views) and `--timeout` covering the teacher's training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pytest

from nas.cli import DEADLINE_EXIT, main
from nas.config import ConfigError, SearchConfig
from nas.tasks import KD_CHOICES, kd_choices


def test_timeout_stops_the_teacher_inside_its_training_and_keeps_its_checkpoint(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    args = ["search", "--trials", "1", "--steps", "5", "--teacher-epochs", "2", "--cache-dir", str(cache),
            "--out", str(tmp_path / "out")]
    assert main([*args, "--timeout", "0.01"]) == DEADLINE_EXIT  # the deadline counts from the command's start
    last = capsys.readouterr().err.splitlines()[-1]  # one line says so
    assert last.startswith("timeout: The deadline passed while the built-in teacher trained: stopped at epoch 0.03 "
                           "of 2, checkpoint saved in ") and last.endswith("run the same command again to resume it.")
    [checkpoint] = (cache / "teachers").glob("*.checkpoint")
    assert not (tmp_path / "out" / "study.db").exists()  # nothing else started
    assert main(args) == 0  # resumed, finished, cached
    assert not checkpoint.exists() and len(list((cache / "teachers").glob("*.pt"))) == 1


def test_a_search_on_augmented_views_runs_the_teacher_once_per_view(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cache, out = tmp_path / "cache", tmp_path / "out"
    assert main(["search", "--trials", "2", "--steps", "5", "--teacher-epochs", "2", "--cache-dir", str(cache),
                 "--out", str(out), "--augment", "crop", "--views", "3", "--sampler", "random",
                 "--early-stop", "off"]) == 0
    [views] = (cache / "logits").glob("*-train-crop-v3-p1-s0.npy")
    train = np.load(views)
    assert train.shape == (3, 1150, 10) and not np.allclose(train[0], train[1])  # each view its own logits
    study = optuna.load_study(storage=f"sqlite:///{out / 'study.db'}", study_name="search")
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in study.trials)
    assert main(["search", "--trials", "3", "--steps", "5", "--teacher-epochs", "2", "--cache-dir", str(cache), "--out",
                 str(out), "--augment", "standard", "--views", "3", "--sampler", "random", "--early-stop", "off"]) == 2
    assert "augment: study has 'crop', got 'standard'" in capsys.readouterr().err  # a study keeps its views


def test_feature_methods_need_unaugmented_images() -> None:
    with pytest.raises(ConfigError, match=r"--kd 'kd\+at' reads teacher features, which are cached for unaugmented "
                                          r"images only: it needs --augment none"):
        SearchConfig(kd="kd+at", augment="crop")
    assert kd_choices("none") == KD_CHOICES and kd_choices("standard") == ("kd", "dkd", "dist")
    with pytest.raises(ConfigError, match="--augment must be one of none, crop, standard and --views >= 1"):
        SearchConfig(augment="crop", views=0)
    with pytest.raises(ConfigError, match="--augment is for image data"):
        SearchConfig(data="python-docs", augment="crop")
