"""How much faster the default search finds a good front than a naive one, at equal wall-clock budget.

Run from the repository root (about 2 x 3 x ``--budget-s`` seconds plus set-up)::

    python bench/search_efficiency.py              # MNIST test split, 3 seeds, 300 s per search
    python bench/search_efficiency.py --quick      # smoke run: 1 seed, 90 s per search

Both searches get the same data (``../shared/datasets/mnist-t10k``), the same trained teacher, the
same latency budget (the median latency of 24 random students, so about half the space is over it),
the same distillation budget per trial and the same wall-clock budget:

(a) **naive**: random sampling, the teacher run online on every batch, no early stopping, and every
    student trained, over the budget or not (infeasible ones are dropped from the front afterwards);
(b) **default**: ``nas search`` with its defaults (TPE, cached teacher outputs, over-budget students
    recorded untrained, Pareto-aware successive halving). Its clock includes caching the teacher's outputs.

Both start every architecture from the same initial weights (``search_spaces.seeded_build``). For every
search, the hypervolume of its feasible front (``nas.pareto.hypervolume``: maximise accuracy, minimise
latency; fixed reference point: accuracy 0, latency = the budget) is followed over time. Reported: the
final hypervolume and best accuracy under the budget of each, their ratio, and the time (b) took to
reach (a)'s final hypervolume as a fraction of the budget (target: at most 1/3). Printed and written to
``bench/results/search_efficiency.json`` (``--output`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

import distill
import hwprofile
import nas
from nas.pareto import hypervolume
from search_spaces import get_space, seeded_build
from _results import RESULTS, ROOT, header, load_before, write_json  # bench/ is on sys.path when a script runs

DATA = f"mnist:{ROOT.parent / 'shared' / 'datasets' / 'mnist-t10k'}"
TARGET_TIME_FRACTION = 1 / 3

Point = tuple[float, float, float]  # (seconds since the start, accuracy, latency_ms)


@dataclass(frozen=True)
class Settings:
    seeds: tuple[int, ...]
    budget_s: float
    steps: int  # distillation steps per trial
    teacher_epochs: int
    probe_students: int
    quick: bool


def curve(points: list[Point], budget_ms: float) -> list[tuple[float, float]]:
    """(time, hypervolume so far) after each finished trial; reference point: accuracy 0, latency the budget."""
    ordered = sorted(points)
    return [(t, hypervolume([(a, lat) for _, a, lat in ordered[:i + 1]], (0.0, budget_ms)))
            for i, (t, _, _) in enumerate(ordered)]


def time_to_reach(hv_curve: list[tuple[float, float]], target: float) -> float | None:
    return next((t for t, hv in hv_curve if hv >= target - 1e-12), None)


def latency_budget(data: distill.Dataset, count: int, workdir: Path) -> float:
    """The median latency of ``count`` random students: about half the space is over it."""
    space = get_space("mbconv")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=12345))
    latencies = []
    for index in range(count):
        student = seeded_build(space, space.sample(study.ask()), 0, data.input_shape, data.num_classes)
        path = hwprofile.export_onnx(student, data.input_shape, workdir / f"probe-{index}.onnx")
        latencies.append(hwprofile.profile(path).latency.median_ms)
    return statistics.median(latencies)


def naive_search(teacher_file: Path, settings: Settings, seed: int, budget_ms: float, workdir: Path) -> list[Point]:
    """Random students, each measured and trained with the teacher online, until the wall-clock budget is spent.

    Each starts from the weights the default search of ``seed`` gives the same architecture.
    """
    space = get_space("mbconv")
    data = distill.load_dataset(DATA, seed=seed)  # the split the default search of this seed uses
    teacher = torch.load(teacher_file, weights_only=False)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    train = distill.TrainConfig(steps=settings.steps, lr=1e-2, seed=seed)
    soft_targets = distill.OnlineTeacher(teacher)
    start, points = time.perf_counter(), []
    while time.perf_counter() - start < settings.budget_s:
        trial = study.ask()
        student = seeded_build(space, space.sample(trial), seed, data.input_shape, data.num_classes)
        path = hwprofile.export_onnx(student, data.input_shape, workdir / f"naive-{trial.number}.onnx")
        latency = hwprofile.profile(path).latency.median_ms
        distill.train(student, data, soft_targets, train)
        accuracy = distill.evaluate(student, data).accuracy
        points.append((time.perf_counter() - start, accuracy, latency))
    return [p for p in points if p[0] <= settings.budget_s and p[2] <= budget_ms]


def default_search(teacher_file: Path, settings: Settings, seed: int, budget_ms: float, workdir: Path) -> list[Point]:
    """``nas search`` with its defaults under the wall-clock budget; its clock includes caching teacher outputs."""
    config = nas.SearchConfig(data=DATA, teacher=str(teacher_file), trials=10_000, timeout=settings.budget_s,
                          latency_budget_ms=budget_ms, seed=seed, steps=settings.steps,
                          out=str(workdir / f"default-{seed}"), cache_dir=str(workdir / f"cache-{seed}"))
    start = time.time()
    study = nas.search(config)
    points = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        assert trial.datetime_complete is not None, "a complete trial has its completion time"
        elapsed = trial.datetime_complete.timestamp() - start
        if trial.user_attrs.get("status") == "trained" and elapsed <= settings.budget_s:
            points.append((elapsed, trial.values[0], trial.values[1]))
    return points


def summarise(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 90 s per search, 60 steps per trial")
    parser.add_argument("--budget-s", type=float, help="wall-clock budget of each search (default 300, quick 90)")
    parser.add_argument("--output", type=Path, help="JSON file (default: bench/results/search_efficiency[-quick].json)")
    args = parser.parse_args(argv)
    settings = Settings(seeds=(0,) if args.quick else (0, 1, 2), budget_s=args.budget_s or (90.0 if args.quick else 300.0),
                        steps=60 if args.quick else 120, teacher_epochs=3 if args.quick else 8,
                        probe_students=8 if args.quick else 24, quick=args.quick)
    output = args.output or RESULTS / f"search_efficiency{'-quick' if settings.quick else ''}.json"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(os.cpu_count() or 1)
    load_at_start = load_before()
    with tempfile.TemporaryDirectory(prefix="nas-bench-") as tmp:
        workdir = Path(tmp)
        data = distill.load_dataset(DATA, seed=0)
        teacher = distill.load_teacher("builtin", data, workdir / "teacher-cache", epochs=settings.teacher_epochs)
        teacher_file = workdir / "teacher.pt"  # one file teacher for every search: the same network throughout
        torch.save(teacher.module, teacher_file)  # type: ignore[attr-defined]
        budget_ms = latency_budget(data, settings.probe_students, workdir)
        print(f"data {DATA}: {len(data.train)} train / {len(data.val)} val; latency budget {budget_ms:.4f} ms; "
              f"{settings.budget_s:.0f} s per search, {settings.steps} distillation steps per trial")
        runs = []
        for seed in settings.seeds:
            naive = naive_search(teacher_file, settings, seed, budget_ms, workdir)
            default = default_search(teacher_file, settings, seed, budget_ms, workdir)
            naive_hv, default_hv = curve(naive, budget_ms), curve(default, budget_ms)
            final_naive = naive_hv[-1][1] if naive_hv else 0.0
            final_default = default_hv[-1][1] if default_hv else 0.0
            reach = time_to_reach(default_hv, final_naive)
            run = {"seed": seed, "naive_trials_feasible": len(naive), "default_trials_trained": len(default),
                   "naive_hypervolume": final_naive, "default_hypervolume": final_default,
                   "naive_best_accuracy": max((a for _, a, _ in naive), default=0.0),
                   "default_best_accuracy": max((a for _, a, _ in default), default=0.0),
                   "default_time_to_naive_final_s": reach,
                   "time_fraction": None if reach is None else reach / settings.budget_s,
                   "naive_curve": naive_hv, "default_curve": default_hv}
            runs.append(run)
            print(f"seed {seed}: hypervolume naive {final_naive:.5f} ({len(naive)} feasible trials) vs default "
                  f"{final_default:.5f} ({len(default)} trained); best accuracy {run['naive_best_accuracy']:.4f} vs "
                  f"{run['default_best_accuracy']:.4f}; default reached naive's final front after "
                  f"{'never' if reach is None else f'{reach:.0f} s ({reach / settings.budget_s:.0%} of the budget)'}")
    fractions = [r["time_fraction"] if r["time_fraction"] is not None else float("inf") for r in runs]
    result = {
        **header(load_at_start),
        "settings": {**asdict(settings), "data": DATA, "latency_budget_ms": budget_ms,
                     "reference_point": {"accuracy": 0.0, "latency_ms": budget_ms}},
        "runs": runs,
        "naive_hypervolume": summarise([r["naive_hypervolume"] for r in runs]),
        "default_hypervolume": summarise([r["default_hypervolume"] for r in runs]),
        "hypervolume_ratio": statistics.fmean([r["default_hypervolume"] / r["naive_hypervolume"] for r in runs
                                               if r["naive_hypervolume"] > 0] or [float("nan")]),
        "naive_best_accuracy": summarise([r["naive_best_accuracy"] for r in runs]),
        "default_best_accuracy": summarise([r["default_best_accuracy"] for r in runs]),
        "worst_time_fraction": max(fractions),
        "target_met": max(fractions) <= TARGET_TIME_FRACTION,
    }
    print(f"hypervolume: naive {result['naive_hypervolume']['mean']:.5f} ± {result['naive_hypervolume']['std']:.5f}, "
          f"default {result['default_hypervolume']['mean']:.5f} ± {result['default_hypervolume']['std']:.5f} "
          f"(ratio {result['hypervolume_ratio']:.2f}); best accuracy under the budget: naive "
          f"{result['naive_best_accuracy']['mean']:.4f}, default {result['default_best_accuracy']['mean']:.4f}")
    print(f"default reaches naive's final hypervolume within {max(fractions):.0%} of the budget at worst "
          f"(target ≤ {TARGET_TIME_FRACTION:.0%}): {'PASS' if result['target_met'] else 'FAIL'}")
    write_json(result, output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
