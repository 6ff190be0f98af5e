"""Pareto-aware successive halving that respects noise: stop a distillation early only when the study already holds
students that are better by more than the measurement can tell apart.

Optuna's pruners compare one intermediate value, which a multi-objective study does not have
(``trial.report`` raises there). Here each trial reports its validation accuracy at the rungs, as
fractions of its distillation budget, next to its measured latency. A peer (an earlier trial at the same rung)
counts against the trial only when it dominates it *beyond the noise*:

- it is at least as fast, and
- the 95% interval of the accuracy difference (Newcombe's, from the two Wilson score intervals on the validation
  samples) lies above zero: it is more accurate by more than the validation set can resolve, and
- its own accuracy is distinguishable from chance (its Wilson interval lies above what a constant guess scores).

So a student is never stopped while it and its peers are indistinguishable from chance, nor on latency alone. The
trial stops when at least ``max(1, ceil(n / ETA))`` of its ``n`` peers count against it, once ``n >= MIN_PEERS``.
Every rung's decision, with what was compared and why, is kept in the trial (:data:`DECISIONS_ATTR`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

import numpy as np

ETA = 3
MIN_PEERS = 4
Z = 1.959964  # two-sided 95%
DEFAULT_RUNGS = "1/9,1/3"
RUNGS_ATTR = "rungs"  # trial user attribute: {"<rung index>": accuracy at that rung}
DECISIONS_ATTR = "rung_decisions"  # trial user attribute: {"<rung index>": RungDecision.to_dict()}

Point = tuple[float, float]  # (accuracy, latency_ms)


@dataclass(frozen=True)
class Validation:
    """What a rung's accuracy is measured on: ``samples`` validation samples, where the best constant guess (the
    most frequent class) scores ``chance``."""

    samples: int
    chance: float

    @classmethod
    def of(cls, labels: np.ndarray) -> Validation:
        """The validation of integer class ``labels``."""
        if len(labels) == 0:
            raise ValueError("A rung needs validation samples to score, but the validation split is empty.")
        return cls(len(labels), float(np.bincount(labels).max() / len(labels)))


@dataclass(frozen=True)
class RungDecision:
    """Why a trial was (not) stopped at a rung: its point, how many peers it met and how many it needed against it,
    the peers that dominate it beyond the noise (``dominating``) and those that do only within it (``within_noise``)."""

    accuracy: float
    latency_ms: float
    samples: int
    chance: float
    peers: int
    needed: int
    dominating: list[int]
    within_noise: list[int]
    stopped: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_rungs(text: str) -> tuple[float, ...]:
    """``"off"`` or comma-separated increasing fractions of the budget in (0, 1), e.g. ``"1/9,1/3"``."""
    if text.strip().lower() == "off":
        return ()
    try:
        rungs = tuple(float(Fraction(part.strip())) for part in text.split(","))
    except (ValueError, ZeroDivisionError):
        rungs = ()
    if not rungs or any(not 0 < r < 1 for r in rungs) or list(rungs) != sorted(set(rungs)):
        raise ValueError(f"--early-stop takes 'off' or increasing fractions of the budget in (0, 1) such as "
                         f"{DEFAULT_RUNGS!r} or 0.25,0.5, but got {text!r}.")
    return rungs


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """``a`` is at least as accurate and as fast as ``b`` (and as small, with a third objective: ``--objectives``),
    and strictly better in one."""
    costs_a, costs_b = (-a[0], *a[1:]), (-b[0], *b[1:])
    return all(x <= y for x, y in zip(costs_a, costs_b)) and costs_a != costs_b


def wilson_interval(accuracy: float, samples: int, z: float = Z) -> tuple[float, float]:
    """Wilson score interval of an accuracy measured on ``samples`` samples (sound at 0 and 1, unlike the normal one)."""
    if samples < 1 or not 0 <= accuracy <= 1:
        raise ValueError(f"`samples >= 1` and `0 <= accuracy <= 1` must hold, but got ({samples=}, {accuracy=}).")
    scale = 1 + z * z / samples
    centre = (accuracy + z * z / (2 * samples)) / scale
    half = z * math.sqrt(accuracy * (1 - accuracy) / samples + z * z / (4 * samples * samples)) / scale
    return max(0.0, centre - half), min(1.0, centre + half)


def difference_low(better: float, worse: float, samples: int, z: float = Z) -> float:
    """Lower end of the 95% interval of ``better − worse``, two accuracies on ``samples`` samples each (Newcombe's
    hybrid score interval; treating them as independent overstates the noise of a shared validation set: cautious)."""
    better_low, _ = wilson_interval(better, samples, z)
    _, worse_high = wilson_interval(worse, samples, z)
    return interval_difference_low(better, better_low, worse, worse_high)


def interval_difference_low(better: float, better_low: float, worse: float, worse_high: float) -> float:
    """Lower end of the 95% interval of ``better − worse`` from each one's own 95% interval: the lower end of
    ``better``'s and the upper end of ``worse``'s (Newcombe's hybrid: the two facing half-widths in quadrature)."""
    return better - worse - math.hypot(better - better_low, worse_high - worse)


def above_chance(accuracy: float, validation: Validation) -> bool:
    """Whether ``accuracy`` is distinguishable from chance: its Wilson interval lies above ``validation.chance``."""
    return wilson_interval(accuracy, validation.samples)[0] > validation.chance


def decide(point: Point, peers: Mapping[int, Point], validation: Validation) -> RungDecision:
    """Whether enough ``peers`` (trial number: its point at the same rung) dominate ``point`` beyond the noise."""
    accuracy, latency = point
    needed = max(1, math.ceil(len(peers) / ETA))
    nominal = sorted(number for number, peer in peers.items() if dominates(peer, point))
    beyond = [n for n in nominal if above_chance(peers[n][0], validation)
              and difference_low(peers[n][0], accuracy, validation.samples) > 0]
    stopped = len(peers) >= MIN_PEERS and len(beyond) >= needed
    if len(peers) < MIN_PEERS:
        reason = f"{len(peers)} peer(s) reached this rung; at least {MIN_PEERS} are needed to judge"
    elif not any(above_chance(peer[0], validation) for peer in peers.values()) and not above_chance(accuracy, validation):
        reason = (f"it and its {len(peers)} peers are indistinguishable from chance ({validation.chance:.3f} on "
                  f"{validation.samples} samples)")
    else:
        reason = (f"{len(beyond)} of {len(peers)} peers dominate it beyond the noise ({needed} needed to stop); "
                  f"{len(nominal) - len(beyond)} more only within the noise")
    return RungDecision(accuracy=accuracy, latency_ms=latency, samples=validation.samples, chance=validation.chance,
                        peers=len(peers), needed=needed, dominating=beyond,
                        within_noise=[n for n in nominal if n not in beyond], stopped=stopped, reason=reason)
