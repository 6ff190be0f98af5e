"""Which trials form a study's Pareto front: the outputs show it, and the search measures it again together.

A student whose distillation was refined (``nas.refine``: distilled again, longer) counts with its refined score;
the refinement is a study user attribute per architecture, ``refined:<arch_hash>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas.early_stop import dominates

REFINED_PREFIX = "refined:"  # study user attribute ``refined:<arch_hash>``: the refinement record of that student


def refinements(study: optuna.Study) -> dict[str, dict[str, Any]]:
    """The study's refinement records by architecture (``arch_hash``)."""
    return {key.removeprefix(REFINED_PREFIX): value for key, value in study.user_attrs.items()
            if key.startswith(REFINED_PREFIX)}


def front_score(trial: FrozenTrial, refined: Mapping[str, dict[str, Any]]) -> float:
    """The score a trial counts with on the front: its refined one when it was refined, else its trial's."""
    record = refined.get(trial.user_attrs.get("arch_hash", ""))
    return float(record["score"]) if record is not None else trial.values[0]


def pareto_front(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible, trained, non-dominated trials (in every objective: a third one too), one per architecture, fastest
    first; refined students count with their refined score (:func:`front_score`)."""
    refined = refinements(study)
    trained = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
               if t.user_attrs.get("score") is not None and all(v <= 0 for v in t.constraints.values())]
    points = {t.number: (front_score(t, refined), *t.values[1:]) for t in trained}  # with a third objective, 3-D
    front, seen = [], set()
    for trial in sorted(trained, key=lambda t: (t.values[1], t.number)):
        if trial.user_attrs.get("arch_hash") in seen or any(dominates(points[other.number], points[trial.number])
                                                            for other in trained):
            continue
        seen.add(trial.user_attrs.get("arch_hash"))
        front.append(trial)
    return front


__all__ = ["REFINED_PREFIX", "front_score", "pareto_front", "refinements"]
