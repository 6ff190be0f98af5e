"""Where the default search's speed comes from: each of its savings switched off alone, at equal wall-clock budget.

Run from the repository root (about 6 x 3 x ``--budget-s`` seconds plus set-up)::

    python bench/search_efficiency.py                   # MNIST test split, 3 seeds, 180 s per search
    python bench/search_efficiency.py --quick           # smoke run: 1 seed, 40 s per search

Every search is ``nas search`` (``nas.search``) on the same data (``../shared/datasets/mnist-t10k``), the same trained
teacher (a file, so no search trains one), the same latency budget (the median latency of 24 random students, so about
half the space is over it), the same distillation budget per trial, the same wall-clock budget, its own caches (no
search reuses another's measurements or teacher outputs) and no front refinement (``--refine 0``: refinement spends
time, it saves none). The variants, per seed:

- **default**: as shipped: TPE, cached teacher outputs (computed inside its clock), over-budget students recorded
  untrained, noise-aware early stopping;
- **random sampler** (``--sampler random``), **no early stopping** (``--early-stop off``), **online teacher**
  (``--online-teacher``: the teacher runs on every training batch), **train over budget** (``--train-over-budget``):
  the default with one saving switched off;
- **naive**: all four switched off.

Every architecture starts from the same initial weights (``search_spaces.seeded_build``). For every search, the
hypervolume of its feasible front (``nas.pareto.hypervolume``: maximise validation accuracy, minimise latency; fixed
reference point: accuracy 0, latency = the budget) is followed over time. Reported per variant: the final hypervolume
(mean ± std over seeds), its ratio to the default's, the feasible students scored, and the time the default took to
reach the variant's final hypervolume as a fraction of the budget (the old target, naive: at most 1/3). Printed and
written to ``bench/results/search_efficiency.json`` (``--output`` to write elsewhere).
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
SAVINGS: dict[str, dict[str, Any]] = {  # each saving of the default search, as the settings that switch it off
    "random sampler": {"sampler": "random"},
    "no early stopping": {"early_stop": "off"},
    "online teacher": {"teacher_cache": False},
    "train over budget": {"train_over_budget": True},
}
VARIANTS: dict[str, dict[str, Any]] = {"default": {}, **SAVINGS,
                                       "naive": {key: value for off in SAVINGS.values() for key, value in off.items()}}

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


def search(variant: str, teacher_file: Path, settings: Settings, seed: int, budget_ms: float,
           workdir: Path) -> list[Point]:
    """``nas search`` with the variant's settings under the wall-clock budget: (time, accuracy, latency) of each
    feasible student it trained within the budget. Its clock includes caching the teacher's outputs."""
    name = f"{variant.replace(' ', '-')}-{seed}"
    config = nas.SearchConfig(data=DATA, teacher=str(teacher_file), trials=10_000, timeout=settings.budget_s,
                              latency_budget_ms=budget_ms, seed=seed, steps=settings.steps, refine=0,
                              out=str(workdir / name), cache_dir=str(workdir / f"cache-{name}"), **VARIANTS[variant])
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


def run_of(seed: int, points: dict[str, list[Point]], budget_ms: float, budget_s: float) -> dict[str, Any]:
    """One seed's variants: final hypervolume, feasible students, best accuracy, curve; and when the default reached
    each variant's final hypervolume."""
    curves = {variant: curve(variant_points, budget_ms) for variant, variant_points in points.items()}
    final = {variant: hv_curve[-1][1] if hv_curve else 0.0 for variant, hv_curve in curves.items()}
    variants = {}
    for variant, variant_points in points.items():
        reach = time_to_reach(curves["default"], final[variant]) if final[variant] > 0 else 0.0
        variants[variant] = {"hypervolume": final[variant], "feasible_trained": len(variant_points),
                             "best_accuracy": max((a for _, a, _ in variant_points), default=0.0),
                             "default_reached_it_s": reach,
                             "default_reached_it_fraction": None if reach is None else reach / budget_s,
                             "curve": curves[variant]}
    return {"seed": seed, "variants": variants}


def summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per variant over seeds: hypervolume, its ratio to the default's, students, and the default's time to reach it."""
    table = {}
    for variant in VARIANTS:
        rows = [run["variants"][variant] for run in runs]
        defaults = [run["variants"]["default"]["hypervolume"] for run in runs]
        fractions = [r["default_reached_it_fraction"] for r in rows]
        table[variant] = {
            "hypervolume": summarise([r["hypervolume"] for r in rows]),
            "ratio_to_default": summarise([r["hypervolume"] / d if d > 0 else float("nan")
                                           for r, d in zip(rows, defaults)]),
            "feasible_trained": summarise([float(r["feasible_trained"]) for r in rows]),
            "best_accuracy": summarise([r["best_accuracy"] for r in rows]),
            "default_reached_it_worst_fraction": None if None in fractions else max(fractions)}
    return table


def report(table: dict[str, dict[str, Any]]) -> str:
    lines = ["variant               | hypervolume         | / default     | feasible trained | best accuracy | "
             "default reached it (worst)"]
    for variant, row in table.items():
        worst = row["default_reached_it_worst_fraction"]
        lines.append(f"{variant:<21} | {row['hypervolume']['mean']:.5f} ± {row['hypervolume']['std']:.5f} | "
                     f"{row['ratio_to_default']['mean']:.3f} ± {row['ratio_to_default']['std']:.3f} | "
                     f"{row['feasible_trained']['mean']:>16.1f} | {row['best_accuracy']['mean']:>13.4f} | "
                     f"{'never (one seed or more)' if worst is None else f'{worst:.0%} of the budget'}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 40 s per search, 60 steps per trial")
    parser.add_argument("--budget-s", type=float, help="wall-clock budget of each search (default 180, quick 40)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default: 0 1 2; quick 0)")
    parser.add_argument("--output", type=Path, help="JSON file (default: bench/results/search_efficiency[-quick].json)")
    args = parser.parse_args(argv)
    settings = Settings(seeds=tuple(args.seeds or ((0,) if args.quick else (0, 1, 2))),
                        budget_s=args.budget_s or (40.0 if args.quick else 180.0),
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
              f"{settings.budget_s:.0f} s per search, {settings.steps} distillation steps per trial", flush=True)
        runs = []
        for seed in settings.seeds:
            points = {}
            for variant in VARIANTS:
                points[variant] = search(variant, teacher_file, settings, seed, budget_ms, workdir)
                print(f"seed {seed} {variant}: {len(points[variant])} feasible students trained, hypervolume "
                      f"{curve(points[variant], budget_ms)[-1][1] if points[variant] else 0.0:.5f}", flush=True)
            runs.append(run_of(seed, points, budget_ms, settings.budget_s))
    table = summary(runs)
    naive_worst = table["naive"]["default_reached_it_worst_fraction"]
    result = {
        **header(load_at_start),
        "settings": {**asdict(settings), "data": DATA, "latency_budget_ms": budget_ms, "refine": 0,
                     "variants": VARIANTS, "reference_point": {"accuracy": 0.0, "latency_ms": budget_ms}},
        "runs": runs,
        "summary": table,
        "target_met": naive_worst is not None and naive_worst <= TARGET_TIME_FRACTION,
    }
    print(report(table))
    print(f"default reaches the naive search's final hypervolume within "
          f"{'never' if naive_worst is None else f'{naive_worst:.0%}'} of the budget at worst (target ≤ "
          f"{TARGET_TIME_FRACTION:.0%}): {'PASS' if result['target_met'] else 'FAIL'}")
    write_json(result, output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
