"""The Optuna loop: sample a student, measure its latency, distil it if it fits the budget."""

from __future__ import annotations

import logging
import math
import multiprocessing
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch.nn as nn
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

import distill
import hwprofile
from nas import cores, early_stop
from nas.budgets import LATENCY_CONSTRAINT, footprint_value, misses, overruns, set_constraints  # noqa: F401  (LATENCY_CONSTRAINT: re-exported)
from nas.config import ConfigError, SearchConfig, load_saved_config
from nas.drift import latency_record, objective_ms, remeasure_front, study_baseline
from nas.early_stop import DECISIONS_ATTR, RUNGS_ATTR, parse_rungs
from nas.precision import LATENCY_CALIBRATION_SAMPLES, export_at, quantized_metrics, sample_precision, trial_precisions
from nas.refine import refine_front
from nas.storage import (check_storage, create_storage, recover_dead_local_trials, shown_url, storage_exists,
                         worker_identity)
from nas.tasks import KD_CHOICES, Scored, Task, create_task, kd_choices
from search_spaces import Arch, SearchSpace, arch_hash, get_space

log = logging.getLogger(__name__)

DIRECTIONS = (StudyDirection.MAXIMIZE, StudyDirection.MINIMIZE)  # score (accuracy or cosine fidelity), latency (ms)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what --trials counts; failed trials are retried
SIBLING_ATTR = "sibling_of"  # --precision search: the trial whose distillation scored this one (``add_sibling``)


Callback = Callable[[optuna.Study, FrozenTrial | None], None]  # no trial: a progress report while workers run


class BudgetError(ValueError):
    """Budgets (latency, size, memory) that no student of the search space can meet."""


@dataclass
class SearchContext:
    """What every trial shares: the task (data, teacher outputs, students) and the measurement setup."""

    config: SearchConfig
    space: SearchSpace
    task: Task
    measure_config: hwprofile.MeasureConfig
    measurement_cache: hwprofile.MeasurementCache | None
    target: hwprofile.DeviceClient | None
    workdir: Path
    baseline: hwprofile.CanaryBaseline | None = None  # the study's drift canary baseline, once the study is open
    deadline: float | None = None  # time.time() when --timeout, counted from the command's start, ends the run

    def measure(self, onnx_path: Path) -> hwprofile.Measurement:
        """Latency and model statistics, on the target device (or here), through the measurement cache; with the
        drift canary beside it and normalised to the baseline once there is one (``nas.drift``); the baseline keeps
        the fastest canary this process has met."""
        measurement = hwprofile.profile(onnx_path, self.measure_config, cache=self.measurement_cache,
                                        target=self.target, baseline=self.baseline)
        if self.baseline is not None:
            self.baseline = self.baseline.after(measurement)
        return measurement


def random_archs(space: SearchSpace, count: int, seed: int) -> list[Arch]:
    """The first ``count`` architectures a seeded random sampler draws from ``space``: a search's first students."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.sample(study.ask()) for _ in range(count)]


def create_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Samplers read the latency constraint from ``trial.set_constraint``; ``seed`` is taken modulo 2**32 (NumPy's range)."""
    seed %= 2**32
    factories: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed, population_size=16),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed, n_startup_trials=8),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }
    return factories[name]()


def open_study(config: SearchConfig, *, create: bool, worker: int = 0) -> optuna.Study:
    """Load the study of ``config`` (creating it when ``create``), checking that it can be resumed.

    Without ``create``, a missing storage or study is a :class:`ConfigError` and nothing is created.
    Worker ``k`` of a parallel search seeds its sampler with ``seed + k`` so workers explore apart; a
    resumed study also adds the number of trials it holds, so that a resumed random sampler does not
    draw the same students again.
    """
    check_storage(config.storage, config.out)
    if create:
        Path(config.out).mkdir(parents=True, exist_ok=True)
    elif not storage_exists(config.storage):
        raise ConfigError(f"No study {config.study!r}: storage {shown_url(config.storage)} does not exist or is empty.")
    storage = create_storage(config.storage, config.heartbeat_s)
    seed = config.seed if config.sampler_seed is None else config.sampler_seed
    sampler = create_sampler(config.sampler, seed + worker)
    if not create:
        try:
            return optuna.load_study(storage=storage, study_name=config.study, sampler=sampler)
        except KeyError:
            raise ConfigError(f"No study {config.study!r} in {shown_url(config.storage)}.") from None
    study = optuna.create_study(storage=storage, study_name=config.study, directions=directions(config),
                                sampler=sampler, load_if_exists=True)
    if "config" in study.user_attrs:
        config.check_resumable(study.user_attrs["config"], shown_url(config.storage))
    else:
        study.set_user_attr("config", config.to_dict())
    if existing := len(study.get_trials(deepcopy=False)):
        study.sampler = create_sampler(config.sampler, seed + worker + 7919 * existing)
    return study


def directions(config: SearchConfig) -> list[StudyDirection]:
    """The score maximised, the latency minimised, and the footprint (size or memory) minimised when it is a third
    objective (``--objectives``)."""
    return [*DIRECTIONS, *([StudyDirection.MINIMIZE] if config.footprint else [])]


def check_study(config: SearchConfig) -> None:
    """The storage opens, and a study of ``config``'s name in it was created with the same settings; creates no study."""
    check_storage(config.storage, config.out)
    if not storage_exists(config.storage):
        return
    storage = create_storage(config.storage, config.heartbeat_s)
    try:
        study_id = storage.get_study_id_from_name(config.study)
    except KeyError:
        return
    if "config" in (attrs := storage.get_study_user_attrs(study_id)):
        config.check_resumable(attrs["config"], shown_url(config.storage))


def load_study(out: str | Path, *, storage: str | None = None, study: str | None = None) -> optuna.Study:
    """The study that the search in ``out`` wrote, opened from its saved config; never creates one.

    ``storage`` and ``study`` override the saved ones; no config, storage or study is a :class:`ConfigError`.
    """
    config = load_saved_config(out)
    config.storage, config.study = storage or config.storage, study or config.study
    return open_study(config, create=False)


def check_budget(context: SearchContext) -> hwprofile.LatencyStats:
    """Measure the space's smallest student at each precision a trial may have; fail at once if at none of them it
    meets every budget (latency, size, memory). Returns the latency of the first that meets them.

    The fp32 latency is no bound on the int8 one (int8 may be faster, or slower where quantize/dequantize overhead
    dominates tiny layers), so the int8 student is measured itself: an untrained copy, quantized, which has the
    trained one's latency (the QDQ graph does not depend on the weights; ``hwprofile.quantize``).
    """
    config, space, task = context.config, context.space, context.task
    where = f"device agent {config.target}" if config.target else "this machine"
    missed: list[str] = []
    for precision in trial_precisions(config):
        path = export_at(task, task.build_student(space.smallest()), context.workdir / f"smallest-{precision}.onnx",
                         precision, config.calibration, LATENCY_CALIBRATION_SAMPLES, int8_format=config.int8_format)
        if (config.memory_budget_bytes is not None or config.footprint == "memory") and context.target is None:
            hwprofile.measure_latency(path, context.measure_config)  # ONNX Runtime's one-time set-up is no model's memory
        measurement = context.measure(path)
        subject = f"the smallest student the {space.name!r} space allows" + (f" at {precision}" if precision != "fp32" else "")
        try:
            missed += (found := misses(config, measurement.latency.median_ms, measurement, subject))
            if config.footprint:
                footprint_value(config.footprint, measurement)
        except ValueError as error:
            raise BudgetError(str(error)) from None
        if not found:
            return measurement.latency
    raise BudgetError(f"{'; '.join(missed)} ({config.threads} thread(s), {where}).")


def sample_distillation(config: SearchConfig, trial: optuna.Trial) -> dict[str, Any]:
    """The trial's distillation settings: the configured ones, or with --search-kd the trial's choice."""
    if not config.search_kd:
        return {"kd": config.kd} if distill.is_text_source(config.data) else \
            {"kd": config.kd, "temperature": config.temperature, "alpha": config.alpha}
    return {"kd": trial.suggest_categorical("kd", kd_choices(config.augment)),
            "temperature": trial.suggest_float("kd_temperature", 1.0, 8.0, log=True),
            "alpha": trial.suggest_float("kd_alpha", 0.5, 1.0)}


@dataclass(frozen=True)
class Variant:
    """A trial's student at one precision, as measured before training (int8: an untrained copy, see check_budget)."""

    precision: str
    attrs: dict[str, Any]  # what its trial records: arch_hash, precision, latency, model, export and measure seconds
    latency_ms: float  # the latency objective, normalised to the canary baseline
    footprint: tuple[float, ...]  # the third objective, when there is one
    overruns: dict[str, float]  # by constraint name; over the budget when positive

    @property
    def over_budget(self) -> bool:
        return any(value > 0 for value in self.overruns.values())


def student_identity(config: SearchConfig, arch: Arch, distillation: dict[str, Any], precision: str) -> str:
    """What makes two trials the same student: the architecture, with --search-kd its distillation, and its precision
    (the int8 student of an architecture is another student than the fp32 one)."""
    identity = arch_hash({"arch": arch, **distillation}) if config.search_kd else arch_hash(arch)
    return identity if precision == "fp32" else arch_hash({"student": identity, "precision": precision})


def measure_variant(context: SearchContext, trial: optuna.Trial, student: nn.Module, precision: str,
                    identity: str) -> Variant:
    """Export ``student`` at ``precision``, measure it and hold it to the budgets; a
    :class:`hwprofile.QuantizationError` when ONNX Runtime cannot quantize it."""
    config = context.config
    start = time.perf_counter()
    onnx_path = export_at(context.task, student, context.workdir / f"trial-{trial.number}-{precision}.onnx", precision,
                          config.calibration, LATENCY_CALIBRATION_SAMPLES, int8_format=config.int8_format)
    exported = time.perf_counter()
    measurement = context.measure(onnx_path)
    onnx_path.unlink()
    latency = latency_record(measurement)
    latency_ms = objective_ms(latency)
    footprint = () if config.footprint is None else (footprint_value(config.footprint, measurement),)
    attrs = {"arch_hash": identity, "precision": precision, "latency": latency, "model": measurement.model.to_dict(),
             "export_s": exported - start, "measure_s": time.perf_counter() - exported}
    return Variant(precision, attrs, latency_ms, footprint, overruns(config, latency_ms, measurement))


def scored(context: SearchContext, trial: optuna.Trial, student: nn.Module, variant: Variant,
           result: Scored) -> tuple[float, dict[str, Any]]:
    """The trained ``student``'s score at the variant's precision and what the trial records of it: an int8 student
    by its quantized file (accuracy in ONNX Runtime on the validation split), beside the fp32 metrics."""
    if variant.precision == "fp32":
        return result.score, {"metrics": result.metrics, "score": result.score}
    config, scratch = context.config, context.workdir / f"trial-{trial.number}-int8.onnx"
    metrics, quantization = quantized_metrics(context.task, student, scratch, config.calibration, result.metrics,
                                              int8_format=config.int8_format)
    return metrics["accuracy"], {"metrics": metrics, "score": metrics["accuracy"], "metrics_fp32": result.metrics,
                                 "quantization": quantization}


def add_sibling(trial: optuna.Trial, attrs: dict[str, Any], *, values: tuple[float, ...] | None = None,
                constraints: dict[str, float] | None = None, state: TrialState = TrialState.COMPLETE) -> None:
    """Record the trial's student at another precision (``attrs["precision"]``) as a trial of its own, scored from the
    trial's distillation (--precision search): its parameters are the trial's, with its precision."""
    shared = {key: value for key, value in trial.user_attrs.items() if key not in (RUNGS_ATTR, DECISIONS_ATTR)}
    trial.study.add_trial(optuna.trial.create_trial(
        state=state, values=values, params={**trial.params, "precision": attrs["precision"]},
        distributions=trial.distributions, constraints=constraints,
        user_attrs={**shared, **attrs, SIBLING_ATTR: trial.number}))


def objective(context: SearchContext, trial: optuna.Trial) -> tuple[float, ...]:
    """One candidate: export and measure; over a budget, stop there; else distil (maybe stopped early) and score.
    Returns the score, the latency and, with a third objective, the footprint.

    With --precision search, one distillation scores the student at both precisions: the trial is the sampled one,
    and the student at the other precision, unless a trial holds it already, is recorded beside it as a trial of its
    own (its sibling; quantizing and measuring cost seconds, the distillation most of a trial). The student is
    distilled when either is within the budgets."""
    config, task = context.config, context.task
    trial.set_user_attr("worker", worker_identity())
    arch = context.space.sample(trial)
    distillation = sample_distillation(config, trial)
    precision = sample_precision(config, trial)
    identities = {p: student_identity(config, arch, distillation, p) for p in trial_precisions(config)}
    trial.set_user_attr("arch", arch)
    trial.set_user_attr("distillation", distillation)
    _set_attrs(trial, {"arch_hash": identities[precision], "precision": precision})
    if (earlier := _earlier_result(trial.study, identities[precision])) is not None:
        return _reuse(trial, earlier)

    student = task.build_student(arch)
    try:
        own = measure_variant(context, trial, student, precision, identities[precision])
    except hwprofile.QuantizationError as error:
        raise _failed(trial, error)
    _set_attrs(trial, own.attrs)
    set_constraints(trial, own.overruns)
    siblings = []
    for other in [p for p in identities if p != precision]:
        if _earlier_result(trial.study, identities[other]) is None:
            try:
                siblings.append(measure_variant(context, trial, student, other, identities[other]))
            except hwprofile.QuantizationError as error:
                _add_failed_sibling(trial, {"arch_hash": identities[other], "precision": other}, error)
    within = [variant for variant in (own, *siblings) if not variant.over_budget]
    if not within and not config.train_over_budget:
        trial.set_user_attr("status", "over_budget")
        for sibling in siblings:
            add_sibling(trial, {**sibling.attrs, "status": "over_budget"},
                        values=(0.0, sibling.latency_ms, *sibling.footprint), constraints=sibling.overruns)
        return 0.0, own.latency_ms, *own.footprint  # infeasible: the constraints keep it off the front

    trial.set_user_attr("train_device", distill.describe_device(task.placement.device))  # may differ per trial
    trial.set_user_attr("train_threads", cores.training_threads(config.train_threads))  # the host's share, now
    rung_latency_ms = min(variant.latency_ms for variant in within or [own])  # the student's best within the budgets
    try:
        result = task.distil(student, distillation, rungs=_rungs(context, trial, rung_latency_ms))
    except distill.DistillError as error:
        raise _failed(trial, error)
    trained = {"steps": result.metrics["steps"], "distill_s": result.metrics["seconds"]}
    if result.stopped_at_rung is not None:
        _set_attrs(trial, {**trained, "metrics": result.metrics, "score": result.score, "status": "stopped_early"})
        for sibling in siblings:
            add_sibling(trial, {**sibling.attrs, **trained, "status": "stopped_early"}, constraints=sibling.overruns,
                        state=TrialState.PRUNED)
        raise optuna.TrialPruned(f"dominated at rung {result.stopped_at_rung}")
    for sibling in siblings:
        try:
            score, outcome = scored(context, trial, student, sibling, result)
        except hwprofile.QuantizationError as error:
            _add_failed_sibling(trial, sibling.attrs, error)
            continue
        status = "trained_over_budget" if sibling.over_budget else "trained"
        add_sibling(trial, {**sibling.attrs, **trained, **outcome, "status": status},
                    values=(score, sibling.latency_ms, *sibling.footprint), constraints=sibling.overruns)
    try:
        score, outcome = scored(context, trial, student, own, result)
    except hwprofile.QuantizationError as error:
        raise _failed(trial, error)
    # trained over a budget (for its sibling's sake, or --train-over-budget): the constraints keep it off the front
    _set_attrs(trial, {**trained, **outcome, "status": "trained_over_budget" if own.over_budget else "trained"})
    return score, own.latency_ms, *own.footprint


def _set_attrs(trial: optuna.Trial, attrs: dict[str, Any]) -> None:
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def _add_failed_sibling(trial: optuna.Trial, attrs: dict[str, Any], error: Exception) -> None:
    """ONNX Runtime could not quantize the trial's student: its int8 sibling is recorded as failed, with the reason."""
    add_sibling(trial, {**attrs, "status": "failed", "failure": str(error)}, state=TrialState.FAIL)


def _failed(trial: optuna.Trial, error: Exception) -> Exception:
    """Record why the trial failed (the study goes on); returns ``error`` to raise."""
    trial.set_user_attr("status", "failed")
    trial.set_user_attr("failure", str(error))
    return error


def _rungs(context: SearchContext, trial: optuna.Trial, latency_ms: float) -> distill.Rungs | None:
    """Successive-halving checkpoints: record the accuracy at each rung and the decision taken there; stop when
    enough peers dominate it beyond the noise (``nas.early_stop.decide``)."""
    fractions = parse_rungs(context.config.early_stop)
    if not fractions or not context.task.early_stopping:
        return None
    validation = context.task.rung_validation()
    reached: dict[str, float] = {}
    decisions: dict[str, dict[str, Any]] = {}

    def should_stop(rung: int, student: nn.Module) -> bool:
        score = context.task.rung_score(student)
        decision = early_stop.decide((score, latency_ms), _rung_peers(trial, rung), validation)
        reached[str(rung)], decisions[str(rung)] = score, decision.to_dict()
        trial.set_user_attr(RUNGS_ATTR, reached)
        trial.set_user_attr(DECISIONS_ATTR, decisions)
        return decision.stopped

    return distill.Rungs(fractions, should_stop)


def _rung_peers(trial: optuna.Trial, rung: int) -> dict[int, tuple[float, float]]:
    """Trial number: (accuracy, latency) at ``rung`` of every other trial that reached it (reused results not twice)."""
    peers = {}
    for other in trial.study.get_trials(deepcopy=False):
        accuracy = other.user_attrs.get(RUNGS_ATTR, {}).get(str(rung))
        if other.number != trial.number and accuracy is not None and "reused_from" not in other.user_attrs:
            peers[other.number] = (accuracy, objective_ms(other.user_attrs["latency"]))
    return peers


def _earlier_result(study: optuna.Study, identity: str) -> FrozenTrial | None:
    for earlier in study.get_trials(deepcopy=False, states=FINISHED):
        if earlier.user_attrs.get("arch_hash") == identity:
            return earlier
    return None


def _reuse(trial: optuna.Trial, earlier: FrozenTrial) -> tuple[float, ...]:
    """The same architecture was scored before: record its result instead of distilling it again."""
    for key, value in earlier.user_attrs.items():
        if key not in trial.user_attrs and key != SIBLING_ATTR:  # a reused sibling is no sibling of that trial
            trial.set_user_attr(key, value)
    trial.set_user_attr("reused_from", earlier.number)
    for key, value in earlier.constraints.items():
        trial.set_constraint(key, value)
    if earlier.state == TrialState.PRUNED:
        raise optuna.TrialPruned(f"as trial {earlier.number}, which was stopped early")
    return tuple(earlier.values)


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_trials(study: optuna.Study, context: SearchContext, callbacks: Sequence[Callback] = ()) -> None:
    """Run trials until the study holds ``config.trials`` finished ones (or the context's deadline passes).

    At most as many trials are attempted as were missing, so failures cannot loop forever.
    """
    config = context.config
    recover_dead_local_trials(study)
    remaining = config.trials - finished_count(study)
    timeout = None if context.deadline is None else context.deadline - time.time()
    if remaining <= 0 or (timeout is not None and timeout <= 0):
        return
    study.optimize(
        lambda trial: objective(context, trial), n_trials=remaining, timeout=timeout,
        catch=(distill.DistillError, hwprofile.QuantizationError),
        callbacks=[trial_limit(config.trials), *callbacks],
    )


def trial_limit(trials: int) -> optuna.study.MaxTrialsCallback:
    """Stops a worker once the study's finished trials and the trials other workers are running reach ``trials``.

    Counting only finished trials, each extra worker would start one trial too many near the end.
    """
    return optuna.study.MaxTrialsCallback(trials, states=(*FINISHED, TrialState.RUNNING))


def load_context(config: SearchConfig, workdir: Path, deadline: float | None = None) -> SearchContext:
    """The space, the data and the measurement setup; the teacher comes later (``context.task.load_teacher()``).
    The run's ``deadline`` is ``--timeout`` seconds from now unless given."""
    if deadline is None and config.timeout is not None:
        deadline = time.time() + config.timeout
    target = None
    if config.target:
        target = hwprofile.DeviceClient(config.target, hwprofile.read_token(config.token_file))
    cache = hwprofile.MeasurementCache(Path(config.cache_dir) / "measurements.sqlite") if config.measure_cache else None
    space = get_space(config.space)
    return SearchContext(config=config, space=space, task=create_task(config, space),
                         measure_config=hwprofile.MeasureConfig(threads=config.threads),
                         measurement_cache=cache, target=target, workdir=workdir, deadline=deadline)


def prepare(config: SearchConfig, workdir: Path) -> SearchContext:
    """Every cheap check, before anything is created, trained or measured: the output folders, the storage and a
    study already in it, the space, the data, a teacher file (the built-in teacher is trained later)."""
    for flag, folder in (("--out", config.out), ("--cache-dir", config.cache_dir)):
        if Path(folder).exists() and not Path(folder).is_dir():
            raise ConfigError(f"{flag} {folder!r} is a file; it must be a folder (or not exist yet).")
    check_study(config)
    context = load_context(config, workdir)
    context.task.check_teacher()
    return context


def validate(config: SearchConfig) -> None:
    """The checks a search makes before any long work (:func:`prepare`), alone: no study is created, nothing trained
    or measured."""
    with tempfile.TemporaryDirectory(prefix="nas-") as workdir:
        prepare(config, Path(workdir))


def search(config: SearchConfig, callbacks: Sequence[Callback] = ()) -> optuna.Study:
    """Open or resume the study of ``config`` and run its remaining trials, in ``config.workers`` processes.

    Cheap checks come first (:func:`prepare`), then the budget; the study is created only once the teacher is
    trained or loaded, so that no failed input leaves a study behind.
    """
    with tempfile.TemporaryDirectory(prefix="nas-") as workdir, cores.membership():
        context = prepare(config, Path(workdir))
        smallest = check_budget(context)
        teacher_score = context.task.load_teacher(context.deadline)
        study = open_study(config, create=True)
        context.baseline = study_baseline(study, context.measure_config, context.target)
        log.info("Smallest %s student: %.4f ms median", context.space.name, smallest.median_ms)
        study.set_user_attr("metric", context.task.metric)
        if not math.isnan(teacher_score):
            study.set_user_attr("teacher_score", teacher_score)
            log.info("Teacher validation %s: %.4f", context.task.metric, teacher_score)
        config.save()
        if config.workers == 1:
            run_trials(study, context, callbacks)
        else:
            run_workers(config, study, callbacks, context.deadline)
        if config.refine:  # before the outputs are written: the front's students distilled again, longer
            refine_front(study, context, config.refine)
        remeasure_front(study, context)  # before the outputs are written: the front's latencies measured together
    return study


def run_workers(config: SearchConfig, study: optuna.Study, callbacks: Sequence[Callback],
                deadline: float | None = None) -> None:
    """Start ``config.workers`` processes on the study (no more than trials are missing), which end at ``deadline``,
    and report progress until they end."""
    recover_dead_local_trials(study)
    cores.leave()  # this process only reports progress now: the workers share the cores
    context = multiprocessing.get_context("spawn")
    # no more workers than missing trials: each worker starts a trial at once
    count = min(config.workers, max(0, config.trials - finished_count(study)))
    workers = [context.Process(target=_worker_main, args=(config.to_dict(), index, deadline), daemon=True)
               for index in range(count)]
    for worker in workers:
        worker.start()
    try:
        while any(worker.is_alive() for worker in workers):
            for worker in workers:
                worker.join(timeout=1.0 / len(workers))
            for callback in callbacks:
                callback(study, None)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
        recover_dead_local_trials(study)
    failed = [w.exitcode for w in workers if w.exitcode]
    if failed:
        log.warning("%d worker(s) ended with an error (exit codes %s); finished trials are kept.", len(failed), failed)


def _worker_main(config_values: dict[str, Any], index: int, deadline: float | None = None) -> None:
    """One worker process: its own sampler seed; each trial takes this host's share of the cores (nas.cores)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = SearchConfig(**config_values)
    with tempfile.TemporaryDirectory(prefix="nas-") as workdir, cores.membership():
        context = load_context(config, Path(workdir), deadline)
        study = open_study(config, create=True, worker=index)
        context.baseline = study_baseline(study, context.measure_config, context.target)
        context.task.load_teacher()
        run_trials(study, context)


def quality_record(metrics: dict[str, Any]) -> dict[str, Any]:
    """The quality columns of a trial's record, from a distillation's metrics."""
    return {
        "accuracy": metrics.get("accuracy"),
        "accuracy_ci95": [metrics["accuracy_low"], metrics["accuracy_high"]] if "accuracy_low" in metrics else None,
        "retention": metrics.get("retention"),
        "agreement": metrics.get("agreement"),
        "cosine": metrics.get("cosine"),
        "neighbour_agreement": metrics.get("neighbour_agreement"),
        "kl_to_teacher": metrics.get("kl_to_teacher"),
        "ece": metrics.get("ece"),
    }


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    """The flat view of a trial that reports and files show."""
    attrs = trial.user_attrs
    latency, model, metrics = attrs.get("latency", {}), attrs.get("model", {}), attrs.get("metrics", {})
    distillation = attrs.get("distillation", {})
    return {
        "trial": trial.number,
        "state": trial.state.name,
        "status": attrs.get("status", "running" if trial.state == TrialState.RUNNING else "failed"),
        "feasible": all(v <= 0 for v in trial.constraints.values()),
        "score": attrs.get("score"),
        **quality_record(metrics),
        "precision": attrs.get("precision", "fp32"),
        "accuracy_fp32": attrs.get("quantization", {}).get("accuracy_fp32"),
        "kd": distillation.get("kd"),
        "temperature": distillation.get("temperature"),
        "alpha": distillation.get("alpha"),
        "rung_accuracy": attrs.get(RUNGS_ATTR),
        "stopped_at_rung": metrics.get("stopped_at_rung"),
        "latency_ms": objective_ms(latency) if latency else None,  # the objective: normalised to the canary baseline
        "latency_raw_ms": latency.get("median_ms"),
        "latency_drift": latency.get("latency_drift"),
        "latency_p90_ms": latency.get("p90_ms"),
        "latency_cv": latency.get("cv"),
        "latency_stable": latency.get("stable"),
        "latency_cached": latency.get("cached"),
        "params": model.get("params"),
        "macs": model.get("macs"),
        "size_bytes": model.get("size_bytes"),
        "peak_memory_bytes": latency.get("peak_memory_bytes"),
        "export_s": attrs.get("export_s"),
        "measure_s": attrs.get("measure_s"),
        "distill_s": attrs.get("distill_s"),
        "reused_from": attrs.get("reused_from"),
        "sibling_of": attrs.get(SIBLING_ATTR),
        "failure": attrs.get("failure"),
        "arch_hash": attrs.get("arch_hash"),
        "arch": attrs.get("arch"),
    }
