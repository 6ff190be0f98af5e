"""Where the default search's speed comes from: each of its savings switched off alone, at equal wall-clock budget.

Run from the repository root (about 6 x 3 x ``--budget-s`` seconds plus set-up)::

    python bench/search_efficiency.py                   # MNIST test split, 3 seeds, 180 s per search
    python bench/search_efficiency.py --quick           # smoke run: 1 seed, 40 s per search
    python bench/search_efficiency.py --long-steps 1000 --long-workers 2 --done DONE.jsonl  # + long-trained fronts
    python bench/search_efficiency.py --variants "no early stopping" --long-steps 1000 --long-workers 2 --done D.jsonl
    python bench/search_efficiency.py --fashion --variants "no early stopping" --long-steps 1000 --done F.jsonl

Every search is ``nas search`` (``nas.search``) on the same data (``../shared/datasets/mnist-t10k``; with ``--fashion``,
``proxy_fidelity``'s Fashion-MNIST images: 10,000 of its training files split anew per seed into 8,000 train / 2,000
validation, and 5,000 of its t10k files as TEST), the same trained teacher (a file, so no search trains one; one per
seed, trained on that seed's training split), the same latency budget (the median latency of 24 random students, so
about half the space is over it), the same distillation budget per trial, the same wall-clock budget, its own caches (no
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
written to ``bench/results/search_efficiency[-fashion].json`` (``--output`` to write elsewhere); ``--reanalyse FILE``
recomputes a results file's analysis from the students and long runs it holds, without searching.

With ``--long-steps N``, the **long-trained fronts over time** (issue 12): every student that was ever on a search's
validation front, and every student early stopping stopped, is distilled again for N steps (``nas.export_arch``,
``--long-device``) and its ONNX file scored on the TEST split that no search read; the hypervolume of (TEST accuracy,
latency) of each search's front so far is then followed over time as above, and each search's stopped students that
are on the seed's long-trained front (of all its long-trained students within the latency budget) are counted, with
their lead over the best faster student and the share of that front's hypervolume left without the stopped
students. Each long run goes into ``--done`` as it ends, and a rerun reuses it (same data, seed, architecture,
distillation settings, steps and teacher epochs), so the long part can be spread over runs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import torch

import distill
import hwprofile
import nas
from nas.drift import objective_ms
from nas.pareto import hypervolume, non_dominated
from nas.search import FINISHED
from search_spaces import get_space, seeded_build
from _results import RESULTS, ROOT, header, load_before, write_json  # bench/ is on sys.path when a script runs
from proxy_fidelity import FASHION, FASHION_IMAGES, subset

DATA = f"mnist:{ROOT.parent / 'shared' / 'datasets' / 'mnist-t10k'}"
TARGET_TIME_FRACTION = 1 / 3
LONG_SHARE = 0.98  # of a variant's long-trained hypervolume: when the default reached it
SAVINGS: dict[str, dict[str, Any]] = {  # each saving of the default search, as the settings that switch it off
    "random sampler": {"sampler": "random"},
    "no early stopping": {"early_stop": "off"},
    "online teacher": {"teacher_cache": False},
    "train over budget": {"train_over_budget": True},
}
VARIANTS: dict[str, dict[str, Any]] = {"default": {}, **SAVINGS,
                                       "naive": {key: value for off in SAVINGS.values() for key, value in off.items()}}

Student = dict[str, Any]  # a feasible student: elapsed (s since the search's start), latency_ms, arch_hash; and the
# accuracy of a trained one
Archs = dict[str, dict[str, Any]]  # arch_hash -> {"arch", "distillation"}


@dataclass(frozen=True)
class Settings:
    seeds: tuple[int, ...]
    budget_s: float
    steps: int  # distillation steps per trial
    teacher_epochs: int
    probe_students: int
    quick: bool
    long_steps: int  # 0: no long-trained fronts
    long_device: str
    long_workers: int
    variants: tuple[str, ...]  # of VARIANTS; the default always
    data_name: str  # names the data in the done file's keys: "mnist-t10k" or "fashion"
    data: str = DATA  # the search's source (a file under the run's work folder for Fashion-MNIST)
    test_data: str | None = None  # the TEST split's source where it is not the data's own


def curve(students: list[Student], budget_ms: float) -> list[tuple[float, float]]:
    """(time, hypervolume so far) after each finished trial; reference point: accuracy 0, latency the budget."""
    ordered = sorted(students, key=lambda s: s["elapsed"])
    return [(s["elapsed"], hypervolume([(o["accuracy"], o["latency_ms"]) for o in ordered[:i + 1]], (0.0, budget_ms)))
            for i, s in enumerate(ordered)]


def fronts_over_time(students: list[Student]) -> list[tuple[float, list[str]]]:
    """(time, the architectures on the validation front so far) after each finished trial."""
    ordered = sorted(students, key=lambda s: s["elapsed"])
    fronts = []
    for i, student in enumerate(ordered):
        front = non_dominated({k: (o["accuracy"], o["latency_ms"]) for k, o in enumerate(ordered[:i + 1])})
        fronts.append((student["elapsed"], sorted({ordered[k]["arch_hash"] for k in front})))
    return fronts


def long_curve(students: list[Student], long_test: dict[str, float], budget_ms: float) -> list[tuple[float, float]]:
    """(time, hypervolume of the validation front so far, its students scored by their long-trained TEST accuracy at
    the latency the search measured)."""
    latency = {s["arch_hash"]: s["latency_ms"] for s in students}
    return [(t, hypervolume([(long_test[h], latency[h]) for h in front], (0.0, budget_ms)))
            for t, front in fronts_over_time(students)]


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


def seed_teacher(seed: int, settings: Settings, workdir: Path) -> Path:
    """The built-in teacher trained on seed ``seed``'s training split (the search's split), as a file."""
    data = distill.load_dataset(settings.data, test_data=settings.test_data, seed=seed)
    teacher = distill.load_teacher("builtin", data, workdir / "teacher-cache", epochs=settings.teacher_epochs)
    teacher_file = workdir / f"teacher-{seed}.pt"
    torch.save(teacher.module, teacher_file)  # type: ignore[attr-defined]
    return teacher_file


def search(variant: str, teacher_file: Path, settings: Settings, seed: int, budget_ms: float,
           workdir: Path) -> tuple[list[Student], list[Student], Archs]:
    """``nas search`` with the variant's settings under the wall-clock budget: each feasible student it trained
    within the budget, each one early stopping stopped (no accuracy), and their architectures. Its clock includes
    caching the teacher's outputs."""
    name = f"{variant.replace(' ', '-')}-{seed}"
    config = nas.SearchConfig(data=settings.data, test_data=settings.test_data, teacher=str(teacher_file),
                              trials=10_000, timeout=settings.budget_s, latency_budget_ms=budget_ms, seed=seed,
                              steps=settings.steps, refine=0, out=str(workdir / name),
                              cache_dir=str(workdir / f"cache-{name}"), **VARIANTS[variant])
    start = time.time()
    study = nas.search(config)
    students, stopped, archs = [], [], {}
    for trial in study.get_trials(deepcopy=False, states=FINISHED):
        assert trial.datetime_complete is not None, "a finished trial has its completion time"
        elapsed = trial.datetime_complete.timestamp() - start
        status, key = trial.user_attrs.get("status"), trial.user_attrs.get("arch_hash")
        if status not in ("trained", "stopped_early") or elapsed > settings.budget_s:
            continue
        archs[key] = {"arch": trial.user_attrs["arch"], "distillation": trial.user_attrs.get("distillation", {})}
        if status == "trained":
            students.append({"elapsed": elapsed, "accuracy": trial.values[0], "latency_ms": trial.values[1],
                             "arch_hash": key})
        else:  # a stopped trial's latency is measured; its values are not told (pruned)
            stopped.append({"elapsed": elapsed, "latency_ms": objective_ms(trial.user_attrs["latency"]),
                            "arch_hash": key})
    return students, stopped, archs


def long_key(seed: int, key: str, distillation: dict[str, Any], settings: Settings) -> str:
    return json.dumps([settings.data_name, seed, key, distillation, settings.long_steps, settings.teacher_epochs],
                      sort_keys=True)


def read_done(path: Path | None) -> dict[str, dict[str, Any]]:
    if path is None or not path.is_file():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {record["key"]: record for record in records}


def long_run(config_values: dict[str, Any], key: str, arch: dict[str, Any], distillation: dict[str, Any],
             steps: int, output: Path) -> dict[str, Any]:
    """One long run, in a worker process: ``arch`` distilled for ``steps`` steps, its ONNX file scored on TEST."""
    start = time.perf_counter()
    # each process its own teacher-output cache: two processes never write one file
    config = nas.SearchConfig(**{**config_values, "cache_dir": f"{config_values['cache_dir']}-{os.getpid()}"})
    report = nas.export_arch(config, arch, distillation, None, output, max_steps=steps)
    return {"arch_hash": key, "steps": report.steps, "val_accuracy": report.score, "test_accuracy": report.test_score,
            "seconds": round(time.perf_counter() - start, 1), "device": config.device}


def long_train(seed: int, wanted: list[str], archs: Archs, teacher_file: Path, settings: Settings,
               budget_ms: float, workdir: Path, done_path: Path | None) -> dict[str, float]:
    """The TEST accuracy of each ``wanted`` architecture distilled for ``settings.long_steps`` steps, in
    ``settings.long_workers`` processes; long runs already in ``done_path`` are reused, new ones appended as they
    end."""
    done = read_done(done_path)
    config = nas.SearchConfig(data=settings.data, test_data=settings.test_data, teacher=str(teacher_file),
                              seed=seed, latency_budget_ms=budget_ms, steps=settings.steps,
                              device=settings.long_device, out=str(workdir / f"long-{seed}"),
                              cache_dir=str(workdir / f"cache-long-{seed}"))
    keys = {key: long_key(seed, key, archs[key]["distillation"], settings) for key in wanted}
    missing = [key for key in wanted if keys[key] not in done]
    print(f"seed {seed}: {len(wanted)} students to long-train, {len(wanted) - len(missing)} already done", flush=True)
    with ProcessPoolExecutor(settings.long_workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        runs = [pool.submit(long_run, config.to_dict(), key, archs[key]["arch"], archs[key]["distillation"],
                            settings.long_steps, workdir / f"long-{seed}-{key}.onnx") for key in missing]
        for finished, run in enumerate(as_completed(runs), 1):
            result = run.result()
            record = {"key": keys[result["arch_hash"]], "seed": seed, **result}
            done[record["key"]] = record
            if done_path is not None:
                with done_path.open("a") as file:
                    file.write(json.dumps(record) + "\n")
            print(f"  seed {seed} long {finished}/{len(missing)}: {record['arch_hash']} TEST "
                  f"{record['test_accuracy']:.4f} ({record['seconds']:.0f} s)", flush=True)
    return {key: done[keys[key]]["test_accuracy"] for key in wanted}


def lead_over_faster(key: str, points: dict[str, tuple[float, float]]) -> float | None:
    """How far ``key``'s accuracy is above the best of the strictly faster ``(accuracy, latency)`` points; None when
    none is faster."""
    accuracy, latency = points[key]
    faster = [other for other, other_latency in points.values() if other_latency < latency]
    return accuracy - max(faster) if faster else None


def summarise(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "values": values}


def run_of(seed: int, students: dict[str, list[Student]], stopped: dict[str, list[Student]], budget_ms: float,
           budget_s: float, long_test: dict[str, float] | None = None) -> dict[str, Any]:
    """One seed's variants: final hypervolume, feasible students, best accuracy, curve; when the default reached
    each variant's final hypervolume; and with ``long_test``, the same of the long-trained fronts, the stopped
    students on the seed's long-trained front (with their lead over the best faster student) and the share of that
    front's hypervolume left without the variant's stopped students."""
    curves = {variant: curve(trained, budget_ms) for variant, trained in students.items()}
    final = {variant: hv_curve[-1][1] if hv_curve else 0.0 for variant, hv_curve in curves.items()}
    variants: dict[str, dict[str, Any]] = {}
    for variant, trained in students.items():
        reach = time_to_reach(curves["default"], final[variant]) if final[variant] > 0 else 0.0
        variants[variant] = {"hypervolume": final[variant], "feasible_trained": len(trained),
                             "best_accuracy": max((s["accuracy"] for s in trained), default=0.0),
                             "default_reached_it_s": reach,
                             "default_reached_it_fraction": None if reach is None else reach / budget_s,
                             "curve": curves[variant], "students": trained, "stopped": stopped[variant]}
    result: dict[str, Any] = {"seed": seed, "variants": variants}
    if long_test is not None:
        latency = {s["arch_hash"]: s["latency_ms"] for group in (*students.values(), *stopped.values()) for s in group}
        # the seed's true front: of the feasible students (a search over budget may have stopped slower ones)
        feasible = {key: (accuracy, latency[key]) for key, accuracy in long_test.items() if latency[key] <= budget_ms}
        front = non_dominated(feasible)
        true_hypervolume = hypervolume(feasible.values(), (0.0, budget_ms))
        result.update(long_test=long_test, long_front=sorted(front))
        long_curves = {variant: long_curve(trained, long_test, budget_ms) for variant, trained in students.items()}
        for variant, hv_curve in long_curves.items():
            final_long = hv_curve[-1][1] if hv_curve else 0.0
            reach = time_to_reach(long_curves["default"], final_long) if final_long > 0 else 0.0
            # issue 12's early-stopping target: 98% of the front without it, in at most 60% of the time
            reach_98 = time_to_reach(long_curves["default"], LONG_SHARE * final_long) if final_long > 0 else 0.0
            removed = {s["arch_hash"] for s in stopped[variant]}
            removed_from_front = sorted(removed & front)
            left = hypervolume([point for key, point in feasible.items() if key not in removed], (0.0, budget_ms))
            variants[variant].update(long_hypervolume=final_long, long_curve=hv_curve,
                                     default_reached_it_long_fraction=None if reach is None else reach / budget_s,
                                     default_reached_98_long_fraction=None if reach_98 is None else reach_98 / budget_s,
                                     stopped_on_long_front=removed_from_front,
                                     stopped_front_leads={key: lead_over_faster(key, feasible)
                                                          for key in removed_from_front},
                                     long_front_left_without_stopped=left / true_hypervolume)
    return result


def summary(runs: list[dict[str, Any]], variants: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per variant over seeds: hypervolume, its ratio to the default's, students, and the default's time to reach it."""
    table = {}
    for variant in variants:
        rows = [run["variants"][variant] for run in runs]
        defaults = [run["variants"]["default"]["hypervolume"] for run in runs]
        fractions = [r["default_reached_it_fraction"] for r in rows]
        table[variant] = {
            "hypervolume": summarise([r["hypervolume"] for r in rows]),
            "ratio_to_default": summarise([r["hypervolume"] / d if d > 0 else float("nan")
                                           for r, d in zip(rows, defaults)]),
            "feasible_trained": summarise([float(r["feasible_trained"]) for r in rows]),
            "stopped_early": summarise([float(len(r["stopped"])) for r in rows]),
            "best_accuracy": summarise([r["best_accuracy"] for r in rows]),
            "default_reached_it_worst_fraction": None if None in fractions else max(fractions)}
        if all("long_hypervolume" in r for r in rows):
            long_defaults = [run["variants"]["default"]["long_hypervolume"] for run in runs]
            long_fractions = [r["default_reached_it_long_fraction"] for r in rows]
            fractions_98 = [r["default_reached_98_long_fraction"] for r in rows]
            table[variant].update(
                long_hypervolume=summarise([r["long_hypervolume"] for r in rows]),
                long_ratio_to_default=summarise([r["long_hypervolume"] / d if d > 0 else float("nan")
                                                 for r, d in zip(rows, long_defaults)]),
                default_reached_it_long_worst_fraction=None if None in long_fractions else max(long_fractions),
                default_reached_98_long_worst_fraction=None if None in fractions_98 else max(fractions_98),
                stopped_on_long_front=sum(len(r["stopped_on_long_front"]) for r in rows),
                long_front_left_without_stopped=summarise([r["long_front_left_without_stopped"] for r in rows]))
    return table


def reached(worst: float | None) -> str:
    return "never (one seed or more)" if worst is None else f"{worst:.0%} of the budget"


def report(table: dict[str, dict[str, Any]]) -> str:
    long = all("long_hypervolume" in row for row in table.values())
    lines = ["variant               | hypervolume         | / default     | feasible trained | best accuracy | "
             "default reached it (worst)" + (" | long-trained: hypervolume | / default | default reached it | "
                                             "98% of it | stopped early, on the long front (all seeds), the long "
                                             "front's hypervolume left without them (least)" if long else "")]
    for variant, row in table.items():
        line = (f"{variant:<21} | {row['hypervolume']['mean']:.5f} ± {row['hypervolume']['std']:.5f} | "
                f"{row['ratio_to_default']['mean']:.3f} ± {row['ratio_to_default']['std']:.3f} | "
                f"{row['feasible_trained']['mean']:>16.1f} | {row['best_accuracy']['mean']:>13.4f} | "
                f"{reached(row['default_reached_it_worst_fraction'])}")
        if long:
            line += (f" | {row['long_hypervolume']['mean']:.5f} ± {row['long_hypervolume']['std']:.5f} | "
                     f"{row['long_ratio_to_default']['mean']:.3f} ± {row['long_ratio_to_default']['std']:.3f} | "
                     f"{reached(row['default_reached_it_long_worst_fraction'])} | "
                     f"{reached(row['default_reached_98_long_worst_fraction'])} | "
                     f"{row['stopped_early']['mean']:.1f}, {row['stopped_on_long_front']}, "
                     f"{min(row['long_front_left_without_stopped']['values']):.3%}")
        lines.append(line)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, 40 s per search, 60 steps per trial")
    parser.add_argument("--budget-s", type=float, help="wall-clock budget of each search (default 180, quick 40)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default: 0 1 2; quick 0)")
    parser.add_argument("--output", type=Path, help="JSON file (default: bench/results/search_efficiency[-quick].json)")
    parser.add_argument("--long-steps", type=int, default=0,
                        help="distil every student ever on a front this many steps and score it on TEST (default 0: "
                             "off)")
    parser.add_argument("--long-device", default="cpu", help="where the long runs train (default: cpu)")
    parser.add_argument("--long-workers", type=int, default=1, help="processes for the long runs (default: 1)")
    parser.add_argument("--done", type=Path, help="JSON-lines file of the long runs: reused, and appended to")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS)[1:], default=list(VARIANTS)[1:],
                        help="the variants beside the default (default: all)")
    parser.add_argument("--fashion", type=Path, nargs="?", const=FASHION,
                        help=f"Fashion-MNIST instead of MNIST: its IDX files (default: {FASHION})")
    parser.add_argument("--reanalyse", type=Path, metavar="RESULTS",
                        help="recompute a results file's analysis from its students and long runs, and rewrite it")
    args = parser.parse_args(argv)
    if args.reanalyse:
        reanalyse(args.reanalyse)
        return 0
    if args.fashion and not (args.fashion / "train-images-idx3-ubyte.gz").is_file():
        parser.error(f"no Fashion-MNIST in {args.fashion}: apt-get install dataset-fashion-mnist, or pass --fashion "
                     f"DIR")
    settings = Settings(seeds=tuple(args.seeds or ((0,) if args.quick else (0, 1, 2))),
                        budget_s=args.budget_s or (40.0 if args.quick else 180.0),
                        steps=60 if args.quick else 120, teacher_epochs=3 if args.quick else 8,
                        probe_students=8 if args.quick else 24, quick=args.quick, long_steps=args.long_steps,
                        long_device=args.long_device, long_workers=args.long_workers,
                        variants=("default", *args.variants),
                        data_name="fashion" if args.fashion else "mnist-t10k")
    output = args.output or RESULTS / (f"search_efficiency{'-fashion' if args.fashion else ''}"
                                       f"{'-quick' if settings.quick else ''}.json")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(os.cpu_count() or 1)
    load_at_start = load_before()
    with tempfile.TemporaryDirectory(prefix="nas-bench-") as tmp:
        workdir = Path(tmp)
        if args.fashion:  # proxy_fidelity's subsets: fixed images, split anew per seed
            train_images, test_images = FASHION_IMAGES
            settings = replace(settings, data=subset(args.fashion, "train", train_images, 0, workdir / "train.npz"),
                               test_data=subset(args.fashion, "t10k", test_images, 0, workdir / "test.npz"))
        data = distill.load_dataset(settings.data, test_data=settings.test_data, seed=0)
        budget_ms = latency_budget(data, settings.probe_students, workdir)
        print(f"data {settings.data_name}: {len(data.train)} train / {len(data.val)} val / {len(data.test or ())} "
              f"TEST; latency budget {budget_ms:.4f} ms; {settings.budget_s:.0f} s per search, {settings.steps} "
              f"distillation steps per trial", flush=True)
        runs = []
        for seed in settings.seeds:
            teacher_file = seed_teacher(seed, settings, workdir)  # one file: every search of the seed, the same one
            students, stopped, archs = {}, {}, {}
            for variant in settings.variants:
                students[variant], stopped[variant], found = search(variant, teacher_file, settings, seed, budget_ms,
                                                                    workdir)
                archs.update(found)
                print(f"seed {seed} {variant}: {len(students[variant])} feasible students trained, "
                      f"{len(stopped[variant])} stopped early, hypervolume "
                      f"{curve(students[variant], budget_ms)[-1][1] if students[variant] else 0.0:.5f}", flush=True)
            long_test = None
            if settings.long_steps:
                wanted = {key for trained in students.values() for _, front in fronts_over_time(trained)
                          for key in front} | {s["arch_hash"] for group in stopped.values() for s in group}
                long_test = long_train(seed, sorted(wanted), archs, teacher_file, settings, budget_ms, workdir,
                                       args.done)
            runs.append(run_of(seed, students, stopped, budget_ms, settings.budget_s, long_test))
    result = {
        **header(load_at_start),
        "settings": {**asdict(settings), "latency_budget_ms": budget_ms, "refine": 0,
                     "variants": {variant: VARIANTS[variant] for variant in settings.variants},
                     "reference_point": {"accuracy": 0.0, "latency_ms": budget_ms}},
        "runs": runs,
    }
    conclude(result, settings.variants, output)
    return 0


def reanalyse(path: Path) -> None:
    """Recompute a results file's analysis (curves, fronts, summary) from the students and long runs it holds."""
    result = json.loads(path.read_text())
    budget_ms, budget_s = result["settings"]["latency_budget_ms"], result["settings"]["budget_s"]
    result["runs"] = [run_of(run["seed"], {variant: row["students"] for variant, row in run["variants"].items()},
                             {variant: row["stopped"] for variant, row in run["variants"].items()}, budget_ms,
                             budget_s, run.get("long_test")) for run in result["runs"]]
    conclude(result, tuple(result["settings"]["variants"]), path)


def conclude(result: dict[str, Any], variants: Sequence[str], output: Path) -> None:
    """Summarise ``result``'s runs over seeds, print the report and the issue-5 target, and write it."""
    table = result["summary"] = summary(result["runs"], variants)
    print(report(table))
    if "naive" in table:
        naive_worst = table["naive"]["default_reached_it_worst_fraction"]
        result["target_met"] = naive_worst is not None and naive_worst <= TARGET_TIME_FRACTION
        print(f"default reaches the naive search's final hypervolume within "
              f"{'never' if naive_worst is None else f'{naive_worst:.0%}'} of the budget at worst (target ≤ "
              f"{TARGET_TIME_FRACTION:.0%}): {'PASS' if result['target_met'] else 'FAIL'}")
    write_json(result, output)


if __name__ == "__main__":
    raise SystemExit(main())
