"""Distillation of image classifiers: cross-entropy plus the configured distillation terms, and its scoring."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn as nn

from distill.arrays import rows
from distill.device import Placement, placed
from distill.features import FeaturePlan, capture, predict
from distill.image.augment import Views
from distill.image.cache import TeacherOutputs
from distill.image.data import Dataset, ImageSplit, Rows, row_loader
from distill.image.metrics import Metrics, quality_metrics
from distill.loop import LoopConfig, Rungs, TrainResult, fit
from distill.losses.criterion import KDCriterion, build_criterion
from distill.losses.registry import KDSpec, KDStep, parse_kd_spec
from distill.losses.schedules import TEMPERATURE_SCHEDULES, batch_size_temperature, scheduled_temperature
from distill.losses.weighting import balanced_backward


class SoftTargets(Protocol):
    def __call__(self, indices: np.ndarray, inputs: torch.Tensor) -> torch.Tensor:
        """Teacher logits for the training samples ``indices`` (whose normalised images are ``inputs``)."""


@dataclass(frozen=True)
class CachedLogits:
    """Soft targets read from the teacher-output cache."""

    logits: np.ndarray

    def __call__(self, indices: np.ndarray, inputs: torch.Tensor) -> torch.Tensor:
        return rows(self.logits, indices)


@dataclass(frozen=True)
class OnlineTeacher:
    """Soft targets from running the teacher on every batch (what the cache avoids), where the batch is."""

    module: nn.Module

    @torch.no_grad()
    def __call__(self, indices: np.ndarray, inputs: torch.Tensor) -> torch.Tensor:
        return self.module.to(inputs.device).eval()(inputs)


@dataclass(frozen=True)
class TrainConfig(LoopConfig):
    """The budget and optimiser (:class:`~distill.loop.LoopConfig`) and the distillation terms of an image run."""

    temperature: float = 4.0  # KD temperature (of the first step, under a schedule)
    alpha: float = 0.9  # loss = (1 - alpha) * CE + alpha * sum_k w_k * L_k over the methods of ``kd``
    kd: KDSpec = "kd"  # distillation methods: "kd", "kd+at:0.5", "none", or a list of {name, weight, options}
    temperature_schedule: str = "constant"  # or "decay": linear from ``temperature`` to ``final_temperature``
    final_temperature: float = 1.0
    reference_batch_size: int | None = None  # set: scale temperatures by (reference_batch_size / batch_size)^(1/4)
    class_weighted: bool = False  # weigh the per-sample KL terms by inverse class frequency
    auto_alpha: bool = False  # scale each term's gradient to the CE's norm instead of weighing by alpha

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.alpha <= 1.0 or self.temperature <= 0 or self.final_temperature <= 0:
            raise ValueError(f"`0 <= alpha <= 1`, `temperature > 0` and `final_temperature > 0` must hold, but got "
                             f"({self.alpha=}, {self.temperature=}, {self.final_temperature=}).")
        if self.temperature_schedule not in TEMPERATURE_SCHEDULES:
            raise ValueError(f"Unknown temperature schedule {self.temperature_schedule!r}; known schedules: "
                             f"{', '.join(TEMPERATURE_SCHEDULES)}.")
        if self.reference_batch_size is not None and self.reference_batch_size < 1:
            raise ValueError(f"`reference_batch_size >= 1` must hold, but got {self.reference_batch_size=}.")
        parse_kd_spec(self.kd)

    def temperature_at(self, step: int, total_steps: int) -> float:
        """The KD temperature of ``step``: the schedule, scaled by the batch-size rule when a reference is set."""
        temperature = scheduled_temperature(self.temperature_schedule, self.temperature, self.final_temperature,
                                            step, total_steps)
        if self.reference_batch_size is None:
            return temperature
        return batch_size_temperature(temperature, self.batch_size, self.reference_batch_size)


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    agreement: float | None  # top-1 agreement with the teacher, when its logits are given


@dataclass(frozen=True)
class DistillResult:
    metrics: Metrics  # on the validation split
    steps: int
    seconds: float
    stopped_at_rung: int | None = None

    @property
    def accuracy(self) -> float:
        return self.metrics.accuracy

    @property
    def agreement(self) -> float:
        return self.metrics.agreement

    def to_dict(self) -> dict[str, float]:
        """The metrics, steps and seconds as one flat dict (e.g. for a trial's user attributes)."""
        return {**asdict(self.metrics), "steps": self.steps, "seconds": self.seconds,
                "stopped_at_rung": self.stopped_at_rung}


def train(model: nn.Module, data: Dataset, soft_targets: SoftTargets | None, config: TrainConfig, *,
          criterion: KDCriterion | None = None, rungs: Rungs | None = None,
          placement: Placement = Placement(), views: Views | None = None) -> TrainResult:
    """Train ``model`` on ``data.train`` in the shared loop (:func:`distill.loop.fit`), reading the seeded batches
    through a DataLoader (:func:`~distill.image.data.row_loader`) and normalising each one.

    The loss is ``criterion`` (by default the methods of ``config.kd`` reading the teacher logits that
    ``soft_targets`` gives; cross-entropy alone without soft targets). The criterion's own parameters
    (projections, exits, peers) are trained along with the model. ``rungs`` may end training early.
    The model trains on ``placement.device`` and stays there; each batch moves there once normalised.
    With ``views``, sample ``i`` in epoch ``e`` is its view ``(e + offset_i) mod V`` (:meth:`Views.cycle`), and the
    soft targets and the methods read row ``view * N + i`` of the cached teacher logits (the logits of that view).
    """
    if criterion is None:
        taught = soft_targets is not None
        criterion = build_criterion(model, config.kd if taught else "none", data.input_shape, data.num_classes,
                                    class_labels=data.train.y if taught and config.class_weighted else None,
                                    seed=config.seed)
    num_student_params = sum(p.requires_grad for p in model.parameters())

    def auto_alpha(loss: torch.Tensor, terms: Mapping[str, torch.Tensor], params: Sequence[torch.Tensor]) -> None:
        balanced_backward(terms, criterion.weights, params, num_student_params)

    per_epoch = math.ceil(len(data.train) / config.batch_size)

    with capture(model, criterion.student_paths) as features:
        def batch_losses(batch: Rows, step: int, total: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            x, positions = batch.x, batch.indices  # positions: rows of the cached teacher logits
            if views is not None:
                x, view = views.of_epoch(batch.x, batch.indices, step // per_epoch)
                positions = view * len(data.train) + batch.indices
            inputs = placement.put(data.normalise_tensor(x))
            logits = model(inputs)
            teacher = None if soft_targets is None else \
                soft_targets(positions, inputs).to(placement.device, non_blocking=True)
            terms = criterion(KDStep(positions, inputs, placement.put(batch.y), logits, dict(features), teacher,
                                     config.temperature_at(step, total)))
            return criterion.combine(terms, config.alpha), terms

        return fit(model, config, len(data.train), batch_losses, loader=lambda batches: row_loader(data.train, batches),
                   criterion=criterion, backward=auto_alpha if config.auto_alpha and criterion.methods else None,
                   after_step=lambda: criterion.after_step(model), rungs=rungs, placement=placement)


def split_logits(model: nn.Module, data: Dataset, split: ImageSplit) -> np.ndarray:
    """The model's float32 logits on ``split``, in eval mode, its images normalised one batch at a time."""
    return np.concatenate([predict(model, batch, len(batch)) for batch in data.batches(split)])


def evaluate(model: nn.Module, data: Dataset, split: ImageSplit | None = None,
             teacher_logits: np.ndarray | None = None) -> Evaluation:
    """Accuracy (and top-1 agreement with ``teacher_logits``) of ``model`` on ``split`` (default: validation)."""
    split = data.val if split is None else split
    predictions = split_logits(model, data, split).argmax(1)
    agreement = None if teacher_logits is None else float((predictions == teacher_logits.argmax(1)).mean())
    return Evaluation(accuracy=float((predictions == split.y).mean()), agreement=agreement)


def distill(student: nn.Module, data: Dataset, outputs: TeacherOutputs | Sequence[TeacherOutputs],
            config: TrainConfig, *, plan: FeaturePlan | None = None, rungs: Rungs | None = None,
            placement: Placement = Placement(), soft_targets: SoftTargets | None = None) -> DistillResult:
    """A distillation run from cached teacher outputs, scored on the validation split.

    ``outputs``: one teacher's, or several (multi-teacher ``mkd``; the first is the primary teacher, which
    the other methods and the metrics use). ``plan`` pairs student and teacher features for the
    feature- and relation-based methods; the teacher's side must be in ``outputs[0].features``.
    ``rungs`` may stop the run early; the metrics are then those of the stopped student. The student trains and
    is scored on ``placement.device``, then goes back to where it was (e.g. the CPU, for ONNX export). When the
    outputs hold augmented views, the student trains on those views (:func:`train`). ``soft_targets`` replaces the
    cached training logits of the primary teacher (e.g. an :class:`OnlineTeacher`); the metrics still use ``outputs``.
    """
    teachers = [outputs] if isinstance(outputs, TeacherOutputs) else list(outputs)
    views = teachers[0].views
    if any(teacher.views != views for teacher in teachers):
        raise ValueError(f"Every teacher's outputs must hold the same views, but got "
                         f"{[None if t.views is None else t.views.key for t in teachers]}.")
    criterion = build_criterion(student, config.kd, data.input_shape, data.num_classes,
                                teacher_logits=[teacher.train for teacher in teachers],
                                teacher_features=teachers[0].features, plan=plan,
                                class_labels=data.train.y if config.class_weighted else None, seed=config.seed)
    with placed(student, placement.device):
        result = train(student, data, soft_targets or CachedLogits(teachers[0].train), config, criterion=criterion,
                       rungs=rungs, placement=placement, views=views)
        logits = split_logits(student, data, data.val)
    metrics = quality_metrics(logits, np.asarray(teachers[0].val), data.val.y, seed=config.seed)
    return DistillResult(metrics=metrics, steps=result.steps, seconds=result.seconds,
                         stopped_at_rung=result.stopped_at_rung)
