"""Checkpoints of a training run (:func:`distill.loop.fit`): its whole state saved every epoch and at a deadline, and
restored by the next run, which goes on from the step where the last one stopped.

The state is the modules' weights, the optimiser's and the schedule's state, the step and torch's RNG; the seeded
batch order (and any view drawn from the step) follows from the step, so a resumed run continues the same run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from distill.arrays import write_atomically

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpointing:
    """Save the run's state to ``path`` every ``every`` steps (an epoch) and once ``deadline`` (a ``time.time()``
    value) has passed, which also stops the run; ``on_epoch(step, total)`` runs at every ``every``-th step and at
    the last (e.g. to show the validation accuracy)."""

    path: Path
    every: int
    deadline: float | None = None
    on_epoch: Callable[[int, int], None] | None = None

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"`every >= 1` must hold, but got {self.every=}.")

    def restore(self, modules: Sequence[nn.Module], optimizer: torch.optim.Optimizer, schedule: Any,
                total: int) -> int:
        """Load the saved state into ``modules``, ``optimizer`` and ``schedule``; returns the step to go on from
        (0 when nothing was saved, or it was saved by a run of another length)."""
        if not self.path.is_file():
            return 0
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        if state["total"] != total or len(state["modules"]) != len(modules):
            log.warning("Ignoring checkpoint %s: it was saved by a run of %d steps, this one has %d.", self.path,
                        state["total"], total)
            return 0
        for module, weights in zip(modules, state["modules"]):
            module.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"])
        log.info("Resuming from checkpoint %s at step %d of %d", self.path, state["step"], total)
        return int(state["step"])

    def save(self, step: int, total: int, modules: Sequence[nn.Module], optimizer: torch.optim.Optimizer,
             schedule: Any) -> None:
        """Write the state after ``step`` of ``total`` steps (atomically: a reader never sees half a file)."""
        state = {"step": step, "total": total, "modules": [module.state_dict() for module in modules],
                 "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "rng": torch.get_rng_state()}
        write_atomically(self.path, lambda tmp: torch.save(state, tmp))

    def after_step(self, step: int, total: int, modules: Sequence[nn.Module], optimizer: torch.optim.Optimizer,
                   schedule: Any) -> bool:
        """Save at every ``every``-th step and when the deadline has passed (not after the last step: the caller
        keeps the finished model); True: the deadline has passed, stop."""
        expired = self.deadline is not None and time.time() >= self.deadline and step < total
        if step < total and (step % self.every == 0 or expired):
            self.save(step, total, modules, optimizer, schedule)
        if self.on_epoch is not None and (step % self.every == 0 or step == total):
            self.on_epoch(step, total)
        return expired

    def discard(self) -> None:
        """Delete the saved state (the run is finished and kept elsewhere)."""
        self.path.unlink(missing_ok=True)
