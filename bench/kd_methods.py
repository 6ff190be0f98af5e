"""Distillation methods compared on MNIST at an equal budget: accuracy per method against no KD, and step time.

Run from the repository root (about 7.5 minutes on a 2-core CPU; no GPU needed)::

    python bench/kd_methods.py            # full run: 3 seeds x every method, 600 steps each
    python bench/kd_methods.py --quick    # smoke run: 1 seed, 20 steps, written to kd_methods-quick.json

Setting. The teacher is the built-in CNN trained on the whole training split of MNIST's test set
(``../shared/datasets/mnist-t10k``: 8000 training and 2000 validation images). A second built-in teacher
(another seed) serves multi-teacher KD. The student is the ``mbconv`` space's smallest architecture. Each
method distils it from the cached teacher outputs on a *transfer set* of 500 labelled training images
(6%, stratified, the same for every run), for the same 600 steps (batch 64, AdamW, lr 0.03 one-cycle, T = 4),
and is scored on the 2000 validation images. A small transfer set is the regime of Hinton et al. 2015
(§ "Soft targets as regularizers": 3% of the data), where the teacher's soft targets carry information
the few hard labels lack. (On all 8000 images, 300 steps, the tiny student underfits and KD did not
beat plain cross-entropy when we tried: 0.896 ± 0.014 against 0.902 ± 0.017 over 3 seeds.) KD's gain
here is a few points, of the order of the seeds' spread; the paired gains (same seed, same initial weights
and batch order) are printed too.

Every method runs with its paper's default options and weight 1, and at its paper's balance of
cross-entropy and distillation (``alpha``, see ``METHODS``); feature- and relation-based terms pair the
student's stages with the teacher's maps of the same size (``distill.plan_features``), read from the
cache. The figures are printed and written to ``bench/results/kd_methods.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn as nn
from sklearn.model_selection import train_test_split

import distill
from search_spaces import get_space, seeded_build
from _results import RESULTS, ROOT, header, load_before, publish  # bench/ is on sys.path when a script runs

DATA = "mnist:" + str(ROOT.parent / "shared" / "datasets" / "mnist-t10k")
TRANSFER_SIZE = 500
BASE = distill.TrainConfig(steps=600, batch_size=64, lr=0.03, temperature=4.0, alpha=0.9)

# (row label, TrainConfig changes). Each method runs at its paper's balance of cross-entropy and distillation:
# Hinton KD and its relatives mix them as alpha · KD + (1 − alpha) · CE with alpha = 0.9; the later papers
# write CE + λ · L, which is alpha = 0.5 (CE : L = 1 : 1) with the method's own λ (its options' defaults).
_ADDED = {"alpha": 0.5}
METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("none", {"kd": "none"}),
    ("kd", {"kd": "kd"}),
    ("dkd", {"kd": "dkd", **_ADDED}),
    ("dist", {"kd": "dist", **_ADDED}),
    ("mkd (2 teachers, confidence)", {"kd": [{"name": "mkd", "confidence": True}]}),
    ("fitnets", {"kd": "fitnets", **_ADDED}),
    ("at", {"kd": "at", **_ADDED}),
    ("rkd", {"kd": "rkd", **_ADDED}),
    ("sp", {"kd": "sp", **_ADDED}),
    ("contrastive", {"kd": "contrastive", **_ADDED}),
    ("dml", {"kd": "dml", **_ADDED}),
    ("self", {"kd": "self", **_ADDED}),
    ("ema", {"kd": "ema", **_ADDED}),
    ("kd+at", {"kd": "kd+at"}),
    ("kd+rkd", {"kd": "kd+rkd"}),
    ("kd, T decay 4->1", {"kd": "kd", "temperature_schedule": "decay"}),
    ("kd+at, auto-alpha", {"kd": "kd+at", "auto_alpha": True}),
)


def transfer_set(data: distill.Dataset, outputs: Sequence[distill.TeacherOutputs],
                 size: int) -> tuple[distill.Dataset, list[distill.TeacherOutputs]]:
    """A fixed stratified subset of the training split, with the matching rows of every teacher's cache."""
    index, _ = train_test_split(np.arange(len(data.train)), train_size=size, stratify=data.train.y, random_state=0)
    index = np.sort(index)
    subset = dataclasses.replace(data, train=distill.ImageSplit(data.train.x[index], data.train.y[index]),
                                 fingerprint=f"{data.fingerprint}-transfer{size}")
    rows = [distill.TeacherOutputs(train=np.asarray(o.train[index]), val=o.val,
                                   features={layer: np.asarray(a[index]) for layer, a in o.features.items()})
            for o in outputs]
    return subset, rows


def smallest_student(data: distill.Dataset, seed: int) -> nn.Module:
    """The ``mbconv`` space's smallest student as a search of ``seed`` builds it."""
    space = get_space("mbconv")
    return seeded_build(space, space.smallest(), seed, data.input_shape, data.num_classes)


def run_method(data: distill.Dataset, outputs: list[distill.TeacherOutputs], plan: distill.FeaturePlan,
               config: distill.TrainConfig) -> distill.DistillResult:
    return distill.distill(smallest_student(data, config.seed), data, outputs, config, plan=plan)


def summarise(label: str, changes: dict[str, Any], results: list[distill.DistillResult]) -> dict[str, Any]:
    accuracies = [r.accuracy for r in results]
    return {
        "method": label,
        "config": changes,
        "alpha": changes.get("alpha", BASE.alpha),
        "accuracy": accuracies,
        "accuracy_mean": statistics.fmean(accuracies),
        "accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "step_ms": statistics.fmean(1e3 * r.seconds / r.steps for r in results),
        **{f"{key}_mean": statistics.fmean(getattr(r.metrics, key) for r in results)
           for key in ("retention", "agreement", "kl_to_teacher", "ece")},
        "accuracy_ci_seed0": [results[0].metrics.accuracy_low, results[0].metrics.accuracy_high],
    }


def verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Does Hinton KD beat no KD by more than the seeds' spread (the sum of the two standard deviations)?

    Also the paired gains: seed s of KD against seed s of no KD (same initial weights and batch order).
    """
    by_name = {row["method"]: row for row in rows}
    none, kd = by_name["none"], by_name["kd"]
    gain = kd["accuracy_mean"] - none["accuracy_mean"]
    spread = kd["accuracy_std"] + none["accuracy_std"]
    return {"kd_gain": gain, "spread": spread, "kd_beats_baseline": gain > spread,
            "kd_paired_gains": [a - b for a, b in zip(kd["accuracy"], none["accuracy"])],
            "above_baseline": [row["method"] for row in rows
                               if row["accuracy_mean"] - none["accuracy_mean"] > row["accuracy_std"] + none["accuracy_std"]]}


def report(results: dict[str, Any]) -> str:
    lines = [f"Teacher accuracy {results['teacher_accuracy']:.4f} (second teacher {results['second_teacher_accuracy']:.4f}); "
             f"student: mbconv smallest; transfer set {results['settings']['transfer_size']} images; "
             f"{results['settings']['steps']} steps; {len(results['settings']['seeds'])} seeds",
             f"{'method':<30} {'alpha':>5} {'accuracy':>17} {'vs none':>8} {'retention':>9} {'agree':>6} {'KL':>6} "
             f"{'ECE':>6} {'ms/step':>8}"]
    none = results["methods"][0]["accuracy_mean"]
    for row in results["methods"]:
        alpha = "auto" if row["config"].get("auto_alpha") else "-" if row["method"] == "none" else row["alpha"]
        lines.append(f"{row['method']:<30} {alpha:>5} {row['accuracy_mean']:.4f} ± {row['accuracy_std']:.4f} "
                     f"{row['accuracy_mean'] - none:+8.4f} {row['retention_mean']:9.4f} {row['agreement_mean']:6.3f} "
                     f"{row['kl_to_teacher_mean']:6.3f} {row['ece_mean']:6.3f} {row['step_ms']:8.2f}")
    v = results["verdict"]
    lines.append(f"Hinton KD - none: {v['kd_gain']:+.4f}; seeds' spread (sum of std): {v['spread']:.4f}; "
                 f"KD beats the baseline: {v['kd_beats_baseline']}; paired gains per seed: "
                 f"{', '.join(f'{g:+.4f}' for g in v['kd_paired_gains'])}")
    lines.append(f"Above the baseline by more than the spread: {', '.join(v['above_baseline']) or 'none'}")
    lines.append(f"Teacher cache: {results['cache_bytes']} bytes (logits + features); teachers trained and cached in "
                 f"{results['teacher_s']:.1f} s; total {results['total_s']:.1f} s")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 20 steps, 1-epoch teachers")
    parser.add_argument("--seeds", type=int, help="seeds per method (default: 3; quick: 1)")
    parser.add_argument("--steps", type=int, help="training steps per run (default: 600; quick: 20)")
    parser.add_argument("--cache-dir", type=Path, help="teacher cache to reuse (default: a fresh temporary one)")
    parser.add_argument("--output", type=Path, help="JSON file (default: bench/results/kd_methods[-quick].json)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seeds = list(range(args.seeds or (1 if args.quick else 3)))
    steps = args.steps or (20 if args.quick else BASE.steps)
    teacher_epochs = 1 if args.quick else 3
    output = args.output or RESULTS / ("kd_methods-quick.json" if args.quick else "kd_methods.json")
    load_at_start = load_before()
    start = time.perf_counter()
    data = distill.load_dataset(DATA)
    with tempfile.TemporaryDirectory(prefix="bench-kd-") as tmp:
        cache = args.cache_dir or Path(tmp)
        print(f"Training/loading two teachers ({teacher_epochs} epochs) and caching their outputs ...", flush=True)
        teacher = distill.load_teacher("builtin", data, cache, epochs=teacher_epochs, seed=0)
        second = distill.load_teacher("builtin", data, cache, epochs=teacher_epochs, seed=1)
        plan = distill.plan_features(smallest_student(data, 0), teacher.module, data.input_shape)
        layers = list(dict.fromkeys(layer for _, changes in METHODS
                                    for layer in distill.teacher_layers(changes["kd"], plan)))
        outputs = [distill.teacher_outputs(teacher, data, cache, features=layers),
                   distill.teacher_outputs(second, data, cache)]
        teacher_s = time.perf_counter() - start
        subset, rows_outputs = transfer_set(data, outputs, TRANSFER_SIZE)
        rows = []
        for label, changes in METHODS:
            results = [run_method(subset, rows_outputs, plan,
                                  dataclasses.replace(BASE, steps=steps, seed=seed, **changes)) for seed in seeds]
            rows.append(summarise(label, changes, results))
            print(f"  {label:<30} {rows[-1]['accuracy_mean']:.4f} ± {rows[-1]['accuracy_std']:.4f}  "
                  f"{rows[-1]['step_ms']:.2f} ms/step", flush=True)
        results: dict[str, Any] = {
            **header(load_at_start),
            "settings": {**{k: v for k, v in dataclasses.asdict(BASE).items() if k not in ("kd", "seed")},
                         "steps": steps, "seeds": seeds, "data": DATA, "transfer_size": TRANSFER_SIZE,
                         "teacher_epochs": teacher_epochs, "quick": args.quick},
            "plan": dataclasses.asdict(plan),
            "teacher_accuracy": outputs[0].accuracy(data),
            "second_teacher_accuracy": outputs[1].accuracy(data),
            "cache_bytes": outputs[0].nbytes + outputs[1].nbytes,
            "teacher_s": teacher_s,
            "methods": rows,
        }
    results["verdict"] = verdict(rows)
    results["total_s"] = time.perf_counter() - start
    publish(results, report(results), output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
