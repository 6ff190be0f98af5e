"""The distillation loop: Hinton KD against soft targets, or plain cross-entropy without them."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from distill.cache import TeacherOutputs
from distill.data import Dataset
from distill.errors import DistillError
from distill.functional import hinton_loss


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
    temperature: float = 4.0
    alpha: float = 0.9  # weight of the soft (KD) term; 1 - alpha weighs cross-entropy

    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0 or self.temperature <= 0:
            raise ValueError(f"`0 <= alpha <= 1` and `temperature > 0` must hold, but got "
                             f"({self.alpha=}, {self.temperature=}).")
        if (self.steps is not None and self.steps < 1) or self.epochs <= 0 or self.batch_size < 1:
            raise ValueError(f"The budget must be positive, but got ({self.epochs=}, {self.steps=}, {self.batch_size=}).")

    def total_steps(self, num_samples: int) -> int:
        return self.steps or max(1, math.ceil(self.epochs * math.ceil(num_samples / self.batch_size)))


@dataclass(frozen=True)
class TrainResult:
    steps: int
    seconds: float

    @property
    def step_ms(self) -> float:
        return 1e3 * self.seconds / self.steps


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    agreement: float | None  # top-1 agreement with the teacher, when its logits are given


@dataclass(frozen=True)
class DistillResult:
    accuracy: float
    agreement: float
    steps: int
    seconds: float


def train(model: nn.Module, data: Dataset, soft_targets: SoftTargets | None, config: TrainConfig) -> TrainResult:
    """Train ``model`` on ``data.x_train`` with AdamW and a one-cycle schedule; KD when targets are given."""
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    total = config.total_steps(len(x))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total)
    model.train()
    start, step = time.perf_counter(), 0
    while step < total:
        for batch in torch.randperm(len(x), generator=generator).split(config.batch_size):
            if step == total:
                break
            inputs, targets = x[batch], y[batch]
            logits = model(inputs)
            if soft_targets is None:
                loss = F.cross_entropy(logits, targets)
            else:
                teacher = soft_targets(batch.numpy(), inputs)
                loss = hinton_loss(logits, teacher, targets, config.temperature, config.alpha)
            if not torch.isfinite(loss):
                raise DistillError(f"The training loss became {loss.item()} at step {step + 1} of {total} "
                                   f"(learning rate {config.lr}); try a lower one.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
    return TrainResult(steps=total, seconds=time.perf_counter() - start)


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, teacher_logits: np.ndarray | None = None,
             batch_size: int = 512) -> Evaluation:
    model.eval()
    predictions = np.concatenate([model(torch.from_numpy(x[i:i + batch_size])).argmax(1).numpy()
                                  for i in range(0, len(x), batch_size)])
    agreement = None if teacher_logits is None else float((predictions == teacher_logits.argmax(1)).mean())
    return Evaluation(accuracy=float((predictions == y).mean()), agreement=agreement)


def distill(student: nn.Module, data: Dataset, outputs: TeacherOutputs, config: TrainConfig) -> DistillResult:
    """A distillation run from cached teacher outputs, scored on the validation split."""
    result = train(student, data, CachedLogits(outputs.train), config)
    evaluation = evaluate(student, data.x_val, data.y_val, np.asarray(outputs.val))
    return DistillResult(accuracy=evaluation.accuracy, agreement=evaluation.agreement,  # type: ignore[arg-type]
                         steps=result.steps, seconds=result.seconds)
