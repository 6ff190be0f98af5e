"""fp32 students only, or fp32 and int8 mixed: which search returns the better front in the same wall time, judged on
the TEST accuracy of the exported files?

Run from the repository root (``apt-get install dataset-fashion-mnist`` first)::

    python bench/precision_front.py              # Fashion-MNIST, two searches of 8 minutes each, their fronts exported
    python bench/precision_front.py --seeds 0 1 2  # the same for three sampler seeds (one split, one teacher)
    python bench/precision_front.py --quick      # smoke run: 3,000 training images, 1-minute searches
    python bench/precision_front.py --cache DIR  # the teacher and its outputs from DIR (a run's cache), not retrained

1. The built-in teacher and its outputs, loaded from ``--cache`` or trained once (timed apart: both searches use it).
2. For each of ``--seeds``, two searches with the same settings, sampler seed and ``--timeout`` (``--minutes``):
   ``--precision fp32`` and ``--precision search`` (each trial chooses fp32 or int8, and its distillation scores the
   student at both; an int8 student's objectives come from its quantized file). Trials of ``--steps`` distillation
   steps, under ``--latency-budget``, the search's default refinement.
3. Every student of each front within the budget (at most ``--export``, evenly spaced over its latency range, the
   fastest and the slowest included) exported by ``nas.export_trial`` for ``--export-steps``; an int8 one with
   ``qat=True`` (quantized after the long fp32 distillation, then quantization-aware fine-tuning): its test accuracy
   as quantized after the fp32 distillation (PTQ) and after the fine-tuning (QAT), beside the fp32 file's.
4. The hypervolume of each exported front (TEST accuracy, measured latency; reference point: accuracy 0, latency the
   budget; ``nas.hypervolume``). Targets: the mixed front's hypervolume above the fp32 front's (mean over the
   seeds), and every exported int8 student within 0.5 points of its fp32 file's test accuracy after QAT.

Printed and written to ``bench/results/precision_front.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import distill
import nas
from _results import (RESULTS, checks_line, evenly_spaced, header, load_before,  # bench/ is on sys.path
                      publish)
from fashion_front import FASHION, subset, teacher_row

TARGETS = {"int8_drop_max": 0.005}
PRECISIONS = ("fp32", "search")


@dataclass(frozen=True)
class Settings:
    """What one run does; ``--quick`` shrinks it to a smoke run."""

    latency_budget_ms: float
    minutes: float  # each search's --timeout
    steps: int
    export: int
    export_steps: int
    data: str
    test_data: str | None
    quick: bool
    seeds: tuple[int, ...]

    def search_config(self, out: Path, cache: Path, **changes: Any) -> nas.SearchConfig:
        values = dict(data=self.data, test_data=self.test_data, latency_budget_ms=self.latency_budget_ms,
                      trials=10_000, steps=self.steps, timeout=60 * self.minutes, out=str(out), cache_dir=str(cache),
                      measure_cache=False, teacher_epochs=1 if self.quick else distill.TEACHER_EPOCHS)
        return nas.SearchConfig(**{**values, **changes})


def exported(config: nas.SearchConfig, study: Any, record: dict[str, Any], settings: Settings,
             workdir: Path) -> dict[str, Any]:
    """One front student exported (int8 ones with QAT): its test accuracy, latency and quantization record."""
    precision = record.get("precision", "fp32")
    report = nas.export_trial(config, study, str(record["trial"]), nas.EXPORT_EPOCHS,
                              workdir / f"{config.precision}-trial{record['trial']}.onnx",
                              max_steps=settings.export_steps, qat=precision == "int8")
    entry = {"trial": record["trial"], "precision": precision, "search_score": record["score"],
             "search_latency_ms": record["latency_ms"], "validation": report.score, "test": report.test_score,
             "latency_ms": report.latency_ms, "params": report.params, "size_bytes": report.size_bytes,
             "quantization": report.quantization}
    if report.quantization is not None:  # int8: against the distilled fp32 file, before and after QAT
        ptq, qat = report.quantization["ptq"], report.quantization["qat"]
        entry.update(fp32_test=ptq["test_accuracy_fp32"], ptq_test=ptq["test_accuracy_int8"],
                     qat_test=qat["test_accuracy_int8"], qat_kept=qat["kept"],
                     drop=ptq["test_accuracy_fp32"] - report.test_score)
    return entry


def front_of(precision: str, seed: int, settings: Settings, workdir: Path, cache: Path) -> dict[str, Any]:
    """One search at ``precision`` with ``seed``, timed, and its front within the budget exported."""
    config = settings.search_config(workdir / f"{precision}-seed{seed}", cache, precision=precision,
                                    sampler_seed=seed)
    start = time.perf_counter()
    study = nas.search(config)
    search_s = time.perf_counter() - start
    front = [record for record in nas.front_records(study) if record["latency_ms"] <= settings.latency_budget_ms]
    chosen = evenly_spaced(sorted(front, key=lambda record: record["latency_ms"]), settings.export)
    students = [exported(config, study, record, settings, workdir) for record in chosen]
    points = [(s["test"], s["latency_ms"]) for s in students if s["latency_ms"] <= settings.latency_budget_ms]
    trained = [t for t in study.trials if t.user_attrs.get("status") == "trained"]
    return {"search_s": search_s, "trials": len(study.trials), "trained": len(trained),
            "siblings": sum(nas.SIBLING_ATTR in t.user_attrs for t in study.trials),
            "int8_trials": sum(t.user_attrs.get("precision") == "int8" for t in study.trials),
            "front_within_budget": len(front), "students": students,
            "hypervolume": nas.hypervolume(points, (0.0, settings.latency_budget_ms))}


def summary(runs: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Each precision's TEST hypervolume over the seeds (mean, each), and the seeds where the mixed front's is above."""
    volumes = {precision: [fronts[precision]["hypervolume"] for fronts in runs.values()] for precision in PRECISIONS}
    return {"hypervolume": volumes, "mean_hypervolume": {p: sum(v) / len(v) for p, v in volumes.items()},
            "seeds_mixed_above": sum(mixed > fp32 for fp32, mixed in zip(volumes["fp32"], volumes["search"]))}


def checks(runs: dict[str, dict[str, dict[str, Any]]], overall: dict[str, Any]) -> dict[str, bool]:
    int8 = [s for fronts in runs.values() for s in fronts["search"]["students"] if s["precision"] == "int8"]
    mean = overall["mean_hypervolume"]
    return {"mixed_hypervolume_above_fp32": mean["search"] > mean["fp32"],
            "int8_drop_after_qat": bool(int8) and all(s["drop"] <= TARGETS["int8_drop_max"] for s in int8)}


def report(results: dict[str, Any]) -> str:
    settings = results["settings"]
    lines = [f"Fashion-MNIST, latency budget {settings['latency_budget_ms']} ms, {settings['minutes']} min per search "
             f"(teacher once: {results['teacher_s']:.0f} s)"]
    for seed, fronts in results["runs"].items():
        lines.append(f"seed {seed}:")
        lines += front_lines(fronts)
    overall, seeds = results["summary"], len(results["runs"])
    lines.append(f"TEST hypervolume, mean over {seeds} seed(s): " + ", ".join(
        f"{precision} {volume:.5f}" for precision, volume in overall["mean_hypervolume"].items())
        + f"; mixed above fp32 in {overall['seeds_mixed_above']} of {seeds}")
    lines.append(checks_line(results["checks"]))
    return "\n".join(lines)


def front_lines(fronts: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for precision, front in fronts.items():
        lines.append(f"--precision {precision}: {front['trials']} trials ({front['trained']} trained, "
                     f"{front['int8_trials']} int8, {front['siblings']} siblings) in {front['search_s']:.0f} s; "
                     f"front within budget {front['front_within_budget']}, exported {len(front['students'])}; "
                     f"TEST hypervolume {front['hypervolume']:.5f}")
        for s in front["students"]:
            extra = "" if s["quantization"] is None else (
                f"  TEST fp32 {s['fp32_test']:.4f}, int8 PTQ {s['ptq_test']:.4f}, QAT {s['qat_test']:.4f} "
                f"({'QAT' if s['qat_kept'] else 'PTQ'} file kept on validation; drop {s['drop']:+.4f})")
            lines.append(f"  trial {s['trial']:>3} {s['precision']:<4} val {s['validation']:.4f} TEST {s['test']:.4f} "
                         f"{s['latency_ms']:.4f} ms {s['size_bytes'] / 1000:.0f} kB{extra}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-budget", type=float, default=0.25, help="ms (default: 0.25)")
    parser.add_argument("--minutes", type=float, help="each search's --timeout (default: 8; quick: 1)")
    parser.add_argument("--steps", type=int, help="distillation steps of a trial (default: 300; quick: 20)")
    parser.add_argument("--export", type=int, help="front students exported per search (default: 4; quick: 1)")
    parser.add_argument("--export-steps", type=int, help="steps of each export (default: 1500; quick: 40)")
    parser.add_argument("--cache", type=Path, help="a cache holding the teacher and its outputs (default: a fresh "
                                                   "one: the teacher is trained)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="sampler seeds (--sampler-seed), both "
                                                                          "searches each (default: 0)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3,000 images, 1-minute searches")
    args = parser.parse_args(argv)
    quick = args.quick
    settings = Settings(latency_budget_ms=args.latency_budget, minutes=args.minutes or (1 if quick else 8),
                        steps=args.steps or (20 if quick else 300), export=args.export or (1 if quick else 4),
                        export_steps=args.export_steps or (40 if quick else 1500), data=FASHION, test_data=None,
                        quick=quick, seeds=tuple(args.seeds))
    load_at_start = load_before()
    with tempfile.TemporaryDirectory(prefix="bench-precision-front-") as tmp:
        workdir = Path(tmp)
        if quick:
            data, test_data = subset(workdir, 3000)
            settings = Settings(**{**asdict(settings), "data": data, "test_data": test_data})
        cache = args.cache or workdir / "cache"
        teacher = teacher_row(settings.search_config(workdir / "teacher", cache), workdir)
        runs = {str(seed): {precision: front_of(precision, seed, settings, workdir, cache) for precision in PRECISIONS}
                for seed in settings.seeds}
    cache_name = str(args.cache) if args.cache else None
    overall = summary(runs)
    results = {**header(load_at_start), "settings": {**asdict(settings), "cache": cache_name},
               "teacher_s": teacher["seconds"], "teacher": teacher, "runs": runs, "summary": overall,
               "targets": TARGETS, "checks": checks(runs, overall)}
    publish(results, report(results), RESULTS / f"precision_front{'-quick' if quick else ''}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
