"""A Fashion-MNIST search under a latency budget on this CPU, the front's students exported, and two published CNNs
built, trained and measured the same way, side by side on TEST accuracy.

Run from the repository root (``apt-get install dataset-fashion-mnist`` first)::

    python bench/fashion_front.py            # the full run: 60k images, the search and export inside 30 minutes
    python bench/fashion_front.py --quick    # smoke run: 3,000 training images, 3 trials (fashion_front-quick.json)
    python bench/fashion_front.py --cache DIR  # the teacher and its outputs from DIR (a run's cache), not retrained

1. The built-in teacher trained from scratch in a fresh cache (crops and mirrors, the tool's default epochs) and its
   outputs cached for the augmented views, timed apart: a user pays it once per data set (``--cache DIR``: loaded
   from a cache instead; the measurement cache is never reused).
2. ``nas.search`` on ``mnist:/usr/share/datasets/fashion-mnist`` (the 10k ``t10k`` files are the test split, never
   seen by the search; validation is carved from the 60k training images) with ``--augment standard``,
   ``--trials`` trials of ``--steps`` distillation steps and ``--refine`` refinements (sized for this 2-core CPU:
   a trained trial costs ~0.1 s a step here), under ``--latency-budget`` (default 0.25 ms: just under the smaller
   published CNN on this machine), then ``nas.export_trial`` of the front's students within the budget (at most
   ``--export`` of them, the most accurate first) for ``--export-steps``. Wall time of search + export.
3. The two published CNNs of ``bench/published_cnns.py`` (2-conv <100K parameters, published 0.925; TensorFlow's
   tutorial CNN, published 0.916) go through the same ``nas.export_arch`` with the searched students'
   distillation settings and epochs, and the same hwprofile settings: the same teacher, data, splits and
   measurement.
4. A table: validation and test accuracy of the teacher and of each exported ONNX file, params, MACs, measured
   latency. Targets: a searched student that beats each baseline on test accuracy at lower latency; the exported
   best's |validation - test| <= 0.01; search + export <= 30 minutes.

Results go to ``bench/results/fashion_front.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import distill
import nas
from distill.image.teachers import TorchTeacher
from nas.tasks import ImageTask
from published_cnns import PUBLISHED  # bench/ is on sys.path when a script runs
from _results import RESULTS, ROOT, checks_line, header, load_before, publish

FASHION = "mnist:/usr/share/datasets/fashion-mnist"
BASELINE_SPACE = f"{ROOT / 'bench' / 'published_cnns.py'}:PublishedCNNs"
TARGETS = {"wall_time_max_s": 1800.0, "val_test_gap_max": 0.01}


@dataclass(frozen=True)
class Settings:
    """What one run does; ``--quick`` shrinks it to a smoke run."""

    latency_budget_ms: float
    trials: int
    steps: int  # distillation steps of one trial
    refine: int
    teacher_epochs: int
    augment: str
    export: int  # front students exported
    export_steps: int
    data: str
    test_data: str | None  # None: the data's own test split
    quick: bool

    @classmethod
    def of(cls, args: argparse.Namespace) -> Settings:
        quick = args.quick
        return cls(latency_budget_ms=args.latency_budget, trials=args.trials or (3 if quick else 20),
                   steps=args.steps or (20 if quick else 300), refine=1 if quick else args.refine,
                   teacher_epochs=args.teacher_epochs or (1 if quick else distill.TEACHER_EPOCHS),
                   augment=args.augment, export=args.export or (1 if quick else 2),
                   export_steps=args.export_steps or (40 if quick else 3000), data=args.data or FASHION,
                   test_data=None, quick=quick)

    def search_config(self, out: Path, cache: Path, **changes: Any) -> nas.SearchConfig:
        """The search's settings."""
        values = dict(data=self.data, test_data=self.test_data, latency_budget_ms=self.latency_budget_ms,
                      trials=self.trials, steps=self.steps, refine=self.refine, teacher_epochs=self.teacher_epochs,
                      augment=self.augment, out=str(out), cache_dir=str(cache), measure_cache=False)
        return nas.SearchConfig(**{**values, **changes})


def teacher_row(config: nas.SearchConfig, workdir: Path) -> dict[str, Any]:
    """Train the built-in teacher and cache its outputs (what the search then loads), timed; its table row."""
    context = nas.load_context(config, workdir)
    start = time.perf_counter()
    validation = context.task.load_teacher()
    seconds = time.perf_counter() - start
    task = context.task
    assert isinstance(task, ImageTask) and isinstance(task.teacher, TorchTeacher) and task.data.test is not None
    module = task.teacher.module
    return {"name": "teacher (built-in)", "validation": validation,
            "test": distill.evaluate(module, task.data, task.data.test).accuracy, "test_ci95": None,
            "params": sum(p.numel() for p in module.parameters()), "macs": None, "latency_ms": None,
            "published_test": None, "seconds": seconds}


def row(name: str, report: nas.ExportReport, published: float | None = None) -> dict[str, Any]:
    """One line of the table, from an export's report."""
    return {"name": name, "validation": report.score, "test": report.test_score,
            "test_ci95": report.test_score_ci95, "params": report.params, "macs": report.macs,
            "latency_ms": report.latency_ms, "published_test": published}


def run(settings: Settings, workdir: Path, cache: Path) -> dict[str, Any]:
    """The search, the exports of its front and of the published CNNs, timed."""
    out = workdir / "search"
    config = settings.search_config(out, cache)
    teacher = teacher_row(config, workdir)
    start = time.perf_counter()
    study = nas.search(config)
    search_s = time.perf_counter() - start
    front = [record for record in nas.front_records(study) if record["latency_ms"] <= settings.latency_budget_ms]
    chosen = sorted(front, key=lambda record: -record["score"])[:settings.export]
    students, settings_of = [], {}
    for record in chosen:
        trial = study.trials[record["trial"]]
        settings_of = trial.user_attrs.get("distillation", {})
        report = nas.export_trial(config, study, str(record["trial"]), nas.EXPORT_EPOCHS,
                                  workdir / f"trial{record['trial']}.onnx", max_steps=settings.export_steps)
        students.append({**row(f"trial {record['trial']}", report), "arch": trial.user_attrs["arch"],
                         "search_score": record["score"]})
    total_s = time.perf_counter() - start
    baselines = []
    baseline_config = settings.search_config(workdir / "baselines", cache, space=BASELINE_SPACE,
                                             latency_budget_ms=None)
    for name, published in PUBLISHED.items():
        report = nas.export_arch(baseline_config, {"model": name}, settings_of, nas.EXPORT_EPOCHS,
                                 workdir / f"{name}.onnx", max_steps=settings.export_steps)
        baselines.append(row(name, report, published))
    return {"teacher_s": teacher["seconds"], "search_s": search_s, "search_and_export_s": total_s,
            "trials": len(study.trials), "front_within_budget": len(front), "teacher": teacher, "students": students,
            "baselines": baselines}


def checks(result: dict[str, Any]) -> dict[str, bool]:
    students, baselines = result["students"], result["baselines"]
    beats = {b["name"]: any(s["test"] > b["test"] and s["latency_ms"] < b["latency_ms"] for s in students)
             for b in baselines}
    best = max(students, key=lambda s: s["validation"]) if students else None
    return {**{f"beats_{name}": value for name, value in beats.items()},
            "val_test_gap": best is not None and abs(best["validation"] - best["test"]) <= TARGETS["val_test_gap_max"],
            "wall_time": result["search_and_export_s"] <= TARGETS["wall_time_max_s"]}


def report(results: dict[str, Any]) -> str:
    result = results["result"]
    lines = [f"Fashion-MNIST front under {results['settings']['latency_budget_ms']} ms: teacher (once) "
             f"{result['teacher_s']:.0f} s; {result['trials']} trials, search {result['search_s']:.0f} s, "
             f"search + export {result['search_and_export_s']:.0f} s",
             f"{'model':<18} {'val':>7} {'test':>7} {'published':>9} {'params':>9} {'MMACs':>7} {'latency ms':>10}"]
    for entry in [result["teacher"], *result["students"], *result["baselines"]]:
        published = "" if entry["published_test"] is None else f"{entry['published_test']:.3f}"
        macs = "" if entry["macs"] is None else f"{entry['macs'] / 1e6:.2f}"
        latency = "" if entry["latency_ms"] is None else f"{entry['latency_ms']:.4f}"
        lines.append(f"{entry['name']:<18} {entry['validation']:7.4f} {entry['test']:7.4f} {published:>9} "
                     f"{entry['params']:9d} {macs:>7} {latency:>10}")
    lines.append(checks_line(results["checks"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-budget", type=float, default=0.25, help="ms (default: 0.25)")
    parser.add_argument("--trials", type=int, help="search trials (default: 20; quick: 3)")
    parser.add_argument("--steps", type=int, help="distillation steps of a trial (default: 300; quick: 20)")
    parser.add_argument("--refine", type=int, default=3, help="front students refined (default: 3; quick: 1)")
    parser.add_argument("--teacher-epochs", type=int, help="built-in teacher's epochs (default: the tool's; quick: 1)")
    parser.add_argument("--augment", default="standard", choices=distill.AUGMENTATIONS,
                        help="the search's --augment (default: standard)")
    parser.add_argument("--export", type=int, help="front students exported (default: 2; quick: 1)")
    parser.add_argument("--export-steps", type=int, help="distillation steps of each export (default: 3000; quick: "
                                                         "40)")
    parser.add_argument("--cache", type=Path, help="a cache holding the teacher and its outputs (default: a fresh "
                                                   "one: the teacher is trained)")
    parser.add_argument("--data", help=f"the data (default: {FASHION}; quick: a 3,000-image subset of it)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 trials of 20 steps, 1 export of 40")
    args = parser.parse_args(argv)
    settings = Settings.of(args)
    load_at_start = load_before()
    with tempfile.TemporaryDirectory(prefix="bench-fashion-") as workdir:
        if settings.quick and args.data is None:
            data, test_data = subset(Path(workdir), 3000)
            settings = Settings(**{**asdict(settings), "data": data, "test_data": test_data})
        result = run(settings, Path(workdir), args.cache or Path(workdir) / "cache")
    results = {**header(load_at_start), "settings": {**asdict(settings), "cache": str(args.cache) if args.cache else None},
               "result": result, "targets": TARGETS}
    results["checks"] = checks(result)
    publish(results, report(results), RESULTS / f"fashion_front{'-quick' if settings.quick else ''}.json")
    return 0


def subset(workdir: Path, count: int) -> tuple[str, str]:
    """``npz:`` data of ``count`` Fashion-MNIST training images, and of 1,000 test images (a quick run)."""
    data = distill.load_dataset(FASHION)
    assert data.test is not None, "Fashion-MNIST's t10k files are its test split"
    paths = workdir / "fashion-train.npz", workdir / "fashion-test.npz"
    for path, split, size in zip(paths, (data.train, data.test), (count, 1000)):
        np.savez(path, x=np.asarray(split.x[:size]), y=np.asarray(split.y[:size]))
    return f"npz:{paths[0]}", f"npz:{paths[1]}"


if __name__ == "__main__":
    sys.exit(main())
