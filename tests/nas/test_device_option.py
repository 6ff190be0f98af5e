"""`nas search --device` and `--train-threads`: checked before any work, recorded in the study and its trials."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import torch

import distill
from nas.cli import main


def _args(out: Path, cache_dir: Path) -> list[str]:
    return ["search", "--trials", "2", "--steps", "10", "--teacher-epochs", "3", "--cache-dir", str(cache_dir),
            "--sampler", "random", "--early-stop", "off", "--out", str(out)]


def test_a_missing_cuda_device_is_a_one_line_error_before_any_work(tmp_path: Path, cache_dir: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    missing = torch.cuda.device_count() if torch.cuda.is_available() else 0
    out = tmp_path / "o"
    assert main([*_args(out, cache_dir), "--device", f"cuda:{missing}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and f"--device cuda:{missing}" in err
    assert not out.exists()  # no study, no output


@pytest.mark.parametrize(("flags", "message"), [
    (["--device", "gpu"], "--device: A device must be one of auto, cpu, cuda, cuda:N, but got 'gpu'"),
    (["--train-threads", "0"], "--train-threads must be >= 1, but got 0"),
])
def test_bad_device_flags_fail_at_once(flags: list[str], message: str, tmp_path: Path, cache_dir: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*_args(tmp_path / "o", cache_dir), *flags]) == 2
    assert message in capsys.readouterr().err


def test_the_training_device_and_threads_are_recorded_and_a_study_resumes_on_another_device(
        tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "cpu"
    assert main([*_args(out, cache_dir), "--device", "cpu", "--train-threads", "1"]) == 0
    study = optuna.load_study(storage=f"sqlite:///{out / 'study.db'}", study_name="search")
    assert study.user_attrs["config"]["device"] == "cpu" and study.user_attrs["config"]["train_threads"] == 1
    trained = [t for t in study.trials if t.user_attrs.get("status") == "trained"]
    assert trained and all(t.user_attrs["train_device"] == "cpu" and t.user_attrs["train_threads"] == 1
                           for t in trained)
    # not a frozen setting: the same study goes on with another device (auto) and the host's share of threads
    more = [*_args(out, cache_dir), "--device", "auto"]
    more[more.index("--trials") + 1] = "3"
    assert main(more) == 0
    study = optuna.load_study(storage=f"sqlite:///{out / 'study.db'}", study_name="search")
    assert len(study.trials) == 3 and study.user_attrs["config"]["device"] == "cpu"  # the config of its start
    last = study.trials[-1].user_attrs
    if last.get("status") == "trained":  # (not a student met before, whose result is reused)
        assert last["train_device"] == distill.describe_device(distill.resolve_device("auto"))
