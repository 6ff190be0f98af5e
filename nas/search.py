"""The Optuna loop: sample a student, measure its latency, distil it if it fits the budget."""

from __future__ import annotations

import logging
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

import distill
import hwprofile
from nas.config import SearchConfig
from nas.storage import create_storage, recover_dead_local_trials, worker_identity
from search_spaces import SearchSpace, arch_hash, get_space

log = logging.getLogger(__name__)

DIRECTIONS = ("maximize", "minimize")  # accuracy, latency (ms)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what --trials counts; failed trials are retried
LATENCY_CONSTRAINT = "latency_over_budget_ms"


Callback = Callable[[optuna.Study, FrozenTrial], None]


class BudgetError(ValueError):
    """A latency budget that no student of the search space can meet."""


@dataclass
class SearchContext:
    """What every trial shares; the teacher itself is not here, only its cached outputs."""

    config: SearchConfig
    space: SearchSpace
    data: distill.Dataset
    outputs: distill.TeacherOutputs
    measure: hwprofile.MeasureConfig
    train: distill.TrainConfig
    workdir: Path


def create_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """Samplers read the latency constraint from ``trial.set_constraint``."""
    factories: dict[str, Callable[[], optuna.samplers.BaseSampler]] = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed, population_size=16),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed, n_startup_trials=8),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }
    return factories[name]()


def open_study(config: SearchConfig, *, create: bool, worker: int = 0) -> optuna.Study:
    """Load the study of ``config`` (creating it when ``create``), checking that it can be resumed.

    Worker ``k`` of a parallel search seeds its sampler with ``seed + k`` so workers explore apart.
    """
    if create:
        Path(config.out).mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
    storage = create_storage(config.storage, config.heartbeat_s)  # type: ignore[arg-type]
    sampler = create_sampler(config.sampler, config.seed + worker)
    if not create:
        return optuna.load_study(storage=storage, study_name=config.study, sampler=sampler)
    study = optuna.create_study(storage=storage, study_name=config.study, directions=list(DIRECTIONS),
                                sampler=sampler, load_if_exists=True)
    if "config" in study.user_attrs:
        config.check_resumable(study.user_attrs["config"])
    else:
        study.set_user_attr("config", config.to_dict())
    return study


def check_budget(config: SearchConfig, space: SearchSpace, data: distill.Dataset, workdir: Path,
                 measure: hwprofile.MeasureConfig) -> hwprofile.LatencyStats:
    """Measure the space's smallest student; fail at once if even it is over the budget."""
    student = space.build(space.smallest(), data.input_shape, data.num_classes)
    latency = hwprofile.measure_latency(hwprofile.export_onnx(student, data.input_shape, workdir / "smallest.onnx"), measure)
    if config.latency_budget_ms is not None and latency.median_ms > config.latency_budget_ms:
        raise BudgetError(
            f"--latency-budget {config.latency_budget_ms} ms is below the latency of the smallest student the "
            f"{space.name!r} space allows: {latency.median_ms:.4f} ms median ({config.threads} thread(s), this machine)."
        )
    return latency


def objective(context: SearchContext, trial: optuna.Trial) -> tuple[float, float]:
    """One candidate: export and measure; over the budget, stop there; else distil and score."""
    config, data = context.config, context.data
    trial.set_user_attr("worker", worker_identity())
    arch = context.space.sample(trial)
    identity = arch_hash(arch)
    trial.set_user_attr("arch", arch)
    trial.set_user_attr("arch_hash", identity)
    if (earlier := _earlier_result(trial.study, identity)) is not None:
        return _reuse(trial, earlier)

    student = context.space.build(arch, data.input_shape, data.num_classes)
    start = time.perf_counter()
    onnx_path = hwprofile.export_onnx(student, data.input_shape, context.workdir / f"trial-{trial.number}.onnx")
    exported = time.perf_counter()
    latency = hwprofile.measure_latency(onnx_path, context.measure)
    measured = time.perf_counter()
    stats = hwprofile.model_stats(onnx_path)
    onnx_path.unlink()
    trial.set_user_attr("latency", latency.to_dict())
    trial.set_user_attr("model", stats.to_dict())
    trial.set_user_attr("export_s", exported - start)
    trial.set_user_attr("measure_s", measured - exported)
    if config.latency_budget_ms is not None:
        over = latency.median_ms - config.latency_budget_ms
        trial.set_constraint(LATENCY_CONSTRAINT, over)
        if over > 0:
            trial.set_user_attr("status", "over_budget")
            return 0.0, latency.median_ms  # infeasible: the constraint keeps it off the front

    try:
        result = distill.distill(student, data, context.outputs, context.train)
    except distill.DistillError as error:
        trial.set_user_attr("status", "failed")
        trial.set_user_attr("failure", str(error))
        raise
    trial.set_user_attr("status", "trained")
    trial.set_user_attr("accuracy", result.accuracy)
    trial.set_user_attr("agreement", result.agreement)
    trial.set_user_attr("steps", result.steps)
    trial.set_user_attr("distill_s", result.seconds)
    return result.accuracy, latency.median_ms


def _earlier_result(study: optuna.Study, identity: str) -> FrozenTrial | None:
    for earlier in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if earlier.user_attrs.get("arch_hash") == identity:
            return earlier
    return None


def _reuse(trial: optuna.Trial, earlier: FrozenTrial) -> tuple[float, float]:
    """The same architecture was scored before: record its result instead of distilling it again."""
    for key, value in earlier.user_attrs.items():
        if key not in trial.user_attrs:
            trial.set_user_attr(key, value)
    trial.set_user_attr("reused_from", earlier.number)
    for key, value in earlier.constraints.items():
        trial.set_constraint(key, value)
    accuracy, latency = earlier.values
    return accuracy, latency


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def run_trials(study: optuna.Study, context: SearchContext, callbacks: Sequence[Callback] = ()) -> None:
    """Run trials until the study holds ``config.trials`` finished ones (or the timeout passes).

    At most as many trials are attempted as were missing, so failures cannot loop forever.
    """
    config = context.config
    recover_dead_local_trials(study)
    remaining = config.trials - finished_count(study)
    if remaining <= 0:
        return
    study.optimize(
        lambda trial: objective(context, trial), n_trials=remaining, timeout=config.timeout,
        catch=(distill.DistillError,),
        callbacks=[optuna.study.MaxTrialsCallback(config.trials, states=FINISHED), *callbacks],
    )


def load_context(config: SearchConfig, workdir: Path, *, check: bool, worker: int = 0) -> tuple[SearchContext, optuna.Study]:
    """Check the inputs (cheap checks first), open the study, then load the teacher's outputs.

    The teacher is trained or loaded only after the data, the budget and the study have been checked.
    """
    space = get_space(config.space)
    data = distill.load_dataset(config.data, val_fraction=config.val_fraction, seed=config.seed)
    train = distill.TrainConfig(epochs=config.epochs, steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                                temperature=config.temperature, alpha=config.alpha, seed=config.seed)
    measure = hwprofile.MeasureConfig(threads=config.threads)
    smallest = check_budget(config, space, data, workdir, measure) if check else None
    study = open_study(config, create=True, worker=worker)
    cache_dir = Path(config.cache_dir)
    teacher = distill.load_teacher(config.teacher, data, cache_dir, epochs=config.teacher_epochs, seed=config.seed)
    outputs = distill.teacher_outputs(teacher, data, cache_dir)
    if smallest is not None:  # logged once every input has passed its checks, so an input error stays one line
        log.info("Smallest %s student: %.4f ms median", space.name, smallest.median_ms)
    return SearchContext(config, space, data, outputs, measure, train, workdir), study


def search(config: SearchConfig, callbacks: Sequence[Callback] = ()) -> optuna.Study:
    """Open or resume the study of ``config`` and run its remaining trials, in ``config.workers`` processes."""
    with tempfile.TemporaryDirectory(prefix="nas-") as workdir:
        context, study = load_context(config, Path(workdir), check=True)
        teacher_accuracy = context.outputs.accuracy(context.data)
        study.set_user_attr("teacher_accuracy", teacher_accuracy)
        log.info("Teacher validation accuracy: %.4f", teacher_accuracy)
        config.save()
        if config.workers == 1:
            run_trials(study, context, callbacks)
        else:
            run_workers(config, study, callbacks)
    return study


def run_workers(config: SearchConfig, study: optuna.Study, callbacks: Sequence[Callback]) -> None:
    """Start ``config.workers`` processes on the study and report progress until they end."""
    recover_dead_local_trials(study)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker_main, args=(config.to_dict(), index), daemon=True)
               for index in range(config.workers)]
    for worker in workers:
        worker.start()
    try:
        while any(worker.is_alive() for worker in workers):
            for worker in workers:
                worker.join(timeout=1.0 / len(workers))
            for callback in callbacks:
                callback(study, None)  # type: ignore[arg-type]
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
        recover_dead_local_trials(study)
    failed = [w.exitcode for w in workers if w.exitcode]
    if failed:
        log.warning("%d worker(s) ended with an error (exit codes %s); finished trials are kept.", len(failed), failed)


def _worker_main(config_values: dict[str, Any], index: int) -> None:
    """One worker process: its share of the cores for training, its own sampler seed."""
    import torch

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // config_values["workers"]))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = SearchConfig(**config_values)
    with tempfile.TemporaryDirectory(prefix="nas-") as workdir:
        context, study = load_context(config, Path(workdir), check=False, worker=index)
        run_trials(study, context)


def trial_record(trial: FrozenTrial) -> dict[str, Any]:
    """The flat view of a trial that reports and files show."""
    attrs = trial.user_attrs
    latency = attrs.get("latency", {})
    model = attrs.get("model", {})
    return {
        "trial": trial.number,
        "state": trial.state.name,
        "status": attrs.get("status", "running" if trial.state == TrialState.RUNNING else "failed"),
        "feasible": all(v <= 0 for v in trial.constraints.values()),
        "score": attrs.get("accuracy"),
        "accuracy": attrs.get("accuracy"),
        "agreement": attrs.get("agreement"),
        "latency_ms": latency.get("median_ms"),
        "latency_p90_ms": latency.get("p90_ms"),
        "latency_cv": latency.get("cv"),
        "latency_stable": latency.get("stable"),
        "params": model.get("params"),
        "macs": model.get("macs"),
        "size_bytes": model.get("size_bytes"),
        "export_s": attrs.get("export_s"),
        "measure_s": attrs.get("measure_s"),
        "distill_s": attrs.get("distill_s"),
        "reused_from": attrs.get("reused_from"),
        "failure": attrs.get("failure"),
        "arch_hash": attrs.get("arch_hash"),
        "arch": attrs.get("arch"),
    }
