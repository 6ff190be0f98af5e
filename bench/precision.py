"""INT8 against fp32, student by student: how much faster (or slower) the quantized file runs on this CPU, and how much
accuracy it loses.

Run from the repository root (``apt-get install dataset-fashion-mnist`` for the full run)::

    python bench/precision.py            # full run: 20 students on MNIST (t10k files) and on Fashion-MNIST
    python bench/precision.py --quick    # smoke run: 20 students on digits, short training (precision-quick.json)

For each data set, the built-in teacher is loaded (trained once, cached in ``--cache-dir``), and for each of the first
``--students`` architectures a seeded random sampler draws from the ``mbconv`` space (``nas.random_archs``, the
students a search starts with):

1. the student is distilled for ``--epochs`` from the cached teacher outputs (the search's default settings) and
   exported to ONNX (fp32), then quantized by ``hwprofile.quantize_int8`` (ONNX Runtime static quantization, QDQ,
   per-channel int8 weights, uint8 activations calibrated by ``--calibration`` on 256 training images), exactly as
   ``nas search --precision int8`` does;
2. both files are measured side by side by ``hwprofile.measure_latency`` (ONNX Runtime, CPU, 1 thread),
   alternating fp32 and int8 over ``--rounds`` rounds (the first of the pair changes each round); the medians over
   the rounds give the int8 / fp32 latency ratio (below 1: int8 is faster);
3. both files are run in ONNX Runtime on the held-out test split: their accuracy, the drop (fp32 - int8) and their
   top-1 agreement.

Printed as a table per data set with a summary (median ratio, how many students int8 makes faster, mean and worst
drop); written to ``bench/results/precision.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

import hwprofile
import nas
from nas.config import default_cache_dir
from nas.precision import CALIBRATION_SAMPLES
from nas.search import load_context
from nas.tasks import ImageTask
from search_spaces import get_space
from _results import RESULTS, ROOT, header, load_before, publish  # bench/ is on sys.path when a script runs

SPACE = "mbconv"
SEED = 0
FULL_DATA = (f"mnist:{ROOT.parent / 'shared' / 'datasets' / 'mnist-t10k'}", "mnist:/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class Row:
    student: int
    params: int
    macs: int
    fp32_ms: float
    int8_ms: float
    ratio: float  # int8 / fp32 latency: below 1, int8 is faster
    fp32_size_bytes: int
    int8_size_bytes: int
    fp32_test_accuracy: float
    int8_test_accuracy: float
    drop: float  # fp32 - int8 test accuracy
    agreement: float  # top-1 agreement of the two files on the test split
    distill_s: float


def side_by_side(paths: tuple[Path, Path], rounds: int, config: hwprofile.MeasureConfig) -> tuple[float, float]:
    """The median latency of each file over ``rounds`` rounds of both, the first of the pair alternating."""
    medians: dict[Path, list[float]] = {path: [] for path in paths}
    for index in range(rounds):
        for path in (paths if index % 2 == 0 else paths[::-1]):
            medians[path].append(hwprofile.measure_latency(path, config).median_ms)
    first, second = (statistics.median(medians[path]) for path in paths)
    return first, second


def bench_data(source: str, args: argparse.Namespace, workdir: Path) -> list[Row]:
    """Every student of one data set: distilled, exported, quantized, measured and scored."""
    config = nas.SearchConfig(data=source, space=SPACE, epochs=args.epochs, seed=SEED, teacher_epochs=args.teacher_epochs,
                              out=str(workdir / "out"), cache_dir=args.cache_dir, calibration=args.calibration)
    task = load_context(config, workdir).task
    assert isinstance(task, ImageTask)
    task.load_teacher()
    assert task.data.test is not None
    measure = hwprofile.MeasureConfig(threads=1, min_seconds=args.min_seconds)
    hwprofile.measure_latency(hwprofile.canary_path(), measure)  # ONNX Runtime's one-time set-up, before any student
    rows = []
    for index, arch in enumerate(nas.random_archs(get_space(SPACE), args.students, SEED)):
        student = task.build_student(arch)
        result = task.distil(student, {})
        fp32 = task.export(student, workdir / f"{index}-fp32.onnx")
        int8 = hwprofile.quantize_int8(fp32, workdir / f"{index}-int8.onnx", task.calibration(CALIBRATION_SAMPLES),
                                       method=args.calibration)
        fp32_ms, int8_ms = side_by_side((fp32, int8), args.rounds, measure)
        logits = {name: task.onnx_logits(path, task.data.test).argmax(1) for name, path in (("fp32", fp32), ("int8", int8))}
        accuracy = {name: float((found == task.data.test.y).mean()) for name, found in logits.items()}
        stats = hwprofile.model_stats(fp32)
        rows.append(Row(student=index, params=stats.params, macs=stats.macs, fp32_ms=fp32_ms, int8_ms=int8_ms,
                        ratio=int8_ms / fp32_ms, fp32_size_bytes=stats.size_bytes, int8_size_bytes=int8.stat().st_size,
                        fp32_test_accuracy=accuracy["fp32"], int8_test_accuracy=accuracy["int8"],
                        drop=accuracy["fp32"] - accuracy["int8"],
                        agreement=float((logits["fp32"] == logits["int8"]).mean()), distill_s=result.metrics["seconds"]))
        print(f"{source} student {index}: fp32 {fp32_ms:.4f} ms, int8 {int8_ms:.4f} ms (x{int8_ms / fp32_ms:.2f}); "
              f"test accuracy {accuracy['fp32']:.4f} -> {accuracy['int8']:.4f}", flush=True)
    return rows


def summary(rows: list[Row]) -> dict[str, Any]:
    ratios, drops = [row.ratio for row in rows], [row.drop for row in rows]
    return {"students": len(rows), "median_ratio": statistics.median(ratios), "min_ratio": min(ratios),
            "max_ratio": max(ratios), "int8_faster": sum(ratio < 1 for ratio in ratios),
            "mean_drop": float(np.mean(drops)), "max_drop": max(drops),
            "drop_within_half_point": sum(drop <= 0.005 for drop in drops),
            "median_size_ratio": statistics.median(row.int8_size_bytes / row.fp32_size_bytes for row in rows)}


def table(source: str, rows: list[Row], totals: dict[str, Any]) -> str:
    lines = [f"== {source} ==",
             f"{'#':>3} {'params':>8} {'MACs':>10} {'fp32 ms':>9} {'int8 ms':>9} {'int8/fp32':>9} {'fp32 acc':>9} "
             f"{'int8 acc':>9} {'drop':>7} {'agree':>6}"]
    lines += [f"{r.student:>3} {r.params:>8} {r.macs:>10} {r.fp32_ms:>9.4f} {r.int8_ms:>9.4f} {r.ratio:>9.2f} "
              f"{r.fp32_test_accuracy:>9.4f} {r.int8_test_accuracy:>9.4f} {r.drop:>+7.4f} {r.agreement:>6.3f}"
              for r in rows]
    lines.append(f"int8/fp32 latency: median x{totals['median_ratio']:.2f} (x{totals['min_ratio']:.2f}..."
                 f"x{totals['max_ratio']:.2f}); int8 faster for {totals['int8_faster']} of {totals['students']}; "
                 f"test accuracy drop: mean {totals['mean_drop']:+.4f}, worst {totals['max_drop']:+.4f}, "
                 f"<= 0.5 points for {totals['drop_within_half_point']} of {totals['students']}; "
                 f"int8 file / fp32 file: median x{totals['median_size_ratio']:.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 students on digits, short training")
    parser.add_argument("--data", action="append", help="data sources (repeatable; default: digits with --quick, "
                                                        "else MNIST and Fashion-MNIST)")
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--epochs", type=float, help="distillation epochs per student (default: 2 quick, 5 full)")
    parser.add_argument("--teacher-epochs", type=int, help="built-in teacher's epochs (default: 5 quick, 30 full)")
    parser.add_argument("--rounds", type=int, help="side-by-side measurement rounds (default: 2 quick, 4 full)")
    parser.add_argument("--min-seconds", type=float, help="timed seconds of one measurement (default: 0.1 quick, "
                                                          "0.3 full)")
    parser.add_argument("--calibration", choices=tuple(hwprofile.CALIBRATION_METHODS), default="minmax")
    parser.add_argument("--cache-dir", default=default_cache_dir(), help="teacher and teacher-output cache")
    parser.add_argument("--out", type=Path, help="results file (default: bench/results/precision[-quick].json)")
    args = parser.parse_args(argv)
    quick = args.quick
    args.data = args.data or (["digits"] if quick else list(FULL_DATA))
    args.epochs = args.epochs or (2.0 if quick else 5.0)
    args.teacher_epochs = args.teacher_epochs or (5 if quick else 30)
    args.rounds = args.rounds or (2 if quick else 4)
    args.min_seconds = args.min_seconds or (0.1 if quick else 0.3)
    load = load_before()
    start = time.perf_counter()
    results: dict[str, Any] = {"settings": {key: str(value) if isinstance(value, Path) else value
                                            for key, value in vars(args).items() if key != "cache_dir"},
                               "data": {}}
    reports = []
    for source in args.data:
        with tempfile.TemporaryDirectory(prefix="bench-precision-") as workdir:
            rows = bench_data(source, args, Path(workdir))
        totals = summary(rows)
        results["data"][source] = {"summary": totals, "students": [asdict(row) for row in rows]}
        reports.append(table(source, rows, totals))
    results["seconds"] = time.perf_counter() - start
    out = args.out or RESULTS / ("precision-quick.json" if quick else "precision.json")
    publish({**header(load), **results}, "\n\n".join(reports), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
