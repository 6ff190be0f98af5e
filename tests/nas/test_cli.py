"""The CLI end to end on the built-in data: search, resume, pareto, export and bad input."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

import hwprofile
import nas
from nas.cli import main
from search_spaces import get_space


@pytest.fixture(scope="module")
def budget_ms(tmp_path_factory: pytest.TempPathFactory) -> float:
    """A budget halfway between the 3rd and 4th fastest of the 6 students the search will sample.

    The search uses the random sampler with seed 0, so the same draws here give the same students:
    half of them fit the budget and half do not.
    """
    space, folder = get_space("mbconv"), tmp_path_factory.mktemp("budget")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    latencies = []
    for number in range(6):
        student = space.build(space.sample(study.ask()), (1, 8, 8), 10)
        path = hwprofile.export_onnx(student, (1, 8, 8), folder / f"{number}.onnx")
        latencies.append(hwprofile.measure_latency(path).median_ms)
    latencies.sort()
    return (latencies[2] + latencies[3]) / 2


@pytest.fixture(scope="module")
def search_args(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path, budget_ms: float) -> list[str]:
    out = tmp_path_factory.mktemp("search")
    return ["search", "--trials", "6", "--epochs", "2", "--max-steps", "30", "--teacher-epochs", "3", "--out", str(out),
            "--cache-dir", str(cache_dir), "--latency-budget", f"{budget_ms}ms", "--sampler", "random"]


@pytest.fixture(scope="module")
def out(search_args: list[str]) -> Path:
    assert main(search_args) == 0
    return Path(search_args[search_args.index("--out") + 1])


def _trials(out: Path) -> list[dict[str, str]]:
    with (out / "trials.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_search_writes_the_front_and_every_trial(out: Path, budget_ms: float) -> None:
    front = json.loads((out / "pareto.json").read_text())
    assert front, "at least one feasible student"
    for entry in front:
        assert {"trial", "score", "accuracy", "latency_ms", "latency_p90_ms", "params", "macs", "arch",
                "lead_low"} <= set(entry)
        assert entry["latency_ms"] <= budget_ms and entry["score"] == entry["accuracy"] > 0.1
        assert entry["params"] > 0 and entry["macs"] > 0
    latencies = [e["latency_ms"] for e in front]
    accuracies = [e["accuracy"] for e in front]
    assert front[0]["lead_low"] is None and all(isinstance(e["lead_low"], float) for e in front[1:])
    assert latencies == sorted(latencies) and accuracies == sorted(accuracies)  # a front: slower must be better
    rows = _trials(out)
    assert len(rows) == 6 and {r["state"] for r in rows} == {"COMPLETE"}
    assert {r["status"] for r in rows} == {"trained", "over_budget"}
    for row in rows:
        assert float(row["export_s"]) >= 0 and float(row["measure_s"]) > 0
        if row["status"] == "over_budget":
            assert row["accuracy"] == "" and row["distill_s"] == "" and row["feasible"] == "False"
        elif row["status"] == "trained":
            assert float(row["distill_s"]) > 0 and float(row["accuracy"]) > 0
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_online_teacher_and_trained_over_budget_students_change_only_the_cost(
        out: Path, search_args: list[str], tmp_path: Path) -> None:
    """The ablation switches of the search-efficiency bench: the same students, scored the same (the teacher's logits
    per batch equal the cached ones); the students over the budget now trained, and still off the front."""
    ablated = tmp_path / "ablated"
    args = [*search_args, "--online-teacher", "--train-over-budget", "--early-stop", "off"]
    args[args.index("--out") + 1] = str(ablated)
    assert main(args) == 0
    default, rows = {r["trial"]: r for r in _trials(out)}, _trials(ablated)
    assert {r["status"] for r in rows} == {"trained", "trained_over_budget"}
    both_trained = 0
    for row in rows:
        before = default[row["trial"]]
        assert row["arch_hash"] == before["arch_hash"]
        # Each run measures its own latency: a student a hair from the budget may fall on either side of it.
        assert (row["status"] == "trained_over_budget") == (row["feasible"] == "False")
        if row["status"] == "trained_over_budget":
            assert float(row["accuracy"]) > 0.1 and float(row["distill_s"]) > 0
        elif before["status"] == "trained":
            assert float(row["accuracy"]) == pytest.approx(float(before["accuracy"]), abs=0.02)
            both_trained += 1
    assert both_trained >= 1
    front = {entry["trial"] for entry in json.loads((ablated / "pareto.json").read_text())}
    assert front and not front & {int(r["trial"]) for r in rows if r["status"] == "trained_over_budget"}


def test_every_trial_is_recorded_in_the_study(out: Path) -> None:
    study = optuna.load_study(storage=f"sqlite:///{out / 'study.db'}", study_name="search")
    for trial in study.trials:
        assert {"arch", "arch_hash", "latency", "model", "export_s", "measure_s", "status"} <= set(trial.user_attrs)
        assert {"median_ms", "p90_ms", "cv", "runs"} <= set(trial.user_attrs["latency"])
        assert "latency_over_budget_ms" in trial.constraints
        if trial.user_attrs["status"] == "trained":  # 2 epochs of digits would be 34 steps: --max-steps caps them
            assert trial.user_attrs["steps"] == 30
    assert study.user_attrs["config"]["trials"] == 6


def test_rerun_of_a_finished_search_adds_no_trial(out: Path, search_args: list[str]) -> None:
    before = (out / "pareto.json").stat().st_mtime_ns
    assert main(search_args) == 0
    assert len(_trials(out)) == 6
    assert (out / "pareto.json").stat().st_mtime_ns > before  # outputs regenerated


def test_pareto_command_prints_the_front(out: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["pareto", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads((out / "pareto.json").read_text())
    assert main(["pareto", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["trial", "accuracy", "agreement"]
    front = json.loads((out / "pareto.json").read_text())
    within = [str(e["trial"]) for e in front if e["lead_low"] is not None and e["lead_low"] <= 0]
    assert len(table) == 1 + len(front) + bool(within)  # and a line naming the students within the noise
    if within:
        assert table[-1].startswith("Within the validation noise") and ", ".join(within) in table[-1]


def test_export_best_distils_and_verifies(out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "student.onnx"
    assert main(["export", str(out), "--trial", "best", "--max-steps", "25", "--output", str(target)]) == 0
    printed = capsys.readouterr().out
    assert "ONNX checker passed" in printed and "accuracy" in printed
    metadata = json.loads(target.with_suffix(".json").read_text())
    best = max(json.loads((out / "pareto.json").read_text()), key=lambda e: (e["accuracy"], -e["latency_ms"]))
    assert metadata["trial"] == best["trial"] and metadata["arch"] == best["arch"]
    assert metadata["max_abs_diff"] < 1e-3 and metadata["latency_ms"] > 0
    assert (metadata["epochs"], metadata["steps"]) == (nas.EXPORT_EPOCHS, 25)  # the default epochs, capped
    assert hwprofile.model_stats(target).params == metadata["params"]


def test_any_architecture_of_the_space_exports_the_same_way(out: Path, tmp_path: Path) -> None:
    config = nas.load_saved_config(out)
    arch = get_space(config.space).largest()  # never a trial of the search: its budget ruled it out
    report = nas.export_arch(config, arch, {}, 1, tmp_path / "largest.onnx")
    metadata = json.loads((tmp_path / "largest.json").read_text())
    assert report.trial is None and metadata["trial"] is None and metadata["arch"] == arch
    assert report.test_score is not None and 0 <= report.test_score <= 1 and report.latency_ms > 0
    assert hwprofile.model_stats(tmp_path / "largest.onnx").params == report.params


def test_export_rejects_unknown_trials(out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(out), "--trial", "999", "--output", str(tmp_path / "x.onnx")]) == 2
    assert "--trial must be 'best' or a trial number" in capsys.readouterr().err


def test_more_trials_resume_the_study(search_args: list[str], out: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "study.db").write_bytes((out / "study.db").read_bytes())
    args = [*search_args]
    args[args.index("--out") + 1] = str(copy)
    args[args.index("--trials") + 1] = "8"
    assert main(args) == 0
    assert [r["trial"] for r in _trials(copy)] == [str(n) for n in range(8)]


def test_changed_settings_do_not_touch_the_study(search_args: list[str], out: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    args = [*search_args, "--alpha", "0.5"]
    assert main(args) == 2
    assert "was created with other settings (alpha: study has 0.9, got 0.5)" in capsys.readouterr().err
    assert len(_trials(out)) == 6


@pytest.mark.parametrize("flags, message", [
    (["--data", "npz:/no/such.npz"], "Data file '/no/such.npz' does not exist."),
    (["--data", "imagenet"], "Unknown data source 'imagenet'"),
    (["--teacher", "/no/teacher.pt"], "Teacher file '/no/teacher.pt' does not exist"),
    (["--latency-budget", "0.1us"], "below the latency of the smallest student"),
    (["--latency-budget=-3ms"], "--latency-budget must be a positive number"),
    (["--space", "vit"], "Unknown search space 'vit'"),
])
def test_bad_input_fails_before_any_long_work(flags: list[str], message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    assert main(["search", "--out", str(tmp_path / "o"), "--cache-dir", str(cache), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("error: ")
    assert not (cache / "teachers").exists()  # no teacher was trained


def test_malformed_budget_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "--latency-budget", "fast"])
    assert exit_info.value.code == 2
    assert "expected a latency like 2ms" in capsys.readouterr().err


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "gp"])
def test_every_sampler_runs(sampler: str, tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / sampler
    assert main(["search", "--trials", "2", "--steps", "3", "--teacher-epochs", "3", "--sampler", sampler,
                 "--out", str(out), "--cache-dir", str(cache_dir)]) == 0
    assert len(_trials(out)) == 2


def test_profile_command_and_console_script(out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = get_space("mbconv")
    model = hwprofile.export_onnx(space.build(space.smallest(), (1, 8, 8), 10), (1, 8, 8), tmp_path / "m.onnx")
    assert main(["profile", str(model), "--json", "--batch", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"median_ms", "p90_ms", "cv", "runs", "params", "macs", "size_bytes"} <= set(result)
    assert result["batch"] == 2
    script = Path(sys.executable).with_name("nas")
    completed = subprocess.run([str(script), "profile", str(tmp_path / "absent.onnx")], capture_output=True, text=True)
    assert completed.returncode == 2 and "absent.onnx' does not exist" in completed.stderr
