"""`nas export`: distil a chosen student properly, export it to ONNX and verify the file."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import torch

import hwprofile
from nas.config import SearchConfig
from nas.pareto import best_trial
from nas.search import load_context

log = logging.getLogger(__name__)
PARITY_TOLERANCE = 1e-3  # max |ONNX Runtime - PyTorch| on the validation logits


class ExportError(ValueError):
    """A trial that cannot be exported, or an export that does not match PyTorch."""


@dataclass(frozen=True)
class ExportReport:
    trial: int
    output: str
    accuracy: float
    agreement: float
    teacher_accuracy: float
    max_abs_diff: float
    latency_ms: float
    latency_p90_ms: float
    params: int
    macs: int
    size_bytes: int
    epochs: float


def select_trial(study: optuna.Study, which: str) -> optuna.trial.FrozenTrial:
    """``best`` (most accurate within the budget) or a trial number that has an architecture."""
    if which == "best":
        return best_trial(study)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    if not which.isdigit() or int(which) not in trials or "arch" not in trials[int(which)].user_attrs:
        numbers = [n for n, t in trials.items() if "arch" in t.user_attrs]
        raise ExportError(f"--trial must be 'best' or a trial number of study {study.study_name!r} "
                          f"(0..{max(numbers, default=-1)}), but got {which!r}.")
    return trials[int(which)]


def export_trial(config: SearchConfig, study: optuna.Study, which: str, epochs: float, output: str | Path) -> ExportReport:
    """Rebuild the trial's student, distil it for ``epochs`` with the trial's settings, export and verify it."""
    trial = select_trial(study, which)
    with tempfile.TemporaryDirectory(prefix="nas-export-") as workdir:
        context = load_context(config, Path(workdir))
        context.load_teacher()
        data, outputs = context.data, context.outputs
        assert outputs is not None
        student = context.build_student(trial.user_attrs["arch"])
        settings = trial.user_attrs.get("distillation", {})
        train = replace(context.train, epochs=epochs, steps=None, **settings)
        log.info("Distilling trial %d for %s epochs (%s)", trial.number, epochs, train.kd)
        result = context.distil(student, train)

        output = hwprofile.export_onnx(student, data.input_shape, output)
        hwprofile.load_onnx(output)  # runs the ONNX checker
        diff = _parity(student, output, data.x_val)
        if diff > PARITY_TOLERANCE:
            raise ExportError(f"{output} disagrees with PyTorch: max |difference| {diff:.2e} > {PARITY_TOLERANCE}.")
        measurement = context.measure(output)
    report = ExportReport(
        trial=trial.number, output=str(output), accuracy=result.accuracy, agreement=result.agreement,
        teacher_accuracy=outputs.accuracy(data), max_abs_diff=diff, latency_ms=measurement.latency.median_ms,
        latency_p90_ms=measurement.latency.p90_ms, params=measurement.model.params, macs=measurement.model.macs,
        size_bytes=measurement.model.size_bytes, epochs=epochs,
    )
    metadata = {**asdict(report), "metrics": result.to_dict(), "distillation": settings,
                "arch": trial.user_attrs["arch"], "input_shape": list(data.input_shape), "classes": data.classes,
                "normalise": {"mean": data.mean, "std": data.std}, "device": measurement.device}
    Path(output).with_suffix(".json").write_text(json.dumps(metadata, indent=2) + "\n")
    return report


@torch.no_grad()
def _parity(student: torch.nn.Module, path: Path, x: np.ndarray) -> float:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = student.eval()(torch.from_numpy(x)).numpy()
    actual = session.run(None, {session.get_inputs()[0].name: x})[0]
    return float(np.abs(actual - expected).max())
