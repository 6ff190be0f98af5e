"""INT8 students in a search: quantized by ONNX Runtime, both objectives from the int8 file; size and memory budgets;
a student the quantizer cannot handle fails alone."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import optuna
import pytest
from onnx import numpy_helper

import hwprofile
import nas
from nas.budgets import LATENCY_CONSTRAINT, MEMORY_CONSTRAINT, SIZE_CONSTRAINT, overruns, parse_size
from nas.cli import main
from nas.config import ConfigError, SearchConfig
from nas.precision import INT8_AGREEMENT, QAT_EPOCHS, QAT_LR_SCALE, QAT_MAX_STEPS, sample_precision
from nas.search import BudgetError, check_budget, load_context, open_study
from search_spaces import get_space

# Conv (width 8 or 32), optionally activations that overflow to inf (no int8 scale exists for them), ReLU, head.
SPACE = '''
from __future__ import annotations
import torch
import torch.nn as nn

class Overflow(nn.Module):
    def forward(self, x):
        return torch.exp(x * 1000)

class WidthSpace:
    name = "width"

    def sample(self, trial):
        return {"width": trial.suggest_categorical("width", [8, 32]),
                "overflow": trial.suggest_categorical("overflow", [False, True])}

    def smallest(self):
        return {"width": 8, "overflow": False}

    def largest(self):
        return {"width": 32, "overflow": False}

    def build(self, arch, input_shape, num_classes):
        width = arch["width"]
        return nn.Sequential(nn.Conv2d(input_shape[0], width, 3, padding=1), *([Overflow()] if arch["overflow"] else []),
                             nn.ReLU(), nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(width, num_classes))
'''


@pytest.fixture(scope="module")
def space_spec(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("space") / "width_space.py"
    path.write_text(textwrap.dedent(SPACE))
    return f"{path}:WidthSpace"


def _int8_size(spec: str, width: int, folder: Path) -> int:
    space = get_space(spec)
    fp32 = hwprofile.export_onnx(space.build({"width": width, "overflow": False}, (1, 8, 8), 10), (1, 8, 8),
                                 folder / f"w{width}.onnx")
    feeds = [{"input": np.random.default_rng(0).standard_normal((32, 1, 8, 8), dtype=np.float32)}]
    return hwprofile.quantize_int8(fp32, folder / f"w{width}-int8.onnx", feeds).stat().st_size


@pytest.fixture(scope="module")
def int8_search(space_spec: str, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> optuna.Study:
    """An int8 search of three chosen students: one within the size budget, one over it, one that overflows."""
    folder = tmp_path_factory.mktemp("int8-search")
    budget = (_int8_size(space_spec, 8, folder) + _int8_size(space_spec, 32, folder)) // 2
    config = SearchConfig(space=space_spec, precision="int8", size_budget_bytes=budget, trials=3, epochs=10,
                          teacher_epochs=3, sampler="random", out=str(folder / "out"), cache_dir=str(cache_dir),
                          early_stop="off")
    study = open_study(config, create=True)
    for params in ({"width": 32, "overflow": True}, {"width": 8, "overflow": False}, {"width": 32, "overflow": False}):
        study.enqueue_trial(params)
    return nas.search(config)


def test_int8_objectives_come_from_the_quantized_file(int8_search: optuna.Study) -> None:
    trials = {(t.params["width"], t.params["overflow"]): t for t in int8_search.get_trials()}
    trained = trials[(8, False)]
    assert trained.user_attrs["status"] == "trained" and trained.user_attrs["precision"] == "int8"
    quantization = trained.user_attrs["quantization"]
    assert (quantization["format"], quantization["method"], quantization["samples"]) == ("ort", "minmax", 256)
    assert trained.values[0] == trained.user_attrs["score"] == trained.user_attrs["metrics"]["accuracy"] \
        == quantization["accuracy_int8"] > 0.3
    assert quantization["accuracy_fp32"] == trained.user_attrs["metrics_fp32"]["accuracy"]
    # the latency and the size were measured on an int8 file: the same QDQ graph as the trained one (its zero points
    # are varints, so the sizes may differ by a byte or so per activation)
    assert trained.user_attrs["model"]["size_bytes"] == pytest.approx(quantization["size_bytes"], rel=1e-3)


def test_size_budget_is_a_constraint_and_the_student_is_not_trained(int8_search: optuna.Study) -> None:
    trials = {(t.params["width"], t.params["overflow"]): t for t in int8_search.get_trials()}
    over, within = trials[(32, False)], trials[(8, False)]
    assert over.user_attrs["status"] == "over_budget" and "score" not in over.user_attrs
    assert over.constraints[SIZE_CONSTRAINT] > 0 >= within.constraints[SIZE_CONSTRAINT]
    assert [t.number for t in nas.pareto_front(int8_search)] == [within.number]


def test_a_student_the_quantizer_cannot_handle_fails_and_the_study_goes_on(int8_search: optuna.Study) -> None:
    first = int8_search.trials[0]
    assert first.params == {"width": 32, "overflow": True} and first.state == optuna.trial.TrialState.FAIL
    assert first.user_attrs["status"] == "failed" and "cannot quantize" in first.user_attrs["failure"]
    assert [t.state.name for t in int8_search.trials[1:]] == ["COMPLETE", "COMPLETE"]


def test_outputs_show_the_precision(int8_search: optuna.Study, tmp_path: Path) -> None:
    nas.write_outputs(int8_search, tmp_path, None)
    front = json.loads((tmp_path / "pareto.json").read_text())
    assert [(entry["precision"], entry["accuracy_fp32"] is not None) for entry in front] == [("int8", True)]


def test_search_precision_is_a_trial_parameter() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    config = SearchConfig(precision="search")
    chosen = {sample_precision(config, study.ask()) for _ in range(20)}
    assert chosen == {"fp32", "int8"}
    assert sample_precision(SearchConfig(precision="int8"), study.ask()) == "int8"


@pytest.fixture(scope="module")
def mixed_search(space_spec: str, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> optuna.Study:
    """A --precision search under a size budget that the 32-wide student meets at int8 only."""
    folder = tmp_path_factory.mktemp("mixed-search")
    fp32_size = hwprofile.export_onnx(get_space(space_spec).build({"width": 32, "overflow": False}, (1, 8, 8), 10),
                                      (1, 8, 8), folder / "w32.onnx").stat().st_size
    config = SearchConfig(space=space_spec, precision="search", size_budget_bytes=(fp32_size
                          + _int8_size(space_spec, 32, folder)) // 2, trials=7, epochs=10, teacher_epochs=3,
                          sampler="random", out=str(folder / "out"), cache_dir=str(cache_dir), early_stop="off")
    study = open_study(config, create=True)
    for width, overflow, precision in ((8, False, "fp32"), (8, False, "int8"), (32, True, "fp32"),
                                       (32, False, "fp32")):
        study.enqueue_trial({"width": width, "overflow": overflow, "precision": precision})
    return nas.search(config)


def _sibling(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial:
    (sibling,) = [t for t in study.trials if t.user_attrs.get("sibling_of") == trial.number]
    return sibling


def test_one_distillation_scores_both_precisions(mixed_search: optuna.Study) -> None:
    sampled, reused = mixed_search.trials[:2]  # enqueued: numbered first
    sibling = _sibling(mixed_search, sampled)
    assert sampled.params == {"width": 8, "overflow": False, "precision": "fp32"}
    assert sibling.params == {**sampled.params, "precision": "int8"} and sibling.user_attrs["sibling_of"] == 0
    assert [t.user_attrs["status"] for t in (sampled, sibling)] == ["trained", "trained"]
    # the int8 sibling is the sampled student's distilled weights, quantized: the same steps, seconds and fp32 score
    for key in ("steps", "distill_s", "arch"):
        assert sibling.user_attrs[key] == sampled.user_attrs[key]
    quantization = sibling.user_attrs["quantization"]
    assert quantization["accuracy_fp32"] == sampled.values[0] == sampled.user_attrs["score"] > 0.3
    assert sibling.values[0] == quantization["accuracy_int8"] > 0.3
    assert sibling.user_attrs["arch_hash"] != sampled.user_attrs["arch_hash"]
    # measured on its own file (for a student this small, the int8 file is the larger: Q/DQ nodes and scales)
    assert sibling.user_attrs["latency"] != sampled.user_attrs["latency"]
    assert sibling.user_attrs["model"]["size_bytes"] != sampled.user_attrs["model"]["size_bytes"]
    # the enqueued int8 student of the same architecture is not distilled again
    assert reused.params == sibling.params and reused.user_attrs["reused_from"] == sibling.number
    assert reused.values == sibling.values


def test_the_sibling_a_quantizer_cannot_handle_fails_alone(mixed_search: optuna.Study) -> None:
    sampled = next(t for t in mixed_search.trials if t.params == {"width": 32, "overflow": True, "precision": "fp32"})
    sibling = _sibling(mixed_search, sampled)
    # over the size budget at fp32, unquantizable at int8: recorded, not distilled
    assert sampled.state == optuna.trial.TrialState.COMPLETE and sampled.user_attrs["status"] == "over_budget"
    assert "steps" not in sampled.user_attrs and sampled.constraints[SIZE_CONSTRAINT] > 0
    assert sibling.params["precision"] == "int8" and sibling.state == optuna.trial.TrialState.FAIL
    assert sibling.user_attrs["sibling_of"] == sampled.number and "cannot quantize" in sibling.user_attrs["failure"]


def test_a_student_within_budget_at_one_precision_only_is_distilled_for_it(mixed_search: optuna.Study) -> None:
    sampled = next(t for t in mixed_search.trials if t.params == {"width": 32, "overflow": False, "precision": "fp32"})
    sibling = _sibling(mixed_search, sampled)
    assert sampled.user_attrs["status"] == "trained_over_budget" and sampled.constraints[SIZE_CONSTRAINT] > 0
    assert sibling.user_attrs["status"] == "trained" and sibling.constraints[SIZE_CONSTRAINT] <= 0
    assert sibling.values[0] > 0.3 and sibling.user_attrs["sibling_of"] == sampled.number
    front = {t.number for t in nas.pareto_front(mixed_search)}
    assert sampled.number not in front and front <= {t.number for t in mixed_search.trials
                                                     if t.user_attrs.get("status") == "trained"
                                                     and t.user_attrs.get("reused_from") is None}


def test_an_unknown_int8_format_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["search", "--int8-format", "qnn"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "--int8-format" in err and "'qnn'" in err and "'ort', 'tensorrt'" in err


def test_tensorrt_format_search_and_export_record_it(space_spec: str, cache_dir: Path, tmp_path: Path) -> None:
    """``--int8-format tensorrt``: the trial is scored on a symmetric int8 file, and ``nas export`` (reading the
    study's config) writes one, every zero point 0; both records name the format."""
    out = tmp_path / "out"
    config = SearchConfig(space=space_spec, precision="int8", int8_format="tensorrt", trials=1, steps=60,
                          teacher_epochs=3, sampler="random", out=str(out), cache_dir=str(cache_dir), early_stop="off",
                          refine=0)
    open_study(config, create=True).enqueue_trial({"width": 8, "overflow": False})
    (trial,) = nas.search(config).get_trials()
    assert trial.user_attrs["status"] == "trained" and trial.user_attrs["quantization"]["format"] == "tensorrt"
    assert nas.load_saved_config(out).int8_format == "tensorrt"
    assert main(["export", str(out), "--trial", str(trial.number), "--epochs", "2", "--output",
                 str(tmp_path / "student.onnx")]) == 0
    assert json.loads((tmp_path / "student.json").read_text())["quantization"]["format"] == "tensorrt"
    model = hwprofile.load_onnx(tmp_path / "student.onnx")
    initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    zero_points = [initializers[node.input[2]] for node in model.graph.node
                   if node.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert zero_points and all(zp.dtype == np.int8 and not zp.any() for zp in zero_points)


def test_int8_budget_check_measures_the_int8_student(tmp_path: Path, cache_dir: Path) -> None:
    """The smallest mbconv student's int8 file is larger than its fp32 one on 8x8 digits (scales and zero points
    outweigh the bytes saved): a size budget between them fits fp32 and no int8 student. The fp32 figure is no
    bound on the int8 one."""
    def check(precision: str, budget: int) -> hwprofile.LatencyStats:
        config = SearchConfig(precision=precision, size_budget_bytes=budget, out=str(tmp_path / precision),
                              cache_dir=str(cache_dir))
        return check_budget(load_context(config, tmp_path))

    space = get_space("mbconv")
    fp32 = hwprofile.export_onnx(space.build(space.smallest(), (1, 8, 8), 10), (1, 8, 8), tmp_path / "s.onnx")
    fp32_size = fp32.stat().st_size
    int8_size = _int8_size_of(fp32, tmp_path)
    assert fp32_size < int8_size
    budget = (fp32_size + int8_size) // 2
    assert check("fp32", budget).median_ms > 0
    with pytest.raises(BudgetError, match=f"--size-budget {budget} bytes is below the ONNX file size of the smallest "
                                          f"student the 'mbconv' space allows at int8: {str(int8_size)[:3]}[0-9]+ bytes"):
        check("int8", budget)  # (zero points are varints: the seeded weights' file may differ by a few bytes)
    assert check("search", budget).median_ms > 0  # fp32 students fit


def _int8_size_of(fp32: Path, folder: Path) -> int:
    feeds = [{"input": np.random.default_rng(0).standard_normal((32, 1, 8, 8), dtype=np.float32)}]
    return hwprofile.quantize_int8(fp32, folder / "s-int8.onnx", feeds).stat().st_size


@pytest.mark.parametrize("text, expected", [("200KB", 200_000), ("200kb", 200_000), ("2MB", 2_000_000),
                                            ("1.5MiB", 1_572_864), ("4096B", 4096), (" 3 GiB ", 3 * 2**30)])
def test_sizes_parse_with_decimal_and_binary_units(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("flag", ["--size-budget", "--memory-budget"])
@pytest.mark.parametrize("value", ["200", "2XB", "2 megabytes", "-1MB"])
def test_a_budget_in_unknown_units_names_the_accepted_ones(flag: str, value: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["search", f"{flag}={value}"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "one of B, kB, MB, GB, KiB, MiB, GiB" in err and repr(value) in err


@pytest.mark.parametrize("settings, message", [
    ({"precision": "int4"}, "Unknown --precision 'int4'; choose one of fp32, int8, search."),
    ({"calibration": "entropy"}, "Unknown --calibration 'entropy'; choose one of minmax, percentile."),
    ({"int8_format": "qnn"}, "Unknown --int8-format 'qnn'; choose one of ort, tensorrt."),
    ({"size_budget_bytes": 0}, "--size-budget must be a positive number of bytes, but got 0."),
    ({"memory_budget_bytes": -5}, "--memory-budget must be a positive number of bytes, but got -5."),
    ({"data": "python-docs", "precision": "int8"}, "--precision int8 quantizes image classifiers"),
])
def test_bad_precision_settings_are_config_errors(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SearchConfig(**settings)


def test_a_study_from_before_precision_resumes_with_the_defaults(tmp_path: Path) -> None:
    config = SearchConfig(out=str(tmp_path))
    stored = {key: value for key, value in config.to_dict().items()
              if key not in ("precision", "calibration", "int8_format", "size_budget_bytes", "memory_budget_bytes")}
    config.check_resumable(stored, "here")
    with pytest.raises(ConfigError, match="precision: study has 'fp32', got 'int8'"):
        SearchConfig(out=str(tmp_path), precision="int8").check_resumable(stored, "here")
    with pytest.raises(ConfigError, match="int8_format: study has 'ort', got 'tensorrt'"):
        SearchConfig(out=str(tmp_path), int8_format="tensorrt").check_resumable(stored, "here")


def test_export_of_an_int8_trial_writes_the_checked_int8_file(int8_search: optuna.Study, tmp_path: Path) -> None:
    trained = next(t for t in int8_search.get_trials() if t.user_attrs.get("status") == "trained")
    config = nas.load_saved_config(int8_search.user_attrs["config"]["out"])
    report = nas.export_trial(config, int8_search, str(trained.number), 3, tmp_path / "student.onnx")
    ops = {node.op_type for node in hwprofile.load_onnx(tmp_path / "student.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    saved = json.loads((tmp_path / "student.json").read_text())
    q = saved["quantization"]
    assert saved["precision"] == report.precision == "int8" and (q["format"], q["method"]) == ("ort", "minmax")
    assert q["agreement_with_fp32"] >= q["agreement_tolerance"] == 0.97
    # the file's own test accuracy is the int8 one, and the drop is measured against the fp32 file
    assert saved["test_score"] == q["test_accuracy_int8"]
    assert q["test_accuracy_drop"] == pytest.approx(q["test_accuracy_fp32"] - q["test_accuracy_int8"])
    assert saved["score"] == q["val_accuracy_int8"] and saved["size_bytes"] == (tmp_path / "student.onnx").stat().st_size


def test_memory_and_size_budgets_are_constraints_beside_latency(tmp_path: Path, cache_dir: Path) -> None:
    config = SearchConfig(latency_budget_ms=1e3, size_budget_bytes=10**9, memory_budget_bytes=1, out=str(tmp_path),
                          cache_dir=str(cache_dir))
    with pytest.raises(BudgetError, match="^--memory-budget 1 bytes is below the peak memory of the smallest student "
                                          "the 'mbconv' space allows: [0-9]+ bytes \\(1 thread"):
        check_budget(load_context(config, tmp_path))
    space = get_space("mbconv")
    path = hwprofile.export_onnx(space.build(space.smallest(), (1, 8, 8), 10), (1, 8, 8), tmp_path / "s.onnx")
    measurement = hwprofile.profile(path)
    over = overruns(config, measurement.latency.median_ms, measurement)
    assert over == {LATENCY_CONSTRAINT: measurement.latency.median_ms - 1e3,
                    SIZE_CONSTRAINT: path.stat().st_size - 10**9,
                    MEMORY_CONSTRAINT: measurement.latency.peak_memory_bytes - 1}


def test_three_objectives_front_with_mixed_precision(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "out"
    assert main(["search", "--trials", "4", "--epochs", "1", "--teacher-epochs", "3", "--out", str(out),
                 "--cache-dir", str(cache_dir), "--sampler", "random", "--precision", "search",
                 "--objectives", "accuracy,latency,size", "--early-stop", "off"]) == 0
    study = nas.load_study(out)
    assert len(study.directions) == 3
    complete = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert {t.params["precision"] for t in study.get_trials()} == {"fp32", "int8"}  # the random sampler's draws
    for trial in complete:
        assert trial.values[2] == trial.user_attrs["model"]["size_bytes"]
    front = json.loads((out / "pareto.json").read_text())
    best = {t.number for t in study.best_trials}
    assert {entry["trial"] for entry in front} <= best and all("size_bytes" in entry for entry in front)
    assert (out / "pareto.png").stat().st_size > 0



def test_unknown_objectives_name_the_accepted_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--objectives", "accuracy,size", "--dry-run"]) == 2
    assert capsys.readouterr().err == ("error: --objectives must be one of accuracy,latency, accuracy,latency,size, "
                                       "accuracy,latency,memory, but got 'accuracy,size'.\n")


def test_export_qat_fine_tunes_the_int8_student_and_reports_before_and_after(
        int8_search: optuna.Study, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trained = next(t for t in int8_search.get_trials() if t.user_attrs.get("status") == "trained")
    out = int8_search.user_attrs["config"]["out"]
    assert main(["export", out, "--trial", str(trained.number), "--epochs", "10", "--qat", "--output",
                 str(tmp_path / "qat.onnx")]) == 0
    saved = json.loads((tmp_path / "qat.json").read_text())
    q, ptq, qat = saved["quantization"], saved["quantization"]["ptq"], saved["quantization"]["qat"]
    ops = {node.op_type for node in hwprofile.load_onnx(tmp_path / "qat.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # the file written is the int8 file with the better validation accuracy, before or after QAT (after on a tie)
    assert qat["kept"] == (qat["val_accuracy_int8"] >= ptq["val_accuracy_int8"])
    written = qat if qat["kept"] else ptq
    assert saved["test_score"] == q["test_accuracy_int8"] == written["test_accuracy_int8"]
    assert saved["score"] == q["val_accuracy_int8"] == written["val_accuracy_int8"] > 0.3
    assert q["agreement_with_fp32"] >= q["agreement_tolerance"] == INT8_AGREEMENT
    assert 0.3 < qat["test_accuracy_int8"] <= 1
    for split in ("val", "test"):  # before QAT: the int8 file quantized from the distilled student, and its fp32 file
        assert 0.3 < ptq[f"{split}_accuracy_int8"] <= 1 and 0.3 < ptq[f"{split}_accuracy_fp32"] <= 1
        drop = ptq[f"{split}_accuracy_fp32"] - ptq[f"{split}_accuracy_int8"]
        assert ptq[f"{split}_accuracy_drop"] == pytest.approx(drop)
    steps = math.ceil(QAT_EPOCHS * math.ceil(1150 / 64))  # digits: 1150 training images in batches of 64
    assert (qat["epochs"], qat["max_steps"], qat["steps"]) == (QAT_EPOCHS, QAT_MAX_STEPS, steps)
    assert qat["lr"] == pytest.approx(SearchConfig().lr * QAT_LR_SCALE) and qat["seconds"] > 0
    assert 0.3 < qat["val_accuracy_fake_quant"] <= 1
    printed = capsys.readouterr().out
    assert f"(the {'fine-tuned ' if qat['kept'] else ''}fp32 file, before quantization)" in printed
    assert f"QAT ({steps} steps at lr {qat['lr']:g}, " in printed
    assert (f"validation {ptq['val_accuracy_int8']:.4f} -> {qat['val_accuracy_int8']:.4f}, "
            f"test {ptq['test_accuracy_int8']:.4f} -> {qat['test_accuracy_int8']:.4f}") in printed
    assert ("the fine-tuned file is written" if qat["kept"] else "the file before QAT is written") in printed


def test_export_qat_of_an_fp32_trial_is_a_usage_error_before_any_training(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"  # empty: any training would fill it (the teacher first)
    config = SearchConfig(out=str(tmp_path / "out"), cache_dir=str(cache))
    config.save()
    open_study(config, create=True).add_trial(optuna.trial.create_trial(
        values=[0.9, 1.0], user_attrs={"arch": get_space("mbconv").smallest(), "precision": "fp32"}))
    assert main(["export", config.out, "--trial", "0", "--qat", "--output", str(tmp_path / "s.onnx")]) == 2
    assert capsys.readouterr().err == "error: --qat fine-tunes int8 students, but trial 0 has precision 'fp32'.\n"
    assert not (tmp_path / "s.onnx").exists() and not (cache.exists() and any(cache.iterdir()))
