"""`nas export`: distil a chosen student properly, export it to ONNX, verify the file and judge it on the test split."""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import torch.nn as nn

import distill
import hwprofile
from nas import cores
from nas.config import SearchConfig
from nas.pareto import best_trial
from nas.precision import qat_finetune, quantize_export
from nas.search import load_context
from nas.tasks import Task, TextTask
from search_spaces import Arch

log = logging.getLogger(__name__)
PARITY_TOLERANCE = 1e-3  # max |ONNX Runtime - PyTorch| on the validation outputs
EXPORT_EPOCHS = 60.0
# Extra texts can outnumber --data's own by 100x while an epoch counts the own ones: the default export then runs
# until every training text was seen this many times, within --max-steps. With 88k docstrings as extra texts, 1.1
# passes gave a student cosine 0.807 / top-10 0.577, 3.3 passes 0.843 / 0.599, 6.6 passes 0.852 / 0.607 at twice
# the cost (BENCHMARKS.md): 3 takes most of the gain inside the 10,000-step cap.
EXPORT_PASSES = 3
# An export's cap on its epochs, so that its cost does not grow with the data set: 60 epochs of digits are ~1,000
# steps, of Fashion-MNIST's 48,000 training images 45,000 (capped: 13 epochs).
EXPORT_MAX_STEPS = 10_000


class ExportError(ValueError):
    """A trial that cannot be exported, or an export that does not match PyTorch."""


@dataclass(frozen=True)
class ExportReport:
    trial: int | None  # None: an architecture exported without a trial (export_arch)
    output: str
    metric: str  # the quality objective's name
    score: float  # on the validation split (which chose the student)
    teacher_score: float | None
    metrics: dict[str, Any]
    max_abs_diff: float
    latency_ms: float
    latency_p90_ms: float
    params: int
    macs: int
    size_bytes: int
    epochs: float
    steps: int  # the distillation steps run: ``epochs`` capped at the export's ``max_steps``
    files: list[str]  # written beside the model (tokenizer files of a text student)
    test_score: float | None  # ``metric`` of the ONNX file in ONNX Runtime on the held-out test split; None: none
    test_score_ci95: list[float] | None  # its bootstrap 95% percentile interval
    test_samples: int
    test_note: str  # where the test split came from, or why there is none
    test_metrics: dict[str, Any]  # the task's other figures on it (text: top-k neighbour agreement)
    precision: str = "fp32"
    quantization: dict[str, Any] | None = None  # int8: calibration, fp32 vs int8 agreement and accuracy (precision.py);
    # with QAT, of the file written (before or after it), with ``ptq`` (the figures before it) and ``qat``


def select_trial(study: optuna.Study, which: str) -> optuna.trial.FrozenTrial:
    """``best`` (the highest score within the budget) or a trial number that has an architecture."""
    if which == "best":
        return best_trial(study)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if not which.isdigit() or int(which) not in trials or "arch" not in trials[int(which)].user_attrs:
        numbers = [n for n, t in trials.items() if "arch" in t.user_attrs]
        raise ExportError(f"--trial must be 'best' or a trial number of study {study.study_name!r} "
                          f"(0..{max(numbers, default=-1)}), but got {which!r}.")
    return trials[int(which)]


def default_epochs(task: Task) -> float:
    """``nas export``'s epochs when none are given: :data:`EXPORT_EPOCHS`, or more for a text student with extra
    texts, so that every training text is seen :data:`EXPORT_PASSES` times (an epoch counts ``--data``'s own)."""
    if isinstance(task, TextTask) and task.data.num_extra:
        return max(EXPORT_EPOCHS, EXPORT_PASSES * len(task.data.ids_train) / task.data.num_own_train)
    return EXPORT_EPOCHS


def export_trial(config: SearchConfig, study: optuna.Study, which: str, epochs: float | None, output: str | Path, *,
                 max_steps: int | None = EXPORT_MAX_STEPS, qat: bool = False) -> ExportReport:
    """Rebuild the trial's student, distil it for ``epochs`` (None: :func:`default_epochs`; at most ``max_steps``)
    with the trial's settings, export and verify it, and score the ONNX file on the test split (:func:`export_arch`)."""
    trial = select_trial(study, which)
    return export_arch(config, trial.user_attrs["arch"], trial.user_attrs.get("distillation", {}), epochs, output,
                       max_steps=max_steps, trial=trial.number, precision=trial.user_attrs.get("precision", "fp32"),
                       qat=qat)


def _export_checked(task: Task, student: nn.Module, path: Path, output: Path) -> float:
    """Export ``student`` to ``path``, run the ONNX checker and return the max |ONNX Runtime - PyTorch| on the
    validation split; an :class:`ExportError` (naming ``output``) above :data:`PARITY_TOLERANCE`."""
    task.export(student, path)
    hwprofile.load_onnx(path)  # runs the ONNX checker
    diff = task.parity(student, path)
    if diff > PARITY_TOLERANCE:
        raise ExportError(f"{output} disagrees with PyTorch: max |difference| {diff:.2e} > {PARITY_TOLERANCE}.")
    return diff


def _fine_tuned(task: Task, student: nn.Module, settings: dict[str, Any], config: SearchConfig, workdir: Path,
                output: Path, diff_before: float, ptq: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Quantization-aware fine-tuning of the distilled ``student``, whose int8 file is ``output`` (its fp32 file's
    parity ``diff_before``, its quantization record ``ptq``). The fine-tuned student's fp32 file is verified and
    quantized; the int8 file with the higher validation accuracy is left at ``output`` (the fine-tuned one on a tie:
    fine-tuning a few images either way is noise, and it is what was asked for). Returns the parity and the
    quantization record of the written file, with ``ptq`` (the figures before fine-tuning) and ``qat`` (its budget,
    time, its int8 file's validation and test accuracy and whether that file was ``kept``)."""
    ptq_file = workdir / "ptq-int8.onnx"
    shutil.copyfile(output, ptq_file)
    qat = qat_finetune(task, student, settings)
    diff = _export_checked(task, student, workdir / "qat-fp32.onnx", output)
    after = quantize_export(task, workdir / "qat-fp32.onnx", output, config.calibration, int8_format=config.int8_format)
    summary = {key: value for key, value in ptq.items() if key not in ("format", "method", "samples")}
    kept = after["val_accuracy_int8"] >= ptq["val_accuracy_int8"]
    qat.update(val_accuracy_int8=after["val_accuracy_int8"], test_accuracy_int8=after["test_accuracy_int8"], kept=kept)
    if kept:
        return diff, {**after, "ptq": summary, "qat": qat}
    log.info("The fine-tuned int8 file scores %.4f on validation, below %.4f before: the file before fine-tuning is "
             "kept.", after["val_accuracy_int8"], ptq["val_accuracy_int8"])
    shutil.copyfile(ptq_file, output)
    return diff_before, {**ptq, "ptq": summary, "qat": qat}


def export_arch(config: SearchConfig, arch: Arch, settings: dict[str, Any], epochs: float | None,
                output: str | Path, *, max_steps: int | None = EXPORT_MAX_STEPS, trial: int | None = None,
                precision: str = "fp32", qat: bool = False) -> ExportReport:
    """Build ``arch`` of ``config``'s space, distil it for ``epochs`` (None: :func:`default_epochs`) and at most
    ``max_steps`` (None: no cap) with the distillation ``settings`` (a trial's
    ``distillation`` attribute), export and verify the ONNX file, measure it and score it on the test split; writes
    ``output`` and its ``.json``. Any architecture of the space may be exported this way, searched or not.

    At ``precision`` int8 the student still distils in fp32; its verified fp32 file is then quantized (calibrated as
    the search's ``--calibration``, in its ``--int8-format``), and the int8 file is what is written, measured and
    scored, its top-1 agreement with the fp32 file held to ``nas.precision.INT8_AGREEMENT`` on the validation split.
    ``qat`` (int8 only): that file's figures are kept (``ptq``), then the student is fine-tuned with fake quantization
    (``nas.precision.qat_finetune``), and its fine-tuned fp32 file, verified again, is quantized; the file written is
    the fine-tuned one unless its validation accuracy is lower (:func:`_fine_tuned`)."""
    output = Path(output)
    if qat and precision != "int8":
        which = "the architecture" if trial is None else f"trial {trial}"
        raise ExportError(f"--qat fine-tunes int8 students, but {which} has precision {precision!r}.")
    with tempfile.TemporaryDirectory(prefix="nas-export-") as workdir, cores.membership():
        context = load_context(config, Path(workdir))
        task = context.task
        teacher_score = task.load_teacher()
        student = task.build_student(arch)
        epochs = default_epochs(task) if epochs is None else epochs
        log.info("Distilling %s for %s epochs, at most %s steps (%s)", "the student" if trial is None else
                 f"trial {trial}", epochs, max_steps or "any", settings)
        result = task.distil(student, settings, epochs=epochs, max_steps=max_steps)

        fp32 = output if precision == "fp32" else Path(workdir) / "fp32.onnx"
        diff = _export_checked(task, student, fp32, output)
        quantization = None if precision == "fp32" else quantize_export(task, fp32, output, config.calibration,
                                                                        int8_format=config.int8_format)
        if quantization is not None and qat:
            diff, quantization = _fine_tuned(task, student, settings, config, Path(workdir), output, diff,
                                             quantization)
        if quantization is not None and quantization["agreement_with_fp32"] < quantization["agreement_tolerance"]:
            raise ExportError(f"{output} (int8) agrees with its fp32 file on {quantization['agreement_with_fp32']:.2%} of "
                              f"the validation predictions, below {quantization['agreement_tolerance']:.0%}.")
        measurement = context.measure(output)
        test = task.test_score(output)
    files = task.save_tokenizer(output.parent) if isinstance(task, TextTask) else []
    report = ExportReport(
        trial=trial, output=str(output), metric=task.metric,
        score=result.score if quantization is None else quantization["val_accuracy_int8"],
        teacher_score=None if math.isnan(teacher_score) else teacher_score, metrics=result.metrics,
        max_abs_diff=diff, latency_ms=measurement.latency.median_ms, latency_p90_ms=measurement.latency.p90_ms,
        params=measurement.model.params, macs=measurement.model.macs, size_bytes=measurement.model.size_bytes,
        epochs=epochs, steps=result.metrics["steps"], files=files, test_score=test.score, test_score_ci95=test.ci95,
        test_samples=test.samples, test_note=test.note, test_metrics=test.metrics, precision=precision,
        quantization=quantization,
    )
    metadata = {**asdict(report), "distillation": settings, "arch": arch, **task.metadata(),
                "device": measurement.device, "train_device": distill.describe_device(task.placement.device)}
    output.with_suffix(".json").write_text(json.dumps(metadata, indent=2) + "\n")
    return report
