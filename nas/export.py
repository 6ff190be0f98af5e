"""`nas export`: distil a chosen student properly, export it to ONNX, verify the file and judge it on the test split."""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna

import hwprofile
from nas.config import SearchConfig
from nas.pareto import best_trial
from nas.search import load_context
from nas.tasks import TextTask

log = logging.getLogger(__name__)
PARITY_TOLERANCE = 1e-3  # max |ONNX Runtime - PyTorch| on the validation outputs


class ExportError(ValueError):
    """A trial that cannot be exported, or an export that does not match PyTorch."""


@dataclass(frozen=True)
class ExportReport:
    trial: int
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
    files: list[str]  # written beside the model (tokenizer files of a text student)
    test_accuracy: float | None  # of the ONNX file in ONNX Runtime on the held-out test split; None: no test split
    test_accuracy_ci95: list[float] | None  # its bootstrap 95% percentile interval
    test_samples: int
    test_note: str  # where the test split came from, or why there is none


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


def export_trial(config: SearchConfig, study: optuna.Study, which: str, epochs: float, output: str | Path) -> ExportReport:
    """Rebuild the trial's student, distil it for ``epochs`` with the trial's settings, export and verify it, and
    score the ONNX file on the test split."""
    trial = select_trial(study, which)
    output = Path(output)
    with tempfile.TemporaryDirectory(prefix="nas-export-") as workdir:
        context = load_context(config, Path(workdir))
        task = context.task
        teacher_score = task.load_teacher()
        student = task.build_student(trial.user_attrs["arch"])
        settings = trial.user_attrs.get("distillation", {})
        log.info("Distilling trial %d for %s epochs (%s)", trial.number, epochs, settings)
        result = task.distil(student, settings, epochs=epochs)

        task.export(student, output)
        hwprofile.load_onnx(output)  # runs the ONNX checker
        diff = task.parity(student, output)
        if diff > PARITY_TOLERANCE:
            raise ExportError(f"{output} disagrees with PyTorch: max |difference| {diff:.2e} > {PARITY_TOLERANCE}.")
        measurement = context.measure(output)
        test = task.test_score(output)
    files = task.save_tokenizer(output.parent) if isinstance(task, TextTask) else []
    report = ExportReport(
        trial=trial.number, output=str(output), metric=task.metric, score=result.score,
        teacher_score=None if math.isnan(teacher_score) else teacher_score, metrics=result.metrics,
        max_abs_diff=diff, latency_ms=measurement.latency.median_ms, latency_p90_ms=measurement.latency.p90_ms,
        params=measurement.model.params, macs=measurement.model.macs, size_bytes=measurement.model.size_bytes,
        epochs=epochs, files=files, test_accuracy=test.accuracy, test_accuracy_ci95=test.ci95,
        test_samples=test.samples, test_note=test.note,
    )
    metadata = {**asdict(report), "distillation": settings, "arch": trial.user_attrs["arch"], **task.metadata(),
                "device": measurement.device}
    output.with_suffix(".json").write_text(json.dumps(metadata, indent=2) + "\n")
    return report
