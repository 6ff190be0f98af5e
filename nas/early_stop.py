"""Pareto-aware successive halving: stop a distillation early when the study already holds better students.

Optuna's pruners compare one intermediate value, which a multi-objective study does not have
(``trial.report`` raises there). Here each trial reports its validation accuracy at the rungs, as
fractions of its distillation budget, next to its measured latency. At a rung, the trial stops when
at least ``max(1, ceil(n / ETA))`` of the ``n`` earlier trials that reached that rung dominate it
there: at least as accurate *and* at least as fast, better in one of the two. Nothing stops before
:data:`MIN_PEERS` trials have reached the rung. With ``ETA = 3`` a trial goes on while fewer than a
third of its peers beat it on both counts, so fast students are rarely stopped (few are faster) and a
slow one must earn its latency with accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

ETA = 3
MIN_PEERS = 4
DEFAULT_RUNGS = "1/9,1/3"
RUNGS_ATTR = "rungs"  # trial user attribute: {"<rung index>": accuracy at that rung}

Point = tuple[float, float]  # (accuracy, latency_ms)


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


def dominates(a: Point, b: Point) -> bool:
    """``a`` is at least as accurate and as fast as ``b``, and strictly better in one."""
    return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])


def should_stop(point: Point, peers: Sequence[Point]) -> bool:
    """Whether enough ``peers`` (earlier trials at the same rung) dominate ``point``."""
    if len(peers) < MIN_PEERS:
        return False
    return sum(dominates(peer, point) for peer in peers) >= max(1, math.ceil(len(peers) / ETA))
