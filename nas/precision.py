"""Students at the precision they deploy at: fp32, or int8 by ONNX Runtime static quantization (``hwprofile.quantize``).

An int8 student trains in fp32 (the short distillation, from the cached teacher outputs), then its ONNX file is
quantized, calibrated on a few hundred training images, in the search's ``--int8-format`` (``ort``: ONNX Runtime's
x86 advice; ``tensorrt``: what TensorRT's explicit quantization takes); both of its objectives come from the quantized
file: the accuracy of ONNX Runtime on the validation split, the latency measured by hwprofile. ``--precision
search`` makes the precision a trial parameter, so the front mixes fp32 and int8 students; one distillation scores a
student at both (``nas.search.objective``). ``nas export --qat``
fine-tunes an int8 student with fake quantization (``distill.quantization_aware``) before its file is quantized.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import torch.nn as nn

import distill
import hwprofile
from nas.config import SearchConfig
from nas.tasks import ImageTask, Task

CALIBRATION_SAMPLES = 256  # training images that calibrate a trained student's activation ranges
# An untrained copy's ranges do not change its latency (the QDQ graph's structure does not depend on them): a few
# images are enough for the copy that is measured before training.
LATENCY_CALIBRATION_SAMPLES = 32
INT8_AGREEMENT = 0.97  # an exported int8 file's least top-1 agreement with its fp32 file on the validation split
# Quantization-aware fine-tuning after an export's long distillation (measured on digits, see README): a few epochs
# from the distilled weights at a tenth of the learning rate.
QAT_EPOCHS = 10.0
QAT_MAX_STEPS = 1_000
QAT_LR_SCALE = 0.1  # the fine-tuning's peak learning rate as a fraction of the distillation's


def trial_precisions(config: SearchConfig) -> tuple[str, ...]:
    """The precisions a trial of ``config`` may have."""
    return ("fp32", "int8") if config.precision == "search" else (config.precision,)


def sample_precision(config: SearchConfig, trial: optuna.Trial) -> str:
    """The trial's precision: the configured one, or with ``--precision search`` the trial's choice."""
    if config.precision != "search":
        return config.precision
    return str(trial.suggest_categorical("precision", trial_precisions(config)))


def export_at(task: Task, student: nn.Module, path: Path, precision: str, method: str, samples: int, *,
              int8_format: str) -> Path:
    """Export ``student`` to ONNX at ``path``, quantized to int8 in ``int8_format`` (calibrated by ``method`` on
    ``samples`` training images) when ``precision`` says so; a :class:`hwprofile.QuantizationError` when ONNX Runtime
    cannot quantize it."""
    if precision == "fp32":
        return task.export(student, path)
    assert isinstance(task, ImageTask), "int8 is for image classifiers (SearchConfig checks it)"
    fp32 = task.export(student, path.with_name(f"{path.stem}-fp32.onnx"))
    try:
        return hwprofile.quantize_int8(fp32, path, task.calibration(samples), method=method, int8_format=int8_format)
    finally:
        fp32.unlink()


def quantized_metrics(task: Task, student: nn.Module, path: Path, method: str, fp32_metrics: dict[str, Any], *,
                      int8_format: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Quantize the trained ``student`` to int8 in ``int8_format`` at ``path`` (a scratch file, removed after) and
    score the file in ONNX Runtime on the validation split. Returns its metrics (``fp32_metrics`` with the quality
    metrics of the int8 file instead) and the ``quantization`` record: the file's format, calibration method and
    samples, the fp32 and int8 accuracy and the drop, the seconds."""
    assert isinstance(task, ImageTask), "int8 is for image classifiers (SearchConfig checks it)"
    start = time.perf_counter()
    try:
        export_at(task, student, path, "int8", method, CALIBRATION_SAMPLES, int8_format=int8_format)
        metrics = {**fp32_metrics, **task.onnx_metrics(path)}
        record = {"format": int8_format, "method": method, "samples": min(CALIBRATION_SAMPLES, len(task.data.train)),
                  "accuracy_fp32": fp32_metrics["accuracy"], "accuracy_int8": metrics["accuracy"],
                  "accuracy_drop": fp32_metrics["accuracy"] - metrics["accuracy"],
                  "size_bytes": path.stat().st_size, "seconds": time.perf_counter() - start}
    finally:
        path.unlink(missing_ok=True)
    return metrics, record


def quantize_export(task: Task, fp32: Path, output: Path, method: str, *, int8_format: str) -> dict[str, Any]:
    """Quantize the exported, verified ``fp32`` file to int8 in ``int8_format`` at ``output`` (the record names both)
    and compare the two files in ONNX Runtime: their top-1 agreement and accuracy on the validation split, their
    accuracy on the test split (None without one). The caller holds the agreement to :data:`INT8_AGREEMENT`."""
    assert isinstance(task, ImageTask), "int8 is for image classifiers (SearchConfig checks it)"
    hwprofile.quantize_int8(fp32, output, task.calibration(CALIBRATION_SAMPLES), method=method, int8_format=int8_format)
    data = task.data
    predictions = {name: task.onnx_logits(path, data.val).argmax(1) for name, path in (("fp32", fp32), ("int8", output))}
    val = {name: float((found == data.val.y).mean()) for name, found in predictions.items()}
    test = {name: task.test_score(path).score for name, path in (("fp32", fp32), ("int8", output))}
    return {"format": int8_format, "method": method, "samples": min(CALIBRATION_SAMPLES, len(data.train)),
            "agreement_with_fp32": float((predictions["fp32"] == predictions["int8"]).mean()),
            "agreement_tolerance": INT8_AGREEMENT,
            "val_accuracy_fp32": val["fp32"], "val_accuracy_int8": val["int8"],
            "val_accuracy_drop": val["fp32"] - val["int8"],
            "test_accuracy_fp32": test["fp32"], "test_accuracy_int8": test["int8"],
            "test_accuracy_drop": None if test["fp32"] is None or test["int8"] is None else test["fp32"] - test["int8"]}


def qat_finetune(task: Task, student: nn.Module, settings: dict[str, Any]) -> dict[str, Any]:
    """Fine-tune the distilled ``student`` in place with int8 fake quantization, by the distillation ``settings`` from
    the cached teacher outputs, for :data:`QAT_EPOCHS` (at most :data:`QAT_MAX_STEPS`) at :data:`QAT_LR_SCALE` of the
    learning rate; the student is plain again after. Returns the ``qat`` record: budget, steps, learning rate, the
    fake-quantized student's validation accuracy in PyTorch, seconds."""
    assert isinstance(task, ImageTask), "int8 is for image classifiers (SearchConfig checks it)"
    lr = settings.get("lr", task.train.lr) * QAT_LR_SCALE
    start = time.perf_counter()
    with distill.quantization_aware(student):
        result = task.distil(student, {**settings, "lr": lr}, epochs=QAT_EPOCHS, max_steps=QAT_MAX_STEPS)
    return {"epochs": QAT_EPOCHS, "max_steps": QAT_MAX_STEPS, "steps": result.metrics["steps"], "lr": lr,
            "val_accuracy_fake_quant": result.score, "seconds": time.perf_counter() - start}


__all__ = ["CALIBRATION_SAMPLES", "INT8_AGREEMENT", "LATENCY_CALIBRATION_SAMPLES", "QAT_EPOCHS", "QAT_LR_SCALE",
           "QAT_MAX_STEPS", "export_at", "qat_finetune", "quantize_export", "quantized_metrics", "sample_precision",
           "trial_precisions"]
