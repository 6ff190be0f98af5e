"""Front refinement: before the outputs are written, the front's students are distilled again, longer, and the front
is recomputed from the refined scores.

A short distillation ranks students only roughly (``bench/proxy_fidelity.py``), and the front is where a wrong rank
costs most. So the most accurate student of the front that was not refined yet is distilled again from its start
with :data:`REFINE_FACTOR` times its trial's steps and the trial's distillation settings; its record (the refined
score and metrics, the short score, steps, seconds) is stored in the study at once, as the user attribute
``refined:<arch_hash>`` (``nas.front``), so a search killed during refinement, or run again, never redoes one. The
front is recomputed with the refined scores after each (a refined student may fall off it, and another, unrefined,
come on), until ``limit`` students of the front are refined, or all of them, or ``limit`` were refined in this run;
none starts after ``--timeout``. An int8 trial's refinement is scored by its quantized file, as the trial was.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial

from nas.config import SearchConfig
from nas.front import REFINED_PREFIX, front_score, pareto_front, refinements
from nas.precision import quantized_metrics
from nas.tasks import Task

log = logging.getLogger(__name__)

REFINE_FACTOR = 3  # a refinement's steps: this many times its trial's


class Refining(Protocol):
    """What refining the front needs of a search (``nas.search.SearchContext`` has it)."""

    config: SearchConfig
    task: Task
    workdir: Path
    deadline: float | None  # time.time() after which no refinement starts (--timeout)


def refine_front(study: optuna.Study, context: Refining, limit: int) -> list[int]:
    """Refine the front's students, most accurate first, until ``limit`` of the front are refined, or all of them,
    or ``limit`` were refined in this call, or the context's deadline passed; returns the trial numbers refined now."""
    done: list[int] = []
    while len(done) < limit:
        if context.deadline is not None and time.time() >= context.deadline:
            log.info("--timeout reached: the front's refinement goes on when the search is run again.")
            break
        refined = refinements(study)
        front = pareto_front(study)
        todo = [t for t in front if t.user_attrs["arch_hash"] not in refined]
        if not todo or len(front) - len(todo) >= limit:
            break
        trial = max(todo, key=lambda t: (front_score(t, refined), -t.values[1], -t.number))
        record = refine(trial, context)
        study.set_user_attr(REFINED_PREFIX + trial.user_attrs["arch_hash"], record)
        log.info("Refined trial %d with %d steps (%.1f s): %s %.4f -> %.4f", trial.number, record["steps"],
                 record["seconds"], context.task.metric, record["score_short"], record["score"])
        done.append(trial.number)
    return done


def refine(trial: FrozenTrial, context: Refining) -> dict[str, Any]:
    """Distil ``trial``'s student again from its start, :data:`REFINE_FACTOR` times its steps, with its settings, and
    score it as its trial was: an int8 trial by its quantized file."""
    task, steps = context.task, REFINE_FACTOR * int(trial.user_attrs["steps"])
    student = task.build_student(trial.user_attrs["arch"])
    result = task.distil(student, trial.user_attrs.get("distillation", {}), steps=steps)
    score, metrics = result.score, result.metrics
    if trial.user_attrs.get("precision") == "int8":
        metrics, _ = quantized_metrics(task, student, context.workdir / f"refine-{trial.number}-int8.onnx",
                                       context.config.calibration, result.metrics,
                                       int8_format=context.config.int8_format)
        score = metrics["accuracy"]
    return {"trial": trial.number, "score": score, "score_short": trial.values[0], "steps": steps,
            "factor": REFINE_FACTOR, "seconds": result.metrics["seconds"], "metrics": metrics}


__all__ = ["REFINE_FACTOR", "refine", "refine_front"]
