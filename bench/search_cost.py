"""What a search costs on this machine: wall time, per-trial split, per-step distillation, latency stability.

Run from the repository root (a few minutes on a 2-core CPU; no GPU needed)::

    python bench/search_cost.py            # full run: the default 30-trial search, 300-step comparisons
    python bench/search_cost.py --quick    # smoke run: few trials and steps, written to search_cost-quick.json

It measures:

1. ``nas search`` with its defaults (digits, 30 trials) into a fresh output and cache directory, so the
   built-in teacher is trained; then the same command again, which must add no trials. The teacher's
   training and output caching are also timed on their own, in another fresh cache directory.
2. The per-trial split (export, latency measurement, distillation) from ``trials.csv``, and the cost of
   over-budget trials from a second search with a budget of 1.3x the smallest student's latency.
3. The per-step cost of distillation from the cache, plain training, and distillation running the
   teacher online, on the same student and data, interleaved over repeats.
4. The stability of re-measuring one student's ONNX file with ``hwprofile.measure_latency``.

The figures are printed and written to ``bench/results/search_cost.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
import torch.nn as nn

import distill
import hwprofile
import nas
from search_spaces import Arch, SearchSpace, get_space, seeded_build
from _results import RESULTS, ROOT, header, load_before, publish  # bench/ is on sys.path when a script runs

SPACE = "mbconv"
DATA = "digits"
SEED = 0  # the search's default seed: students here start from the weights the search gives them
BUDGET_FACTOR = 1.3
TARGETS = {"cached_over_plain_max": 1.2, "over_budget_trial_max_s": 1.0, "latency_deviation_max": 0.05}


@dataclass(frozen=True)
class Settings:
    """What one run of the benchmark does; ``--quick`` shrinks every part."""

    trials: int
    budget_trials: int
    search_args: tuple[str, ...]  # extra `nas search` options (only in quick mode)
    teacher_epochs: int
    steps: int
    repeats: int
    latency_repeats: int
    quick: bool


@dataclass(frozen=True)
class SearchRun:
    wall_s: float
    out: Path
    stdout: str


# -- helpers -------------------------------------------------------------------------------------


@contextmanager
def timed() -> Iterator[Callable[[], float]]:
    """``with timed() as elapsed: ...``; ``elapsed()`` gives the seconds so far (frozen at exit)."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "mean": None, "median": None, "min": None, "max": None}
    return {"count": len(values), "mean": statistics.fmean(values), "median": statistics.median(values),
            "min": min(values), "max": max(values)}


def read_trials(out: Path) -> list[dict[str, str]]:
    path = out / "trials.csv"
    if not path.is_file() or path.stat().st_size == 0:
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def column(rows: list[dict[str, str]], name: str) -> list[float]:
    return [float(row[name]) for row in rows if row[name] not in ("", None)]


def fresh_rows(rows: list[dict[str, str]], status: str) -> list[dict[str, str]]:
    """Rows of ``status`` whose work was done (not copied from an earlier trial of the same architecture)."""
    return [row for row in rows if row["status"] == status and not row["reused_from"]]


def build(space: SearchSpace, arch: Arch, data: distill.Dataset) -> nn.Module:
    """The student as the search builds it: the same arch always gets the same initial weights."""
    return seeded_build(space, arch, SEED, data.input_shape, data.num_classes)


def mid_size_arch(space: SearchSpace) -> Arch:
    """The first architecture a seeded random sampler draws: a mid-size student."""
    return nas.random_archs(space, 1, seed=0)[0]


# -- 1. search wall time ---------------------------------------------------------------------------


def run_search(out: Path, cache_dir: Path, args: Sequence[str]) -> SearchRun:
    command = [sys.executable, "-m", "nas", "search", "--out", str(out), "--cache-dir", str(cache_dir), *args]
    env = {**os.environ, "NAS_CACHE_DIR": str(cache_dir)}
    with timed() as elapsed:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return SearchRun(wall_s=elapsed(), out=out, stdout=done.stdout)


def time_teacher(data: distill.Dataset, cache_dir: Path, epochs: int) -> tuple[dict[str, float], distill.Teacher]:
    """Train the built-in teacher and cache its outputs in a fresh ``cache_dir``, timing both."""
    with timed() as train_s:
        teacher = distill.load_teacher("builtin", data, cache_dir, epochs=epochs)
    with timed() as outputs_s:
        outputs = distill.teacher_outputs(teacher, data, cache_dir)
    return {"train_s": train_s(), "outputs_s": outputs_s(), "accuracy": outputs.accuracy(data)}, teacher


def default_search(settings: Settings, workdir: Path) -> tuple[dict[str, Any], Path]:
    out, cache = workdir / "default", workdir / "cache-default"
    args = ("--trials", str(settings.trials), *settings.search_args)
    first = run_search(out, cache, args)
    before = read_trials(out)
    rerun = run_search(out, cache, args)
    after = read_trials(out)
    study = nas.load_study(out)
    pareto = json.loads((out / "pareto.json").read_text())
    teacher_accuracy = float(study.user_attrs["teacher_score"])
    best = max((float(point["accuracy"]) for point in pareto), default=None)
    return {
        "command": f"nas search {' '.join(args)}",
        "wall_s": first.wall_s,
        "trials": len(before),
        "pareto_points": len(pareto),
        "best_accuracy": best,
        "teacher_accuracy": teacher_accuracy,
        "best_over_teacher": None if best is None else best / teacher_accuracy,
        "rerun": {"wall_s": rerun.wall_s, "trials_before": len(before), "trials_after": len(after),
                  "study_trials_after": len(study.trials), "added": len(after) - len(before)},
    }, cache


# -- 2. per-trial split ----------------------------------------------------------------------------


def trial_split(out: Path) -> dict[str, Any]:
    rows = read_trials(out)
    trained = fresh_rows(rows, "trained")
    return {
        "trials": len(rows),
        "trained": len(trained),
        "reused": sum(1 for row in rows if row["reused_from"]),
        "export_s": summary(column(trained, "export_s")),
        "measure_s": summary(column(trained, "measure_s")),
        "distill_s": summary(column(trained, "distill_s")),
        "slowest": slowest_trial(trained),
    }


def slowest_trial(rows: list[dict[str, str]]) -> dict[str, Any] | None:
    """The trained trial that took longest to distil: outliers there dominate the search's wall time."""
    if not rows:
        return None
    row = max(rows, key=lambda r: float(r["distill_s"]))
    return {"trial": int(row["trial"]), "distill_s": float(row["distill_s"]), "params": int(row["params"]),
            "macs": int(row["macs"]), "latency_ms": float(row["latency_ms"]), "arch": json.loads(row["arch"])}


def smallest_latency_ms(space: SearchSpace, data: distill.Dataset, workdir: Path) -> float:
    student = build(space, space.smallest(), data)
    path = hwprofile.export_onnx(student, data.input_shape, workdir / "smallest.onnx")
    return hwprofile.measure_latency(path, hwprofile.MeasureConfig()).median_ms


def over_budget_trial_walls(out: Path) -> dict[int, float]:
    """Each fresh over-budget trial's whole wall time (start to completion) as the study recorded it."""
    study = nas.load_study(out)
    return {trial.number: (trial.datetime_complete - trial.datetime_start).total_seconds()
            for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            if trial.user_attrs.get("status") == "over_budget" and "reused_from" not in trial.user_attrs
            and trial.datetime_start and trial.datetime_complete}


def budget_search(settings: Settings, space: SearchSpace, data: distill.Dataset, workdir: Path,
                  cache: Path) -> dict[str, Any]:
    """A small search with a tight budget (the cache already holds the teacher) for over-budget costs."""
    smallest = smallest_latency_ms(space, data, workdir)
    budget = BUDGET_FACTOR * smallest
    out = workdir / "budget"
    # --no-cache: the default search measured the same students (same seed); each must be measured for real here.
    args = ("--trials", str(settings.budget_trials), "--latency-budget", f"{budget:.6f}ms", "--no-cache",
            *settings.search_args)
    run = run_search(out, cache, args)
    rows = read_trials(out)
    over = fresh_rows(rows, "over_budget")
    cost = [float(row["export_s"]) + float(row["measure_s"]) for row in over]
    return {
        "command": f"nas search {' '.join(args)}",
        "wall_s": run.wall_s,
        "smallest_latency_ms": smallest,
        "budget_ms": budget,
        "trials": len(rows),
        "over_budget": len(over),
        "trained": len(fresh_rows(rows, "trained")),
        "over_budget_export_measure_s": summary(cost),
        "over_budget_trial_wall_s": summary(list(over_budget_trial_walls(out).values())),
        "trained_split": trial_split(out),
    }


# -- 3. per-step distillation cost -----------------------------------------------------------------


def step_costs(settings: Settings, space: SearchSpace, data: distill.Dataset, teacher: distill.Teacher,
               cache: Path) -> dict[str, Any]:
    """Median ms per step of cached KD, plain training and online KD on identical fresh students."""
    arch = mid_size_arch(space)
    outputs = distill.teacher_outputs(teacher, data, cache)
    module = teacher.module  # type: ignore[attr-defined]  (the built-in teacher is a TorchTeacher)
    variants: dict[str, distill.SoftTargets | None] = {
        "cached": distill.CachedLogits(outputs.train),
        "plain": None,
        "online": distill.OnlineTeacher(module),
    }
    warmup = distill.TrainConfig(steps=5)
    for targets in variants.values():  # first-call costs (allocator, kernels) are not what we compare
        distill.train(build(space, arch, data), data, targets, warmup)
    config = distill.TrainConfig(steps=settings.steps)
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(settings.repeats):
        for name, targets in variants.items():
            samples[name].append(distill.train(build(space, arch, data), data, targets, config).step_ms)
    median = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "arch": arch,
        "params": sum(p.numel() for p in build(space, arch, data).parameters()),
        "steps": settings.steps,
        "repeats": settings.repeats,
        "step_ms": samples,
        "median_step_ms": median,
        "cached_over_plain": median["cached"] / median["plain"],
        "online_over_cached": median["online"] / median["cached"],
    }


# -- 4. latency re-measurement -----------------------------------------------------------------------


def latency_stability(settings: Settings, space: SearchSpace, data: distill.Dataset, workdir: Path) -> dict[str, Any]:
    path = hwprofile.export_onnx(build(space, mid_size_arch(space), data), data.input_shape, workdir / "mid.onnx")
    measurements = [hwprofile.measure_latency(path) for _ in range(settings.latency_repeats)]
    medians = [m.median_ms for m in measurements]
    center = statistics.median(medians)
    return {
        "repeats": len(medians),
        "medians_ms": medians,
        "cvs": [m.cv for m in measurements],
        "median_of_medians_ms": center,
        "max_relative_deviation": max(abs(m - center) / center for m in medians),
    }


# -- report ------------------------------------------------------------------------------------------


def checks(results: dict[str, Any]) -> dict[str, bool]:
    over = results["budget_search"]["over_budget_export_measure_s"]["max"]
    return {
        "rerun_adds_no_trials": results["default_search"]["rerun"]["added"] == 0,
        "cached_over_plain_within_target": results["step_cost"]["cached_over_plain"] <= TARGETS["cached_over_plain_max"],
        "over_budget_trial_within_target": over is not None and over < TARGETS["over_budget_trial_max_s"],
        "latency_within_target": results["latency"]["max_relative_deviation"] <= TARGETS["latency_deviation_max"],
    }


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def slowest_line(slowest: dict[str, Any] | None) -> str:
    if slowest is None:
        return "-"
    return (f"trial {slowest['trial']}, {slowest['distill_s']:.1f} s "
            f"({slowest['params']} params, {slowest['macs']} MACs)")


def report(results: dict[str, Any]) -> str:
    t, d, s, b = results["teacher"], results["default_search"], results["trial_split"], results["budget_search"]
    c, lat = results["step_cost"], results["latency"]
    ob, obw = b["over_budget_export_measure_s"], b["over_budget_trial_wall_s"]
    load = results["load_average"]
    lines = [
        f"Machine: {results['machine']['cores']} CPUs, torch {results['machine']['torch']} "
        f"({results['machine']['torch_threads']} threads), onnxruntime {results['machine']['onnxruntime']}; "
        f"load average {load['before'][0]} before, {load['after'][0]} after (1 min)",
        f"Teacher (built-in, alone): train {t['train_s']:.1f} s + cache outputs {t['outputs_s']:.2f} s; "
        f"accuracy {t['accuracy']:.4f}",
        f"1. `{d['command']}` (fresh cache): {d['wall_s']:.1f} s for {d['trials']} trials; "
        f"{d['pareto_points']} Pareto points; best accuracy {fmt(d['best_accuracy'], '.4f')} / teacher "
        f"{d['teacher_accuracy']:.4f} = {fmt(d['best_over_teacher'])}",
        f"   re-run: {d['rerun']['wall_s']:.1f} s, trials {d['rerun']['trials_before']} -> "
        f"{d['rerun']['trials_after']} (added {d['rerun']['added']})",
        f"2. per trained trial ({s['trained']} of {s['trials']}, {s['reused']} reused), mean / median s: "
        f"export {fmt(s['export_s']['mean'])} / {fmt(s['export_s']['median'])}, "
        f"measure {fmt(s['measure_s']['mean'])} / {fmt(s['measure_s']['median'])}, "
        f"distil {fmt(s['distill_s']['mean'])} / {fmt(s['distill_s']['median'])}",
        f"   slowest distillation: {slowest_line(s['slowest'])}",
        f"   budget {b['budget_ms']:.4f} ms ({BUDGET_FACTOR}x smallest {b['smallest_latency_ms']:.4f} ms), "
        f"{b['trials']} trials in {b['wall_s']:.1f} s: {b['over_budget']} over budget, {b['trained']} trained",
        f"   over-budget trial export+measure: mean {fmt(ob['mean'])} s, max {fmt(ob['max'])} s "
        f"(target < {TARGETS['over_budget_trial_max_s']} s); whole trial mean {fmt(obw['mean'])} s, max {fmt(obw['max'])} s",
        f"3. ms/step over {c['steps']} steps (median of {c['repeats']}, {c['params']} params): "
        + ", ".join(f"{name} {ms:.2f}" for name, ms in c["median_step_ms"].items()),
        f"   cached/plain {c['cached_over_plain']:.3f} (target <= {TARGETS['cached_over_plain_max']}), "
        f"online/cached {c['online_over_cached']:.2f}",
        f"4. {lat['repeats']} re-measurements: medians "
        + ", ".join(f"{m:.4f}" for m in lat["medians_ms"])
        + f" ms; max deviation {100 * lat['max_relative_deviation']:.2f}% "
        f"(target <= {100 * TARGETS['latency_deviation_max']:.0f}%)",
        "Checks: " + ", ".join(f"{name} {'PASS' if ok else 'FAIL'}" for name, ok in results["checks"].items()),
    ]
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, help="trials of the default search (default: 30; quick: 6)")
    parser.add_argument("--budget-trials", type=int, help="trials of the budgeted search (default: 12; quick: 4)")
    parser.add_argument("--steps", type=int, help="training steps per step-cost run (default: 300; quick: 40)")
    parser.add_argument("--repeats", type=int, help="interleaved repeats of the step-cost runs (default: 3)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: few trials, 30 distillation steps per trial, a 3-epoch teacher")
    parser.add_argument("--output", type=Path, help="JSON file (default: bench/results/search_cost[-quick].json)")
    args = parser.parse_args(argv)
    quick = args.quick
    teacher_epochs = 3 if quick else 30
    settings = Settings(
        trials=args.trials or (6 if quick else 30),
        budget_trials=args.budget_trials or (4 if quick else 12),
        search_args=("--steps", "30", "--teacher-epochs", str(teacher_epochs)) if quick else (),
        teacher_epochs=teacher_epochs,
        steps=args.steps or (40 if quick else 300),
        repeats=args.repeats or 3,
        latency_repeats=3 if quick else 5,
        quick=quick,
    )
    output = args.output or RESULTS / ("search_cost-quick.json" if quick else "search_cost.json")
    return settings, output


def main(argv: Sequence[str] | None = None) -> int:
    settings, output = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = get_space(SPACE)
    data = distill.load_dataset(DATA)
    load_at_start = load_before()
    with tempfile.TemporaryDirectory(prefix="bench-search-cost-") as tmp:
        workdir = Path(tmp)
        print("Timing the teacher alone ...", flush=True)
        teacher_stats, teacher = time_teacher(data, workdir / "cache-teacher", settings.teacher_epochs)
        print(f"Running the default search ({settings.trials} trials) and its re-run ...", flush=True)
        default, search_cache = default_search(settings, workdir)
        split = trial_split(workdir / "default")
        print(f"Running the budgeted search ({settings.budget_trials} trials) ...", flush=True)
        budget = budget_search(settings, space, data, workdir, search_cache)
        print(f"Comparing per-step costs ({settings.steps} steps x {settings.repeats}) ...", flush=True)
        steps = step_costs(settings, space, data, teacher, workdir / "cache-teacher")
        print("Re-measuring one student's latency ...", flush=True)
        latency = latency_stability(settings, space, data, workdir)
    results: dict[str, Any] = {
        **header(load_at_start),
        "settings": asdict(settings),
        "teacher": teacher_stats,
        "default_search": default,
        "trial_split": split,
        "budget_search": budget,
        "step_cost": steps,
        "latency": latency,
        "targets": TARGETS,
    }
    results["checks"] = checks(results)
    publish(results, report(results), output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
