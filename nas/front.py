"""Which trials form a study's Pareto front: the outputs show it, and the search measures it again together."""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible, trained, non-dominated trials (one per architecture), fastest first."""
    front, seen = [], set()
    for trial in sorted(study.best_trials, key=lambda t: (t.values[1], t.number)):
        if trial.user_attrs.get("score") is None or trial.user_attrs.get("arch_hash") in seen:
            continue
        seen.add(trial.user_attrs.get("arch_hash"))
        front.append(trial)
    return front


__all__ = ["pareto_front"]
