"""Does a search's short distillation rank students like a long one? Kendall τ and Spearman ρ against the long-trained
ONNX file's test accuracy, on Fashion-MNIST.

Run from the repository root::

    python bench/proxy_fidelity.py --quick                       # smoke run on the CPU: 5 students, 1 seed, small budgets
    python bench/proxy_fidelity.py --device cuda --seeds 0       # one seed on one GPU: about 12 minutes of an H100
    python bench/proxy_fidelity.py --students-file S.json ...    # students chosen (latencies measured) here, trained elsewhere
    python bench/proxy_fidelity.py --device cpu --seeds 0 --progress  # the students finished so far; trains nothing
    python bench/proxy_fidelity.py --device cpu --seeds 0 --rung-ema 0.95   # another short-run schedule, same students

The students chosen are kept in ``--students-file`` (default: next to ``--output``, ``*-students.json``; the committed
``bench/results/proxy_fidelity-students.json`` holds 16 timed on this project's CPU), and each student's results are
appended to ``--done FILE`` (``*-done.jsonl``) as each of its three distillations ends: a rerun with the same settings
runs only the distillations not done, so a run cut short (a GPU call's time limit, the end of a CPU session) goes on
where it stopped; ``--cache-dir`` keeps the seeds' teachers for it too.

Data: a stratified subset of Fashion-MNIST's training files (10,000 images: 8,000 train / 2,000 validation,
``--train-images``) and of its t10k files as the held-out test split (5,000, ``--test-images``), from
``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``) or ``--fashion DIR``. Teacher: the
built-in CNN (30 epochs), one per seed. Students: ``--students`` (16) of a pool of random ``mbconv`` architectures
(``nas.random_archs``), chosen evenly over the pool's measured latency range (ONNX Runtime, this CPU, 1 thread).

Every student is distilled three times, through the search's own pieces (``nas.tasks.ImageTask``: the same data
split, teacher outputs, initial weights, settings and device as a search's trial):

- **short**: the per-trial budget of ``nas search`` (10 epochs), its validation accuracy (the search's score) and, at
  every rung of :data:`RUNGS` (the default early-stopping rungs 1/9 and 1/3 among them), the validation accuracy,
  KL divergence to the teacher and top-1 agreement, without stopping;
  ``--warmup``, ``--rung-ema``, ``--short-steps`` and ``--batch-seed`` change the short run's schedule (its warm-up;
  the moving average of the weights its rungs score), its budget or its batch order: a short run of its own, compared
  with the same refined and long runs (written to e.g. ``proxy_fidelity-warmup0.05.json``), so that it is judged
  without training the long runs again;
- **refined**: ``--refine``'s budget, ``nas.refine.REFINE_FACTOR`` times the trial's steps; its validation accuracy;
- **long**: ``nas export``'s budget (60 epochs), exported to ONNX and scored in ONNX Runtime on the test split.

Reported per seed and as mean ± std over seeds: Kendall τ-b and Spearman ρ of the long test accuracy with the short
score, the refined score, each rung's accuracy, agreement and (negated) KL, and the zero-cost baselines MACs,
parameters and latency. Also, replayed on these students in their sampled order with their rung accuracies, the early
stopping rule before issue 12 (stop when ⌈n/3⌉ of n ≥ 4 peers dominate at a rung) and the noise-aware one
(``nas.early_stop.decide``): how many students each stops, how many of them are on the long-trained front (accuracy vs
latency) and on its clear part (those that beat every faster student by more than the test set resolves), and the
distillation steps saved; the same in :data:`REPLAY_ORDERS` random orders, and for the noise-aware rule with each
margin of :data:`MARGINS` (what a rule that asks a larger or smaller lead would stop and save) and at the rungs of
:data:`OTHER_RUNG_POSITIONS` too, and for a rule whose margin is learned from the students finished so far
(:func:`projection_rules`). Printed and written to ``bench/results/proxy_fidelity.json``
(``proxy_fidelity-quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import multiprocessing
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch.nn as nn
from scipy import stats

import distill
import hwprofile
import nas
from nas import early_stop
from nas.pareto import hypervolume, non_dominated
from nas.refine import REFINE_FACTOR
from nas.tasks import ImageTask
from search_spaces import arch_hash, get_space
from _results import (RESULTS, evenly_spaced, header, load_average, load_before, publish,  # bench/ is on sys.path
                      write_json)

FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_IMAGES = (10_000, 5_000)  # a stratified subset of its training files (train + validation), TEST
RUNGS = ("1/27", "1/9", "2/9", "1/3", "1/2", "2/3", "5/6")  # fractions of the short budget where a student is scored
SEARCH_RUNGS = early_stop.parse_rungs(early_stop.DEFAULT_RUNGS)
SEARCH_RUNG_KEYS = tuple(next(r for r in RUNGS if float(Fraction(r)) == f) for f in SEARCH_RUNGS)  # "1/9", "1/3"
SPACE = "mbconv"
REPLAY_ORDERS = 200  # random orders of the students the early-stopping rules are also replayed in
MARGINS = (-0.05, -0.02, 0.0, 0.02, 0.05, 0.1)  # leads beyond the noise the noise-aware rule is also replayed with
# rung positions of the short run's record the noise-aware rule is also replayed at
OTHER_RUNG_POSITIONS = (("1/3",), ("2/9", "1/2"), ("1/9", "1/2"), ("1/2",))
PROJECTION_QUANTILES = (1.0, 0.75)  # of the finished students' gains after a rung, for the projecting rule
GPU_WORKERS = 8  # processes sharing one GPU: on an H100 8 gave 5.6x one's steps/s, 16 no more (gpu_check concurrency)


@dataclass(frozen=True)
class Settings:
    seeds: tuple[int, ...]
    students: int
    pool: int  # random architectures the students are chosen from
    train_images: int  # training subset (train + validation)
    test_images: int
    epochs: float  # the short (per-trial) budget
    long_epochs: float
    teacher_epochs: int
    device: str
    workers: int
    train_threads: int  # torch threads of each worker
    quick: bool
    warmup: float  # the short run's schedule: its warm-up fraction and the moving average its rungs score
    rung_ema: float
    short_steps: int | None  # the short run's budget; None: the search's
    batch_seed: int | None  # the seed of the short run's batch order (and its other draws); None: the seed's


PARTS = ("short", "refined", "long")  # a student's three distillations, each a job of its own
SCHEDULE = ("warmup", "rung_ema")  # the loop's settings a short run may change (--warmup, --rung-ema)


@dataclass(frozen=True)
class RungView:
    """What an early-stopping rule sees when a student reaches a rung: its point (rung accuracy, latency), the earlier
    students' points at that rung (those that reached it) and, of the earlier students that finished, their (rung
    accuracy, short score, latency)."""
    point: early_stop.Point
    peers: dict[int, early_stop.Point]
    finished: list[tuple[float, float, float]]


Rule = Callable[[RungView], bool]  # stop the student here?


@dataclass(frozen=True)
class Job:
    seed: int
    index: int  # the student's place in the sampled order
    arch: dict[str, Any]
    part: str  # one of PARTS
    data: str
    test_data: str
    cache_dir: str


def read_idx(path: Path) -> np.ndarray:
    """The array of a gzipped IDX file (MNIST's format: magic, dimensions, then uint8 data)."""
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def subset(directory: Path, prefix: str, count: int, seed: int, out: Path) -> str:
    """A stratified random ``count`` images of the ``prefix`` files (``train`` or ``t10k``) as an ``npz:`` source."""
    x, y = read_idx(directory / f"{prefix}-images-idx3-ubyte.gz"), read_idx(directory / f"{prefix}-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    rows = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:count // len(classes)] for c in classes])
    np.savez(out, x=x[np.sort(rows)], y=y[np.sort(rows)].astype(np.int64))
    return f"npz:{out}"


def done_key(settings: Settings) -> dict[str, Any]:
    """The settings a student's results depend on: a rerun reuses the results of the same ones only."""
    return {"train_images": settings.train_images, "test_images": settings.test_images, "epochs": settings.epochs,
            "long_epochs": settings.long_epochs, "teacher_epochs": settings.teacher_epochs,
            "device": distill.resolve_device(settings.device).type}


def short_variant(settings: Settings) -> str:
    """The short run's schedule, budget and batch order where they differ from the search's ("" where they do not),
    e.g. "warmup=0.05" or "steps=250,batch_seed=100"."""
    default = distill.TrainConfig()
    changed = [f"{name}={getattr(settings, name)}" for name in SCHEDULE
               if getattr(settings, name) != getattr(default, name)]
    changed += [f"steps={settings.short_steps}"] if settings.short_steps is not None else []
    changed += [f"batch_seed={settings.batch_seed}"] if settings.batch_seed is not None else []
    return ",".join(changed)


def part_key(part: str, settings: Settings) -> str:
    """A distillation's name in the done file: another short run (:func:`short_variant`) is a distillation of its
    own, so that it is compared with the same students' refined and long runs."""
    variant = short_variant(settings)
    return f"short({variant})" if part == "short" and variant else part


def read_done(path: Path, settings: Settings) -> dict[tuple[int, str, str], dict[str, Any]]:
    """(seed, arch hash, part): the results of the distillations ``path`` holds for these settings (lines of others
    ignored). A line without a part holds a whole student (the format before parts), and counts for each."""
    if not path.is_file():
        return {}
    key = done_key(settings)
    lines = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
    return {(run["seed"], run["arch_hash"], part): {k: v for k, v in run.items() if k not in ("settings", "part")}
            for run in lines if run.get("settings") == key for part in ([run["part"]] if "part" in run else PARTS)}


def append_done(path: Path, settings: Settings, run: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps({**run, "settings": done_key(settings)}) + "\n")


def student_result(done: dict[tuple[int, str, str], dict[str, Any]], seed: int, student_hash: str,
                   settings: Settings) -> dict[str, Any]:
    """A student's results, merged from its three distillations in ``done`` (keys they share, such as the seed, are
    the same in each), and their seconds summed as ``wall_s``."""
    parts = [done[seed, student_hash, part_key(part, settings)] for part in PARTS]
    return {**{k: v for part in parts for k, v in part.items()},
            "wall_s": sum(run[f"{part}_s"] for part, run in zip(PARTS, parts))}


def progress(seed: int, chosen: list[dict[str, Any]], done: dict[tuple[int, str, str], dict[str, Any]],
             settings: Settings) -> str:
    """A markdown table of the students of ``seed`` whose three distillations are all done, fastest first, and how
    many are."""
    rows = ["| student | MACs | latency (ms) | short score | refined | long validation | long TEST (95% interval) |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    complete = [c for c in sorted(chosen, key=lambda c: c["latency_ms"])
                if all((seed, c["arch_hash"], part_key(part, settings)) in done for part in PARTS)]
    for c in complete:
        run = student_result(done, seed, c["arch_hash"], settings)
        low, high = run["test_ci95"]
        rows.append(f"| {c['order']} | {c['macs'] / 1e6:.1f} M | {c['latency_ms']:.3f} | {run['short']:.4f} "
                    f"| {run['refined']:.4f} | {run['long_val']:.4f} "
                    f"| {run['test_accuracy']:.4f} ({low:.3f}-{high:.3f}) |")
    return "\n".join([f"seed {seed}: {len(complete)} of {len(chosen)} students done", "", *rows])


def search_config(job: Job, settings: Settings) -> nas.SearchConfig:
    """The settings a search of this seed would run with (the defaults), on the bench's data and device."""
    return nas.SearchConfig(data=job.data, test_data=job.test_data, seed=job.seed, epochs=settings.epochs,
                            teacher_epochs=settings.teacher_epochs, device=settings.device, cache_dir=job.cache_dir,
                            train_threads=settings.train_threads, out=job.cache_dir)


_TASKS: dict[int, ImageTask] = {}  # per worker process: one task (data, teacher outputs) per seed


def task_of(job: Job, settings: Settings) -> ImageTask:
    if job.seed not in _TASKS:
        task = ImageTask(search_config(job, settings), get_space(SPACE))
        task.load_teacher()
        _TASKS[job.seed] = task
    return _TASKS[job.seed]


def prepare_seed(job: Job, settings: Settings) -> float:
    """Train (and cache) the seed's teacher and its outputs, once, before the students; returns its validation
    accuracy."""
    task = task_of(job, settings)
    assert task.outputs is not None, "load_teacher() ran"
    return task.outputs.accuracy(task.data)


def rung_metrics(task: ImageTask, student: nn.Module) -> dict[str, float]:
    """A student's validation accuracy, agreement and KL to the teacher, part-way through its distillation."""
    assert task.outputs is not None, "load_teacher() first"
    logits = np.concatenate([distill.predict(student, x, len(x)) for x in task.data.batches(task.data.val)])
    metrics = distill.quality_metrics(logits, np.asarray(task.outputs.val), task.data.val.y)
    return {"accuracy": metrics.accuracy, "agreement": metrics.agreement, "kl": metrics.kl_to_teacher}


def run_part(job: Job, settings: Settings) -> dict[str, Any]:
    """One distillation of one student of one seed: ``short`` (every rung scored), ``refined`` (REFINE_FACTOR times
    the short run's steps) or ``long`` (exported to ONNX and scored on the test split)."""
    task = task_of(job, settings)
    config = task.config
    distillation = {"kd": config.kd, "temperature": config.temperature, "alpha": config.alpha}
    student = task.build_student(job.arch)
    result: dict[str, Any] = {"seed": job.seed, "index": job.index, "arch_hash": arch_hash(job.arch),
                              "part": part_key(job.part, settings),
                              "train_device": distill.describe_device(task.placement.device),
                              **asdict(task.rung_validation())}
    if job.part == "short":
        rungs: dict[str, dict[str, float]] = {}

        def record(rung: int, student: nn.Module) -> bool:
            rungs[RUNGS[rung]] = rung_metrics(task, student)
            return False  # never stops: every rung is recorded

        fractions = tuple(float(Fraction(f)) for f in RUNGS)
        schedule = {name: getattr(settings, name) for name in SCHEDULE}
        if settings.batch_seed is not None:
            schedule["seed"] = settings.batch_seed
        short = task.distil(student, {**distillation, **schedule}, steps=settings.short_steps,
                            rungs=distill.Rungs(fractions, record))
        return {**result, "rungs": rungs, "short": short.score, "short_steps": short.metrics["steps"],
                "short_s": short.metrics["seconds"]}
    if job.part == "refined":
        steps = REFINE_FACTOR * task.train.total_steps(len(task.data.train))  # the short run's steps times the factor
        refined = task.distil(student, distillation, steps=steps)
        return {**result, "refined": refined.score, "refined_steps": refined.metrics["steps"],
                "refined_s": refined.metrics["seconds"]}
    long = task.distil(student, distillation, epochs=settings.long_epochs)
    with tempfile.TemporaryDirectory(prefix="nas-fidelity-") as tmp:
        test = task.test_score(task.export(student, Path(tmp) / "student.onnx"))
    return {**result, "long_val": long.score, "long_steps": long.metrics["steps"], "long_s": long.metrics["seconds"],
            "test_accuracy": test.score, "test_ci95": test.ci95}


def choose_students(settings: Settings, data: str, test_data: str, cache_dir: Path, workdir: Path) -> list[dict[str, Any]]:
    """``settings.students`` architectures of a random pool, evenly spread over its measured latency range, in the
    order they were sampled; each with its latency, MACs and parameters."""
    space = get_space(SPACE)
    probe = ImageTask(nas.SearchConfig(data=data, test_data=test_data, cache_dir=str(cache_dir), device="cpu",
                                       out=str(workdir)), space)
    pool = []
    for index, arch in enumerate(nas.random_archs(space, settings.pool, seed=2026)):
        if arch_hash(arch) in {p["arch_hash"] for p in pool}:
            continue
        measurement = hwprofile.profile(probe.export(probe.build_student(arch), workdir / f"pool-{index}.onnx"))
        pool.append({"order": index, "arch": arch, "arch_hash": arch_hash(arch), "latency_ms": measurement.latency.median_ms,
                     "macs": measurement.model.macs, "params": measurement.model.params})
    by_latency = sorted(pool, key=lambda p: p["latency_ms"])
    return sorted(evenly_spaced(by_latency, settings.students), key=lambda p: p["order"])


def students_of(path: Path | None, settings: Settings, data: str, test_data: str, workdir: Path) -> list[dict[str, Any]]:
    """The students of ``path`` when it exists; else :func:`choose_students`, written to ``path`` when one is given."""
    if path is not None and path.is_file():
        return json.loads(path.read_text())["students"]
    chosen = choose_students(settings, data, test_data, workdir / "cache", workdir)
    if path is not None:
        write_json({**header(load_average()), "students": chosen}, path)  # the header names the machine of the latencies
    return chosen


def kendall_interval(values: Sequence[float], target: Sequence[float], resamples: int = 1000,
                     seed: int = 0) -> list[float] | None:
    """Percentile bootstrap 95% interval of Kendall τ-b over the students (resampled with replacement): how much τ
    on this many students moves with the students alone. None where too few resamples vary in both."""
    values, target = np.asarray(values, float), np.asarray(target, float)
    draws = np.random.default_rng(seed).integers(0, len(values), size=(resamples, len(values)))
    taus = [stats.kendalltau(values[d], target[d]).statistic for d in draws
            if len(np.unique(values[d])) > 1 and len(np.unique(target[d])) > 1]
    return [float(q) for q in np.quantile(taus, [0.025, 0.975])] if len(taus) >= resamples // 2 else None


def correlations(target: Sequence[float], predictors: dict[str, Sequence[float]]) -> dict[str, dict[str, Any]]:
    """Kendall τ-b (with its interval over the students) and Spearman ρ of each predictor with ``target``; None where
    a predictor is constant (e.g. every student still at chance)."""
    result = {}
    for name, values in predictors.items():
        constant = len(set(values)) < 2 or len(set(target)) < 2
        result[name] = {"kendall_tau": None if constant else float(stats.kendalltau(values, target).statistic),
                        "kendall_tau_ci95": None if constant else kendall_interval(values, target),
                        "spearman": None if constant else float(stats.spearmanr(values, target).statistic)}
    return result


def clear_front(students: list[dict[str, Any]], front: set[int], test_samples: int) -> set[int]:
    """The front's students that beat every student at least as fast by more than the test set can resolve (the
    interval early stopping uses, on the test samples): the members a lost one of would make the front worse for
    certain. The others are on it by the draw of the test images as much as by their accuracy."""
    return {s["index"] for s in students if s["index"] in front
            and all(early_stop.difference_low(s["test_accuracy"], q["test_accuracy"], test_samples) > 0
                    for q in students if q is not s and q["latency_ms"] <= s["latency_ms"])}


def stopping_rules(validation: early_stop.Validation) -> dict[str, Rule]:
    """The early-stopping rule before issue 12 (stop when ⌈n/3⌉ of n ≥ 4 peers dominate at a rung) and the
    noise-aware one (``nas.early_stop.decide``)."""
    def before_issue_12(view: RungView) -> bool:
        needed = max(1, math.ceil(len(view.peers) / early_stop.ETA))
        against = sum(early_stop.dominates(p, view.point) for p in view.peers.values())
        return len(view.peers) >= early_stop.MIN_PEERS and against >= needed

    return {"before_issue_12": before_issue_12, **margin_rules(validation, (0.0,))}


def margin_rules(validation: early_stop.Validation, margins: Sequence[float]) -> dict[str, Rule]:
    """The noise-aware rule with a margin ``m`` each: a peer counts against a student when it leads by ``m`` more than
    the noise (less, ``m < 0``): the student's rung accuracy is raised by ``m`` before the rule compares."""
    def rule(margin: float) -> Rule:
        def stops(view: RungView) -> bool:
            raised = (min(1.0, max(0.0, view.point[0] + margin)), view.point[1])
            return early_stop.decide(raised, view.peers, validation).stopped
        return stops

    return {"noise_aware" if margin == 0 else f"noise_aware{margin:+.2f}": rule(margin) for margin in margins}


def projection_rules(validation: early_stop.Validation, quantiles: Sequence[float]) -> dict[str, Rule]:
    """A margin learned within the search, one rule per quantile ``q``: the student's short score is projected from its
    rung accuracy by the ``q``-quantile of the gains (short score − rung accuracy) of the earlier students that
    finished (``q = 1``: the largest gain seen), and it stops when ⌈n/3⌉ of those n ≥ 4 students, at least as fast,
    have a short score above that projection beyond the noise."""
    def rule(quantile: float) -> Rule:
        def stops(view: RungView) -> bool:
            if len(view.finished) < early_stop.MIN_PEERS:
                return False
            accuracy, latency = view.point
            gain = float(np.quantile([score - rung for rung, score, _ in view.finished], quantile))
            projected = min(1.0, max(0.0, accuracy + gain))
            against = sum(peer_latency <= latency
                          and early_stop.difference_low(score, projected, validation.samples) > 0
                          for _, score, peer_latency in view.finished)
            return against >= max(1, math.ceil(len(view.finished) / early_stop.ETA))
        return stops

    return {f"projected_q{quantile:g}": rule(quantile) for quantile in quantiles}


def replay_early_stopping(students: list[dict[str, Any]], front: set[int], clear: set[int], rules: dict[str, Rule],
                          rung_keys: tuple[str, ...] = SEARCH_RUNG_KEYS) -> dict[str, dict[str, Any]]:
    """Early-stopping ``rules`` replayed over the students in their order, as a search meets them: the peers at a rung
    are the earlier students that reached it (a stopped one reached the rung it stopped at); the rungs are the
    search's unless ``rung_keys`` name others of :data:`RUNGS`. For each: the students stopped, those of them on the
    long-trained front (and on its ``clear`` part), the short-run steps saved and the hypervolume of the long-trained
    front of the students kept, relative to all."""
    # the long-trained front of the students a rule kept, against that of all: (test accuracy, latency) above chance
    # and under the slowest student's latency
    points = {s["index"]: (s["test_accuracy"], s["latency_ms"]) for s in students}
    reference = (students[0]["chance"], 1.01 * max(s["latency_ms"] for s in students))
    replay = {}
    for name, rule in rules.items():
        stopped_at: dict[int, int] = {}  # student index: the position in rung_keys where it stopped
        saved = 0
        for position, student in enumerate(students):
            for rung, key in enumerate(rung_keys):
                earlier = students[:position]
                view = RungView(point=(student["rungs"][key]["accuracy"], student["latency_ms"]),
                                peers={p["index"]: (p["rungs"][key]["accuracy"], p["latency_ms"]) for p in earlier
                                       if stopped_at.get(p["index"], rung) >= rung},
                                finished=[(p["rungs"][key]["accuracy"], p["short"], p["latency_ms"]) for p in earlier
                                          if p["index"] not in stopped_at])
                if rule(view):
                    stopped_at[student["index"]] = rung
                    saved += round((1 - Fraction(key)) * student["short_steps"])
                    break
        total = sum(s["short_steps"] for s in students)
        kept = [point for index, point in points.items() if index not in stopped_at]
        whole = hypervolume(points.values(), reference)  # 0 when every long-trained student is at chance
        replay[name] = {"stopped": {str(i): rung_keys[r] for i, r in stopped_at.items()},
                        "stopped_on_true_front": sorted(set(stopped_at) & front),
                        "stopped_on_clear_front": sorted(set(stopped_at) & clear),
                        "steps_saved_fraction": saved / total,
                        "front_hypervolume_ratio": hypervolume(kept, reference) / whole if whole else None}
    return replay


def replay_in_random_orders(students: list[dict[str, Any]], front: set[int], clear: set[int], rules: dict[str, Rule],
                            rung_keys: tuple[str, ...] = SEARCH_RUNG_KEYS, orders: int = REPLAY_ORDERS,
                            seed: int = 0) -> dict[str, dict[str, Any]]:
    """:func:`replay_early_stopping` over ``orders`` random orders of the students (a search may meet them in any): per
    rule, the share of orders where a student of the long-trained front (of its clear part) was stopped, the most front
    students one order stopped, in how many orders each front student was (and at which rung), the mean short-run
    steps saved and the least front hypervolume kept."""
    rng = np.random.default_rng(seed)
    replays = [replay_early_stopping([students[i] for i in rng.permutation(len(students))], front, clear, rules,
                                     rung_keys) for _ in range(orders)]
    kept = {name: [r[name]["front_hypervolume_ratio"] for r in replays] for name in replays[0]}
    return {name: {"orders": orders, "orders_stopping_a_front_student":
                   sum(bool(r[name]["stopped_on_true_front"]) for r in replays) / orders,
                   "orders_stopping_a_clear_front_student":
                   sum(bool(r[name]["stopped_on_clear_front"]) for r in replays) / orders,
                   "most_front_students_stopped": max(len(r[name]["stopped_on_true_front"]) for r in replays),
                   "front_students_stopped": dict(Counter(f"student {i} at rung {r[name]['stopped'][str(i)]}"
                                                          for r in replays for i in r[name]["stopped_on_true_front"])),
                   "mean_steps_saved_fraction": statistics.fmean(r[name]["steps_saved_fraction"] for r in replays),
                   "least_front_hypervolume_ratio": None if None in kept[name] else min(kept[name])}
            for name in replays[0]}


def analyse(students: list[dict[str, Any]], test_samples: int) -> dict[str, Any]:
    """One seed's correlations with the long test accuracy, the long-trained front and the early-stopping replay."""
    target = [s["test_accuracy"] for s in students]
    predictors: dict[str, list[float]] = {"short score (search)": [s["short"] for s in students],
                                          f"refined score ({REFINE_FACTOR}x)": [s["refined"] for s in students]}
    for rung in RUNGS:
        predictors[f"rung {rung} accuracy"] = [s["rungs"][rung]["accuracy"] for s in students]
        predictors[f"rung {rung} agreement"] = [s["rungs"][rung]["agreement"] for s in students]
        predictors[f"rung {rung} -KL"] = [-s["rungs"][rung]["kl"] for s in students]
    predictors.update({"MACs": [s["macs"] for s in students], "params": [s["params"] for s in students],
                       "latency": [s["latency_ms"] for s in students],
                       "long validation accuracy": [s["long_val"] for s in students]})
    front = non_dominated({s["index"]: (s["test_accuracy"], s["latency_ms"]) for s in students})
    clear = clear_front(students, front, test_samples)
    validation = early_stop.Validation(students[0]["samples"], students[0]["chance"])
    rules = stopping_rules(validation)
    noise_aware = margin_rules(validation, (0.0,))
    return {"correlations": correlations(target, predictors), "true_front": sorted(front), "clear_front": sorted(clear),
            "early_stopping": replay_early_stopping(students, front, clear, rules),
            "early_stopping_orders": replay_in_random_orders(students, front, clear, rules),
            "noise_margins": replay_in_random_orders(students, front, clear, margin_rules(validation, MARGINS)),
            "projected": replay_in_random_orders(students, front, clear,
                                                 projection_rules(validation, PROJECTION_QUANTILES)),
            "rung_positions": {"/".join(keys): replay_in_random_orders(students, front, clear, noise_aware, keys)
                               ["noise_aware"] for keys in OTHER_RUNG_POSITIONS}}


def against_search_run(done: dict[tuple[int, str, str], dict[str, Any]], seed: int, chosen: list[dict[str, Any]],
                       settings: Settings) -> dict[str, Any] | None:
    """Under another short run (schedule, budget or batch order): the correlations of its short scores with those of
    the search's short run (how far a short score repeats when the run changes), where the seed has both; else
    None."""
    ours, search = ([done.get((seed, c["arch_hash"], part_key("short", settings)), {}).get("short") for c in chosen],
                    [done.get((seed, c["arch_hash"], "short"), {}).get("short") for c in chosen])
    if not short_variant(settings) or None in ours + search:
        return None
    return correlations(search, {"short score": ours})["short score"]


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Mean and std over the seeds where it is defined of every correlation (None where it is nowhere)."""
    def over_seeds(values: list[float]) -> dict[str, float | None]:
        return {"mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else 0.0, "seeds": len(values)}

    return {name: {kind: over_seeds([v for s in per_seed if (v := s["correlations"][name][kind]) is not None])
                   for kind in ("kendall_tau", "spearman")} for name in per_seed[0]["correlations"]}


def results_so_far(settings: Settings, per_seed: list[dict[str, Any]], runs: list[dict[str, Any]],
                   load_at_start: list[float], wall_s: float) -> dict[str, Any]:
    """The results file of the seeds finished so far."""
    return {
        **header(load_at_start),
        "settings": {**asdict(settings), "seeds": [s["seed"] for s in per_seed], "rungs": list(RUNGS),
                     "search_rungs": list(SEARCH_RUNG_KEYS), "refine_factor": REFINE_FACTOR, "space": SPACE},
        "summary": summarise(per_seed), "per_seed": per_seed,
        "timing": {"wall_s": wall_s, "train_device": runs[0]["train_device"],
                   **{f"{k}_s": statistics.fmean(r[f"{k}_s"] for r in runs) for k in ("short", "refined", "long")}},
    }


def share(fraction: float) -> str:
    """A share of orders in whole percent, "<1%" where some but under 1% (1 of 200 orders is not 0%)."""
    return "<1%" if 0 < fraction < 0.01 else f"{fraction:.0%}"


def report(result: dict[str, Any]) -> str:
    """The markdown tables BENCHMARKS.md shows."""
    seeds = result["settings"]["seeds"]
    lines = ["| predictor of long test accuracy | Kendall τ | τ's 95% interval over the students, by seed "
             "| Spearman ρ |", "| --- | --- | --- | --- |"]
    def cell(value: dict[str, float | None]) -> str:
        return "n/a (constant)" if value["mean"] is None else f"{value['mean']:.2f} ± {value['std']:.2f}"

    def intervals(name: str) -> str:
        return "; ".join("n/a" if (ci := seed["correlations"][name]["kendall_tau_ci95"]) is None
                         else f"{ci[0]:.2f} to {ci[1]:.2f}" for seed in result["per_seed"])

    for name, values in result["summary"].items():
        lines.append(f"| {name} | {cell(values['kendall_tau'])} | {intervals(name)} | {cell(values['spearman'])} |")
    lines += ["", "| seed | early stopping | students stopped | on the long-trained front | on its clear part "
                  "| short-run steps saved | long-trained front's hypervolume kept |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for seed, analysis in zip(seeds, result["per_seed"]):
        for name, replay in analysis["early_stopping"].items():
            lines.append(f"| {seed} | {name} | {len(replay['stopped'])} | {len(replay['stopped_on_true_front'])} "
                         f"of {len(analysis['true_front'])} | {len(replay['stopped_on_clear_front'])} "
                         f"of {len(analysis['clear_front'])} | {replay['steps_saved_fraction']:.0%} "
                         f"| {'n/a' if (kept := replay['front_hypervolume_ratio']) is None else f'{kept:.1%}'} |")
    lines += ["", "| seed | early stopping, in random orders | orders stopping a front student (which: orders) "
                  "| orders stopping one of its clear part | most front students stopped in one order "
                  "| mean short-run steps saved | least front hypervolume kept |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for seed, analysis in zip(seeds, result["per_seed"]):
        # the noise-aware rule with margins and at other rungs too (the search's rule is in both: the same replay)
        for name, replay in {**analysis["early_stopping_orders"], **analysis["noise_margins"], **analysis["projected"],
                             **{f"noise_aware at {keys}": r for keys, r in analysis["rung_positions"].items()}}.items():
            least = replay["least_front_hypervolume_ratio"]
            lines.append(f"| {seed} | {name} ({replay['orders']} orders) "
                         f"| {share(replay['orders_stopping_a_front_student'])} "
                         f"({', '.join(f'{k}: {v}' for k, v in replay['front_students_stopped'].items()) or 'none'}) "
                         f"| {share(replay['orders_stopping_a_clear_front_student'])} "
                         f"| {replay['most_front_students_stopped']} "
                         f"| {replay['mean_steps_saved_fraction']:.0%} "
                         f"| {'n/a' if least is None else f'{least:.1%}'} |")
    for seed, analysis in zip(seeds, result["per_seed"]):
        if (versus := analysis["short_vs_search_run"]) is not None:
            low, high = versus["kendall_tau_ci95"] or (math.nan, math.nan)
            lines += ["", f"seed {seed}: this short run's scores against the search's short run's: Kendall τ "
                          f"{versus['kendall_tau']:.2f} ({low:.2f} to {high:.2f}), "
                          f"Spearman ρ {versus['spearman']:.2f}"]
    timing = result["timing"]
    lines += ["", f"{result['settings']['students']} students x {len(seeds)} seed(s) on {timing['train_device']}: "
                  f"{timing['wall_s']:.0f} s in all ({result['settings']['workers']} worker process(es)); per student "
                  f"short {timing['short_s']:.1f} s, refined {timing['refined_s']:.1f} s, long {timing['long_s']:.1f} s"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 students, 1 seed, 1,000 images, small budgets")
    parser.add_argument("--device", default="auto", help="where teachers and students train: auto, cpu, cuda, cuda:N")
    parser.add_argument("--workers", type=int, help=f"student processes at once (default: 1 on the CPU; on CUDA the cores "
                                                      f"less 2, at most {GPU_WORKERS})")
    parser.add_argument("--train-threads", type=int, help="torch threads of each worker (default: the cores / the "
                                                              "workers; quick 1: a shared machine's cores spin)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default: 0 1 2; quick 0)")
    parser.add_argument("--students", type=int, help="students per seed (default: 16; quick 6)")
    parser.add_argument("--long-epochs", type=float, help="the long budget (default: 60, nas export's; quick 12)")
    default = distill.TrainConfig()
    parser.add_argument("--warmup", type=float, default=default.warmup,
                        help=f"the short run's warm-up fraction of its one-cycle schedule (default: {default.warmup}, "
                             f"the search's); another is a short run of its own, beside the same refined and long runs")
    parser.add_argument("--rung-ema", type=float, default=default.rung_ema,
                        help=f"decay of the moving average of the weights the short run's rungs score (default: "
                             f"{default.rung_ema}, the search's: the weights themselves); another is a short run of "
                             f"its own, like --warmup")
    parser.add_argument("--short-steps", type=int, help="the short run's budget in steps (default: the search's, 500 "
                                                        "here); another is a short run of its own, like --warmup")
    parser.add_argument("--batch-seed", type=int, help="the seed of the short run's batch order (default: the seed's; "
                                                       "the teacher, data and initial weights stay the seed's): how "
                                                       "far a short score repeats; a short run of its own, like "
                                                       "--warmup")
    parser.add_argument("--fashion", type=Path, default=FASHION, help=f"Fashion-MNIST's IDX files (default: {FASHION})")
    parser.add_argument("--students-file", type=Path, help="the chosen students (architecture, latency, MACs, "
                        "parameters) as JSON: read when it exists, else chosen here and written there; lets a GPU run "
                        "use the latencies measured on this machine, and a rerun the same students (default: the "
                        "output's name with -students.json)")
    parser.add_argument("--output", type=Path, help="JSON file (default: bench/results/proxy_fidelity[-quick].json, "
                                                    "or -VARIANT.json for another short run, e.g. -warmup0.05.json); "
                                                    "written after each seed")
    parser.add_argument("--done", type=Path, help="each finished distillation's results, a JSON line each; those "
                                                  "already there (same settings) are not run again (default: "
                                                  "bench/results/proxy_fidelity[-quick]-done.jsonl, or --output's name "
                                                  "with -done.jsonl)")
    parser.add_argument("--progress", action="store_true", help="print the students each seed has finished (from the "
                                                                 "done file) and exit, training nothing")
    parser.add_argument("--cache-dir", type=Path, help="teachers and their outputs, kept for a rerun (default: a "
                                                       "temporary folder)")
    args = parser.parse_args(argv)
    quick = args.quick
    placement = distill.Placement.on(args.device)
    workers = args.workers or (max(1, min(GPU_WORKERS, (os.cpu_count() or 1) - 2)) if placement.cuda else 1)
    settings = Settings(seeds=tuple(args.seeds or ((0,) if quick else (0, 1, 2))),
                        students=args.students or (5 if quick else 16), pool=10 if quick else 48,
                        train_images=1000 if quick else FASHION_IMAGES[0],
                        test_images=500 if quick else FASHION_IMAGES[1],
                        epochs=3.0 if quick else 10.0, long_epochs=args.long_epochs or (8.0 if quick else 60.0),
                        teacher_epochs=2 if quick else 30, device=str(placement.device), workers=workers,
                        train_threads=args.train_threads or (1 if quick else max(1, (os.cpu_count() or 1) // workers)),
                        quick=quick, warmup=args.warmup, rung_ema=args.rung_ema, short_steps=args.short_steps,
                        batch_seed=args.batch_seed)
    if not (args.fashion / "train-images-idx3-ubyte.gz").is_file():
        parser.error(f"no Fashion-MNIST in {args.fashion}: apt-get install dataset-fashion-mnist, or pass --fashion DIR")
    try:
        distill.TrainConfig(warmup=settings.warmup, rung_ema=settings.rung_ema, steps=settings.short_steps)
    except ValueError as error:
        parser.error(str(error))
    name = f"proxy_fidelity{'-quick' if quick else ''}"
    variant = short_variant(settings)
    base = args.output or RESULTS / f"{name}.json"  # names the done and students files of every schedule
    tag = variant.replace("=", "").replace(",", "-")
    output = args.output or RESULTS / f"{name}{'-' + tag if variant else ''}.json"
    done_file = args.done or base.with_name(f"{base.stem}-done.jsonl")
    done = read_done(done_file, settings)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    load_at_start = load_before()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nas-fidelity-") as tmp:
        workdir = Path(tmp)
        data = subset(args.fashion, "train", settings.train_images, 0, workdir / "train.npz")
        test_data = subset(args.fashion, "t10k", settings.test_images, 0, workdir / "test.npz")
        chosen = students_of(args.students_file or base.with_name(f"{base.stem}-students.json"), settings, data,
                             test_data, workdir)
        print(f"Fashion-MNIST subset: {settings.train_images} train+val / {settings.test_images} test images; "
              f"{len(chosen)} students from {min(c['latency_ms'] for c in chosen):.4f} to "
              f"{max(c['latency_ms'] for c in chosen):.4f} ms; training on {settings.device} in {workers} process(es)",
              flush=True)
        cache_dir = str(args.cache_dir or workdir / "cache")
        jobs = {seed: [Job(seed, c["order"], c["arch"], part, data, test_data, cache_dir)
                       for c in chosen for part in PARTS] for seed in settings.seeds}
        todo = {seed: [job for job in seed_jobs
                       if (seed, arch_hash(job.arch), part_key(job.part, settings)) not in done]
                for seed, seed_jobs in jobs.items()}
        total = sum(map(len, jobs.values()))
        finished = total - sum(map(len, todo.values()))
        if finished:
            print(f"{finished} of {total} distillations already done ({done_file})", flush=True)
        if args.progress:
            print("\n\n".join(progress(seed, chosen, done, settings) for seed in settings.seeds))
            return 0
        macs = {c["order"]: c["macs"] for c in chosen}
        properties = {c["order"]: {k: c[k] for k in ("latency_ms", "macs", "params", "arch")} for c in chosen}
        runs: list[dict[str, Any]] = []
        per_seed: list[dict[str, Any]] = []
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            firsts = [seed_jobs[0] for seed, seed_jobs in todo.items() if seed_jobs]
            teachers = dict(zip([job.seed for job in firsts], pool.map(prepare_seed, firsts, [settings] * len(firsts))))
            teachers.update({seed: run["teacher_val_accuracy"] for (seed, _, _), run in done.items()
                             if seed not in teachers})
            print(f"teachers' validation accuracy by seed: {teachers}", flush=True)
            # every job queued at once, seed after seed (within a seed the costliest student first, its long run
            # first): no worker waits for a seed to end, and each seed's results are written as it ends (a run cut
            # short keeps the seeds it finished, and every distillation it finished in the done file)
            queued = {seed: [pool.submit(run_part, job, settings) for job in
                             sorted(seed_jobs, key=lambda j: (-macs[j.index], -PARTS.index(j.part)))]
                      for seed, seed_jobs in todo.items()}
            for seed, futures in queued.items():
                for future in as_completed(futures):
                    run = {**future.result(), "teacher_val_accuracy": teachers[seed]}
                    append_done(done_file, settings, run)
                    done[seed, run["arch_hash"], run["part"]] = {k: v for k, v in run.items() if k != "part"}
                    finished += 1
                    kind = run["part"] if run["part"] in PARTS else "short"  # another short run
                    score = run["test_accuracy" if kind == "long" else kind]
                    print(f"[{finished}/{total}] seed {seed} student {run['index']} "
                          f"{run['part']}: {score:.4f} ({run[kind + '_s']:.0f} s)", flush=True)
                seed_runs = [student_result(done, seed, c["arch_hash"], settings) for c in chosen]
                runs += seed_runs
                students = sorted(({**run, **properties[run["index"]]} for run in seed_runs), key=lambda s: s["index"])
                per_seed.append({"seed": seed, "teacher_val_accuracy": teachers[seed],
                                 **analyse(students, settings.test_images),
                                 "short_vs_search_run": against_search_run(done, seed, chosen, settings),
                                 "students": students})
                result = results_so_far(settings, per_seed, runs, load_at_start, time.perf_counter() - start)
                publish(result, report(result), output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
