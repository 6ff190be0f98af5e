"""Latency that holds across time in a search.

The device may change speed between two trials' measurements, so the search measures the drift canary
(``hwprofile.canary``) once at its start (the baseline, kept in the study: a resumed search and every worker
normalise to the same moment) and beside every student. Each trial keeps its raw median and the normalised one,
raw x baseline / canary now, which is its latency objective. Before the outputs are written, the front's students
and the latency budget's nearest neighbours on either side are rebuilt, exported and measured again together,
round-robin, with the canary each time; the fastest normalised round is kept in the study (``latency_front``) and
trials whose order changes are logged.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.trial import FrozenTrial, TrialState

import hwprofile
from nas.config import ConfigError, SearchConfig
from nas.front import pareto_front
from nas.precision import LATENCY_CALIBRATION_SAMPLES, export_at
from nas.tasks import Task

log = logging.getLogger(__name__)

BASELINE_ATTR = "canary_baseline"  # study user attribute: the CanaryBaseline's dict
FRONT_ATTR = "latency_front"  # study user attribute: the front measured together (see remeasure_front)
FRONT_ROUNDS = 3
FRONT_PROTOCOL = {"min_seconds": 0.1, "repeats_if_unstable": 0}  # one measurement of a round: short


class Measuring(Protocol):
    """What measuring the front again needs of a search (``nas.search.SearchContext`` has it)."""

    config: SearchConfig
    task: Task
    measure_config: hwprofile.MeasureConfig
    target: hwprofile.DeviceClient | None
    baseline: hwprofile.CanaryBaseline | None
    workdir: Path


def study_baseline(study: optuna.Study, config: hwprofile.MeasureConfig,
                   target: hwprofile.DeviceClient | None) -> hwprofile.CanaryBaseline:
    """The study's canary baseline: measured (with ``config``'s setup, here or on ``target``) when the search first
    starts and kept in the study, so that a resumed search normalises to the same moment."""
    if (stored := study.user_attrs.get(BASELINE_ATTR)) is None:
        baseline = hwprofile.measure_baseline(config, target=target)
        study.set_user_attr(BASELINE_ATTR, baseline.to_dict())
        log.info("Canary baseline: %.4f ms median", baseline.canary_ms)
        return baseline
    baseline = hwprofile.CanaryBaseline.from_dict(stored)
    if baseline.model_sha256 != hwprofile.canary_sha256():
        raise ConfigError(f"Study {study.study_name!r} normalises latency to drift canary {baseline.model_sha256[:12]}, "
                          f"but this nas-kd builds canary {hwprofile.canary_sha256()[:12]}: resume it with the nas-kd "
                          f"version that started it.")
    return baseline


def latency_record(measurement: hwprofile.Measurement) -> dict[str, Any]:
    """A trial's ``latency`` user attribute: the raw statistics, whether cached and where measured, and, measured
    beside the canary, its drift figures (``normalised_ms``, ``latency_drift``, ...) and the reading (``canary``)."""
    record = {**measurement.latency.to_dict(), "cached": measurement.cached, "target": measurement.target}
    if measurement.drift is not None and measurement.canary is not None:
        record.update(measurement.drift.to_dict(), canary=measurement.canary.to_dict())
    return record


def objective_ms(latency: dict[str, Any]) -> float:
    """A trial's latency objective from its ``latency`` record: the normalised median, else (measured without the
    canary) the raw one."""
    return float(latency.get("normalised_ms", latency["median_ms"]))


def remeasure_front(study: optuna.Study, context: Measuring, rounds: int = FRONT_ROUNDS) -> dict[str, Any] | None:
    """Measure the front's students and the budget's nearest neighbours again, together: rebuilt from their arch
    (seeded: weights do not change latency), exported at the trial's precision, and measured round-robin ``rounds`` times with a short
    protocol, the canary beside each. Stores and returns the record (``FRONT_ATTR``); logs trials whose order
    changes and those that cross the budget. Nothing to do without a baseline or a front, or when the same trials
    were measured together already (a finished search run again)."""
    chosen = _chosen(study, context.config.latency_budget_ms)
    if context.baseline is None or not chosen:
        return None
    stored = study.user_attrs.get(FRONT_ATTR)
    if stored is not None and set(stored["trials"]) == {str(trial.number) for trial, _ in chosen}:
        return stored
    paths = [export_at(context.task, context.task.build_student(trial.user_attrs["arch"]),
                       context.workdir / f"front-{trial.number}.onnx", trial.user_attrs.get("precision", "fp32"),
                       context.config.calibration, LATENCY_CALIBRATION_SAMPLES,
                       int8_format=context.config.int8_format) for trial, _ in chosen]
    config = dataclasses.replace(context.measure_config, **FRONT_PROTOCOL)
    try:
        rounds_of = hwprofile.measure_together(paths, config, context.baseline, rounds=rounds, target=context.target)
    finally:
        for path in paths:
            path.unlink(missing_ok=True)
    record = _front_record(chosen, rounds_of, context.baseline)
    study.set_user_attr(FRONT_ATTR, record)
    _log_changes(record, context.config.latency_budget_ms)
    return record


def _front_record(chosen: list[tuple[FrozenTrial, str]], measurements: list[list[hwprofile.Measurement]],
                 baseline: hwprofile.CanaryBaseline) -> dict[str, Any]:
    """What the study keeps of a measurement together: per trial its role, its objective from its own trial, and
    per round the raw and normalised medians and the canary, the fastest normalised round and the raw rounds'
    median; the order by latency before and after, and the trials whose place changed."""
    trials = {}
    for (trial, role), rounds in zip(chosen, measurements):
        normalised = [m.drift.normalised_ms for m in rounds if m.drift is not None]
        trials[str(trial.number)] = {
            "role": role, "latency_ms": trial.values[1], "fastest_ms": hwprofile.fastest_normalised(rounds),
            "raw_median_ms": statistics.median(m.latency.median_ms for m in rounds), "normalised_ms": normalised,
            "raw_ms": [m.latency.median_ms for m in rounds],
            "canary_ms": [m.canary.canary_ms for m in rounds if m.canary is not None]}
    before = sorted(trials, key=lambda n: (trials[n]["latency_ms"], int(n)))
    after = sorted(trials, key=lambda n: (trials[n]["fastest_ms"], int(n)))
    return {"rounds": len(measurements[0]), "canary_baseline_ms": baseline.canary_ms, "trials": trials,
            "order_before": [int(n) for n in before], "order_after": [int(n) for n in after],
            "reordered": [int(n) for n in before if before.index(n) != after.index(n)]}


def _chosen(study: optuna.Study, budget_ms: float | None) -> list[tuple[FrozenTrial, str]]:
    """The front (role ``front``) and, with a budget, the slowest trial within it and the fastest over it that are
    not on the front already (``below_budget``, ``above_budget``), one per architecture."""
    front = pareto_front(study)
    chosen = [(trial, "front") for trial in front]
    if budget_ms is None or not front:
        return chosen
    seen = {trial.user_attrs.get("arch_hash") for trial in front}
    measured = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.values is not None and "reused_from" not in t.user_attrs]
    within = [t for t in measured if t.values[1] <= budget_ms]
    over = [t for t in measured if t.values[1] > budget_ms]
    neighbours = [("below_budget", max(within, key=lambda t: (t.values[1], -t.number), default=None)),
                  ("above_budget", min(over, key=lambda t: (t.values[1], t.number), default=None))]
    for role, trial in neighbours:
        if trial is not None and trial.user_attrs.get("arch_hash") not in seen:
            chosen.append((trial, role))
            seen.add(trial.user_attrs.get("arch_hash"))
    return chosen


def _log_changes(record: dict[str, Any], budget_ms: float | None) -> None:
    trials, before, after = record["trials"], record["order_before"], record["order_after"]
    for number in record["reordered"]:
        entry = trials[str(number)]
        log.info("Measured together (%d rounds), trial %d moves from place %d to %d by latency: %.4f ms in its "
                 "trial, %.4f ms together.", record["rounds"], number, before.index(number) + 1,
                 after.index(number) + 1, entry["latency_ms"], entry["fastest_ms"])
    if budget_ms is None:
        return
    for number, entry in trials.items():
        if (entry["latency_ms"] <= budget_ms) != (entry["fastest_ms"] <= budget_ms):
            log.warning("Trial %s measured %.4f ms in its trial and %.4f ms together with the front: the other side "
                        "of the %.4g ms budget.", number, entry["latency_ms"], entry["fastest_ms"], budget_ms)


def drift_summary(measurement: hwprofile.Measurement, baseline: hwprofile.CanaryBaseline) -> list[str]:
    """``nas profile``'s lines on the canary: the normalised median beside the raw one, and a warning on drift."""
    drift = measurement.drift
    if drift is None:
        return []
    taken = time.strftime("%Y-%m-%d %H:%M", time.localtime(baseline.measured_at))
    ratio = drift.normalised_ms / drift.canary_baseline_ms
    lines = [f"Normalised: median = {drift.normalised_ms:.4f} ms ({ratio:.4f} x the canary, measured interleaved, x "
             f"canary baseline {drift.canary_baseline_ms:.4f} ms; raw median {measurement.latency.median_ms:.4f} ms, "
             f"canary now {drift.canary_ms:.4f} ms; the canary "
             f"is {drift.drift:+.1%} from the baseline of this device and setup, taken {taken})"]
    if drift.latency_drift:
        lines.append(f"[W] DRIFT: the canary stayed more than {baseline.threshold:.0%} off its baseline after {drift.remeasured} re-measurement(s): the device is not as "
                     f"fast as it was; compare normalised medians.")
    return lines


__all__ = ["BASELINE_ATTR", "FRONT_ATTR", "FRONT_ROUNDS", "drift_summary", "latency_record", "objective_ms",
           "remeasure_front", "study_baseline"]
