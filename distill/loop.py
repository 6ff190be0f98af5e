"""The one training loop of image and text distillation: seeded batches, AdamW with a one-cycle schedule, rungs.

The caller says what a batch's loss is (:data:`BatchLosses`) and, optionally, how a batch of row indices is read
(a ``loader``, e.g. a torch DataLoader); the loop owns the budget, the seeded batch order (:class:`SeededBatches`),
the optimiser, the non-finite-loss check and the rungs where a caller may stop training early.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from distill.checkpoint import Checkpointing
from distill.device import Placement
from distill.errors import DistillError

BatchLosses = Callable[[Any, int, int], tuple[Tensor, Mapping[str, Tensor]]]
"""``(batch, step, total_steps) -> (loss, terms)``: the loss of a batch and its named terms; the batch is the
training rows' indices, or what the ``loader`` of :func:`fit` reads for them."""
Loader = Callable[[Iterable[np.ndarray]], Iterable[Any]]
"""``(batches of row indices) -> batches``: reads the rows of each index batch, in the order given."""
Backward = Callable[[Tensor, Mapping[str, Tensor], Sequence[Tensor]], None]
"""``(loss, terms, params)``: accumulates the gradients into ``.grad`` instead of ``loss.backward()``."""
CUDA_CHECK_EVERY = 32  # steps between NaN checks of the loss on CUDA: each one waits for the device
BAR_EVERY = 20  # steps between updates of a progress bar's epoch and loss


@dataclass(frozen=True)
class LoopConfig:
    """The budget and the optimiser of a run; ``TrainConfig`` (images) and ``TextDistillConfig`` extend it."""

    epochs: float = 10.0
    steps: int | None = None  # when set, overrides ``epochs``
    max_steps: int | None = None  # caps an ``epochs`` budget, so that it does not grow with the data set
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    seed: int = 0
    warmup: float = 0.3  # the fraction of the steps over which the one-cycle learning rate rises to ``lr``
    rung_ema: float = 0.0  # decay of the moving average of the weights that rungs score; 0: the weights themselves

    def __post_init__(self) -> None:
        if any(value is not None and value < 1 for value in (self.steps, self.max_steps)) or self.epochs <= 0 \
                or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"The budget must be positive (and the learning rate), but got ({self.epochs=}, "
                             f"{self.steps=}, {self.max_steps=}, {self.batch_size=}, {self.lr=}).")
        if not 0 < self.warmup < 1 or not 0 <= self.rung_ema < 1:
            raise ValueError(f"`0 < warmup < 1` and `0 <= rung_ema < 1` must hold, but got ({self.warmup=}, "
                             f"{self.rung_ema=}).")

    def total_steps(self, num_samples: int) -> int:
        """``steps``, or ``epochs`` passes over ``num_samples`` rows in batches (at least one step, at most
        ``max_steps``)."""
        if self.steps:
            return self.steps
        steps = max(1, math.ceil(self.epochs * math.ceil(num_samples / self.batch_size)))
        return min(steps, self.max_steps or steps)


@dataclass(frozen=True)
class SeededBatches:
    """``total`` batches of ``batch_size`` row indices of ``num_samples`` rows: epoch after epoch of a permutation
    drawn from a generator seeded with ``seed`` (the last batch of an epoch may be smaller). A batch sampler;
    ``start``: the first ``start`` batches are skipped (a resumed run)."""

    num_samples: int
    batch_size: int
    total: int
    seed: int
    start: int = 0

    def __len__(self) -> int:
        return self.total - self.start

    def __iter__(self) -> Iterator[np.ndarray]:
        generator = torch.Generator().manual_seed(self.seed)
        step = 0
        while step < self.total:
            for batch in torch.randperm(self.num_samples, generator=generator).split(self.batch_size):
                if step == self.total:
                    return
                if step >= self.start:
                    yield batch.numpy()
                step += 1


@dataclass(frozen=True)
class Rungs:
    """Checkpoints where a caller may stop training early (successive halving).

    At ``fractions[i]`` of the budget, ``should_stop(i, model)`` is asked (the model in eval mode, or its
    :class:`MovingAverage` under ``LoopConfig.rung_ema``, is the caller's to score); ``True`` ends training there.
    """

    fractions: tuple[float, ...]
    should_stop: Callable[[int, nn.Module], bool]

    def steps(self, total: int) -> dict[int, int]:
        """Rung index of each checkpoint step (a checkpoint that rounds to the end of training is dropped)."""
        return {max(1, round(f * total)): index for index, f in enumerate(self.fractions) if round(f * total) < total}


class MovingAverage:
    """A copy of a model whose floating-point weights and buffers follow the model's as an exponential moving average
    (``decay`` per step; integer buffers are copied), so that a rung may score what a run has learnt rather than the
    weights of one step at a high learning rate (on Fashion-MNIST it ranked students no better: BENCHMARKS.md)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model, self.decay = copy.deepcopy(model), decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for mine, theirs in zip(self.model.state_dict().values(), model.state_dict().values()):
            if mine.is_floating_point():
                mine.lerp_(theirs, 1 - self.decay)
            else:
                mine.copy_(theirs)


@dataclass(frozen=True)
class TrainResult:
    steps: int
    seconds: float
    stopped_at_rung: int | None = None  # the rung where ``Rungs.should_stop`` ended training
    final_losses: dict[str, float] = field(default_factory=dict)  # each term's value at the last step
    stopped_at_deadline: bool = False  # the checkpointing's deadline stopped training (its state is saved)

    @property
    def step_ms(self) -> float:
        return 1e3 * self.seconds / self.steps


def fit(model: nn.Module, config: LoopConfig, num_samples: int, batch_losses: BatchLosses, *,
        loader: Loader | None = None, criterion: nn.Module | None = None, backward: Backward | None = None,
        after_step: Callable[[], None] | None = None, rungs: Rungs | None = None,
        progress: Callable[[int, int, Tensor], None] | None = None, placement: Placement = Placement(),
        checkpoint: Checkpointing | None = None) -> TrainResult:
    """Train ``model`` and ``criterion`` (its own parameters: projections, exits, peers) on seeded batches of
    ``num_samples`` training rows (:class:`SeededBatches`), with AdamW and a one-cycle learning-rate schedule (rising
    over ``config.warmup`` of the steps). Rungs score the model, or its :class:`MovingAverage` (``config.rung_ema``).

    ``loader`` reads each batch of row indices (e.g. a DataLoader with them as its batch sampler); without
    one, ``batch_losses`` gets the indices. ``backward(loss, terms, params)`` replaces ``loss.backward()``;
    ``params`` are the model's trainable parameters, then the criterion's. ``after_step()`` runs after every
    optimiser step, ``progress(step, total, loss)`` after every step; ``rungs`` may end training early.
    ``checkpoint`` resumes the run from its saved state, saves it every epoch and stops it at its deadline.

    ``placement``: the model and the criterion move to its device (and stay there) and ``batch_losses`` runs
    under its autocast; ``batch_losses`` puts its batch there (:meth:`~distill.device.Placement.put`).
    ``placement.before_step()`` runs before every step. On CUDA the loss is checked for NaN every
    :data:`CUDA_CHECK_EVERY` steps (a check waits for the device), on the CPU at every step.
    """
    torch.manual_seed(config.seed)
    total = config.total_steps(num_samples)
    modules = [placement.prepare(module) for module in ([model] if criterion is None else [model, criterion])]
    params = [p for module in modules for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=placement.cuda or None)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total,
                                                   pct_start=config.warmup)
    first = 0 if checkpoint is None else checkpoint.restore(modules, optimizer, schedule, total)
    batches = SeededBatches(num_samples, config.batch_size, total, config.seed, start=first)
    checkpoints = rungs.steps(total) if rungs is not None else {}
    # what the rungs score: the weights, or their moving average (from the step this run starts at)
    average = MovingAverage(model, config.rung_ema) if checkpoints and config.rung_ema else None
    check_every = CUDA_CHECK_EVERY if placement.cuda else 1
    for module in modules:
        module.train()
    start, step, stopped_at, stopped_at_deadline, terms = time.perf_counter(), first, None, False, {}
    unchecked: list[tuple[int, Tensor, dict[str, Tensor]]] = []  # (step, loss, terms) not yet checked for NaN
    for batch in batches if loader is None else loader(batches):
        if placement.before_step is not None:
            placement.before_step()
        with placement.autocast():
            loss, terms = batch_losses(batch, step, total)
        unchecked.append((step, loss.detach(), {name: value.detach() for name, value in terms.items()}))
        if len(unchecked) >= check_every:
            _check_finite(unchecked, total, config.lr)
        optimizer.zero_grad(set_to_none=True)
        if backward is None:
            loss.backward()
        else:
            backward(loss, terms, params)
        optimizer.step()
        schedule.step()
        if after_step is not None:
            after_step()
        if average is not None:
            average.update(model)
        step += 1
        if progress is not None:
            progress(step, total, loss.detach())
        if checkpoint is not None and checkpoint.after_step(step, total, modules, optimizer, schedule):
            stopped_at_deadline = True
            break
        if rungs is not None and step in checkpoints:
            _check_finite(unchecked, total, config.lr)
            stop = rungs.should_stop(checkpoints[step], model.eval() if average is None else average.model.eval())
            model.train()
            if stop:
                stopped_at = checkpoints[step]
                break
    _check_finite(unchecked, total, config.lr)
    final_losses = {name: float(value.item()) for name, value in terms.items()}  # waits for the device
    return TrainResult(steps=step, seconds=time.perf_counter() - start, stopped_at_rung=stopped_at,
                       final_losses=final_losses, stopped_at_deadline=stopped_at_deadline)


def _check_finite(unchecked: list[tuple[int, Tensor, dict[str, Tensor]]], total: int, lr: float) -> None:
    """Raise at the first of the ``unchecked`` (step, loss, terms) whose loss is not finite; then forget them all."""
    if unchecked and not bool(torch.isfinite(torch.stack([loss for _, loss, _ in unchecked])).all()):
        step, loss, terms = next(entry for entry in unchecked if not torch.isfinite(entry[1]))
        raise DistillError(f"The training loss became {loss.item()} at step {step + 1} of {total} (learning "
                           f"rate {lr}; terms { {n: round(v.item(), 4) for n, v in terms.items()} }); try a lower one.")
    unchecked.clear()


class TrainingBar:
    """A progress bar on stderr (shown on a terminal) for :func:`fit`'s ``progress(step, total, loss)``: the steps,
    the epoch, the mean training loss of the epoch so far and the ``shown`` fields; a resumed run starts it where it
    stopped. Use it as a context manager (it closes the bar)."""

    def __init__(self, description: str, total: int, per_epoch: int) -> None:
        from tqdm import tqdm

        self.per_epoch, self.epochs = per_epoch, math.ceil(total / per_epoch)
        self.shown: dict[str, str] = {}
        self._losses: list[Tensor] = []  # this epoch's, so far
        self._bar = tqdm(total=total, desc=description, unit="step", file=sys.stderr, dynamic_ncols=True,
                         disable=None)

    def __call__(self, step: int, total: int, loss: Tensor) -> None:
        if self._bar.n == 0 and step > 1:  # resumed
            self._bar.update(step - 1)
        if (step - 1) % self.per_epoch == 0:  # an epoch's first step
            self._losses.clear()
        self._losses.append(loss)
        self._bar.update(1)
        if step % BAR_EVERY == 0 or step == total:
            self._bar.set_postfix(epoch=f"{min(step // self.per_epoch + 1, self.epochs)}/{self.epochs}",
                                  loss=f"{self.epoch_loss():.4f}", **self.shown)

    def epoch_loss(self) -> float:
        """The mean training loss of the current epoch so far (NaN before its first step)."""
        return float(torch.stack(self._losses).mean()) if self._losses else math.nan

    def __enter__(self) -> TrainingBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.close()
