"""The distillation loop: cross-entropy plus the configured distillation terms, and its scoring."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Protocol

import numpy as np
import torch
import torch.nn as nn

from distill.cache import TeacherOutputs
from distill.criterion import KDCriterion, build_criterion
from distill.data import Dataset
from distill.errors import DistillError
from distill.features import FeaturePlan, capture
from distill.metrics import Metrics, quality_metrics
from distill.registry import KDSpec, KDStep, parse_kd_spec
from distill.schedules import TEMPERATURE_SCHEDULES, batch_size_temperature, scheduled_temperature
from distill.weighting import balanced_backward


class SoftTargets(Protocol):
    def __call__(self, indices: np.ndarray, inputs: torch.Tensor) -> torch.Tensor:
        """Teacher logits for the training samples ``indices`` (whose images are ``inputs``)."""


@dataclass(frozen=True)
class CachedLogits:
    """Soft targets read from the teacher-output cache."""

    logits: np.ndarray

    def __call__(self, indices: np.ndarray, inputs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.logits[indices]))


@dataclass(frozen=True)
class OnlineTeacher:
    """Soft targets from running the teacher on every batch (what the cache avoids)."""

    module: nn.Module

    @torch.no_grad()
    def __call__(self, indices: np.ndarray, inputs: torch.Tensor) -> torch.Tensor:
        return self.module.eval()(inputs)


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 10.0
    steps: int | None = None  # when set, overrides ``epochs``
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    temperature: float = 4.0  # KD temperature (of the first step, under a schedule)
    alpha: float = 0.9  # loss = (1 - alpha) * CE + alpha * sum_k w_k * L_k over the methods of ``kd``
    kd: KDSpec = "kd"  # distillation methods: "kd", "kd+at:0.5", "none", or a list of {name, weight, options}
    temperature_schedule: str = "constant"  # or "decay": linear from ``temperature`` to ``final_temperature``
    final_temperature: float = 1.0
    reference_batch_size: int | None = None  # set: scale temperatures by (reference_batch_size / batch_size)^(1/4)
    class_weighted: bool = False  # weigh the per-sample KL terms by inverse class frequency
    auto_alpha: bool = False  # scale each term's gradient to the CE's norm instead of weighing by alpha

    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0 or self.temperature <= 0 or self.final_temperature <= 0:
            raise ValueError(f"`0 <= alpha <= 1`, `temperature > 0` and `final_temperature > 0` must hold, but got "
                             f"({self.alpha=}, {self.temperature=}, {self.final_temperature=}).")
        if (self.steps is not None and self.steps < 1) or self.epochs <= 0 or self.batch_size < 1:
            raise ValueError(f"The budget must be positive, but got ({self.epochs=}, {self.steps=}, {self.batch_size=}).")
        if self.temperature_schedule not in TEMPERATURE_SCHEDULES:
            raise ValueError(f"Unknown temperature schedule {self.temperature_schedule!r}; known schedules: "
                             f"{', '.join(TEMPERATURE_SCHEDULES)}.")
        if self.reference_batch_size is not None and self.reference_batch_size < 1:
            raise ValueError(f"`reference_batch_size >= 1` must hold, but got {self.reference_batch_size=}.")
        parse_kd_spec(self.kd)

    def total_steps(self, num_samples: int) -> int:
        return self.steps or max(1, math.ceil(self.epochs * math.ceil(num_samples / self.batch_size)))

    def temperature_at(self, step: int, total_steps: int) -> float:
        """The KD temperature of ``step``: the schedule, scaled by the batch-size rule when a reference is set."""
        temperature = scheduled_temperature(self.temperature_schedule, self.temperature, self.final_temperature,
                                            step, total_steps)
        if self.reference_batch_size is None:
            return temperature
        return batch_size_temperature(temperature, self.batch_size, self.reference_batch_size)


@dataclass(frozen=True)
class Rungs:
    """Checkpoints where a caller may stop training early (successive halving).

    At ``fractions[i]`` of the budget, ``should_stop(i, model)`` is asked (the model in eval mode
    is the caller's to score); ``True`` ends training there.
    """

    fractions: tuple[float, ...]
    should_stop: Callable[[int, nn.Module], bool]

    def steps(self, total: int) -> dict[int, int]:
        """Rung index of each checkpoint step (a checkpoint that rounds to the end of training is dropped)."""
        return {max(1, round(f * total)): index for index, f in enumerate(self.fractions) if round(f * total) < total}


@dataclass(frozen=True)
class TrainResult:
    steps: int
    seconds: float
    stopped_at_rung: int | None = None  # the rung where ``Rungs.should_stop`` ended training

    @property
    def step_ms(self) -> float:
        return 1e3 * self.seconds / self.steps


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
          criterion: KDCriterion | None = None, rungs: Rungs | None = None) -> TrainResult:
    """Train ``model`` on ``data.x_train`` with AdamW and a one-cycle schedule.

    The loss is ``criterion`` (by default the methods of ``config.kd`` reading the teacher logits that
    ``soft_targets`` gives; cross-entropy alone without soft targets). The criterion's own parameters
    (projections, exits, peers) are trained along with the model. ``rungs`` may end training early.
    """
    if criterion is None:
        criterion = build_criterion(model, data, config if soft_targets is not None
                                    else replace(config, kd="none", class_weighted=False))
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    total = config.total_steps(len(x))
    params = [p for p in model.parameters() if p.requires_grad]
    measured = len(params)
    params += [p for p in criterion.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total)
    checkpoints = rungs.steps(total) if rungs is not None else {}
    model.train()
    criterion.train()
    start, step, stopped_at = time.perf_counter(), 0, None
    with capture(model, criterion.student_paths) as features:
        while step < total and stopped_at is None:
            for batch in torch.randperm(len(x), generator=generator).split(config.batch_size):
                if step == total or stopped_at is not None:
                    break
                indices, inputs, targets = batch.numpy(), x[batch], y[batch]
                logits = model(inputs)
                teacher = None if soft_targets is None else soft_targets(indices, inputs)
                losses = criterion(KDStep(indices, inputs, targets, logits, dict(features), teacher,
                                          config.temperature_at(step, total)))
                loss = criterion.combine(losses, config.alpha)
                if not torch.isfinite(loss):
                    raise DistillError(f"The training loss became {loss.item()} at step {step + 1} of {total} "
                                       f"(learning rate {config.lr}; terms "
                                       f"{ {name: round(value.item(), 4) for name, value in losses.items()} }); "
                                       "try a lower one.")
                optimizer.zero_grad(set_to_none=True)
                if config.auto_alpha and criterion.methods:
                    balanced_backward(losses, criterion.weights, params, measured)
                else:
                    loss.backward()
                optimizer.step()
                schedule.step()
                criterion.after_step(model)
                step += 1
                if step in checkpoints:
                    if rungs.should_stop(checkpoints[step], model.eval()):  # type: ignore[union-attr]
                        stopped_at = checkpoints[step]
                    model.train()
    return TrainResult(steps=step, seconds=time.perf_counter() - start, stopped_at_rung=stopped_at)


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """The model's float32 logits on ``x``, in eval mode."""
    model.eval()
    return np.concatenate([model(torch.from_numpy(x[i:i + batch_size])).float().numpy()
                           for i in range(0, len(x), batch_size)])


def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, teacher_logits: np.ndarray | None = None,
             batch_size: int = 512) -> Evaluation:
    predictions = predict(model, x, batch_size).argmax(1)
    agreement = None if teacher_logits is None else float((predictions == teacher_logits.argmax(1)).mean())
    return Evaluation(accuracy=float((predictions == y).mean()), agreement=agreement)


def distill(student: nn.Module, data: Dataset, outputs: TeacherOutputs | Sequence[TeacherOutputs],
            config: TrainConfig, *, plan: FeaturePlan | None = None, rungs: Rungs | None = None) -> DistillResult:
    """A distillation run from cached teacher outputs, scored on the validation split.

    ``outputs``: one teacher's, or several (multi-teacher ``mkd``; the first is the primary teacher, which
    the other methods and the metrics use). ``plan`` pairs student and teacher features for the
    feature- and relation-based methods; the teacher's side must be in ``outputs[0].features``.
    ``rungs`` may stop the run early; the metrics are then those of the stopped student.
    """
    teachers = [outputs] if isinstance(outputs, TeacherOutputs) else list(outputs)
    criterion = build_criterion(student, data, config, teachers=teachers, plan=plan)
    result = train(student, data, CachedLogits(teachers[0].train), config, criterion=criterion, rungs=rungs)
    metrics = quality_metrics(predict(student, data.x_val), np.asarray(teachers[0].val), data.y_val, seed=config.seed)
    return DistillResult(metrics=metrics, steps=result.steps, seconds=result.seconds,
                         stopped_at_rung=result.stopped_at_rung)
