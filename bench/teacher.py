"""What the built-in teacher costs and reaches: epochs vs validation and TEST accuracy vs wall time.

Run from the repository root::

    python bench/teacher.py                    # Fashion-MNIST, the default epochs, crops and mirrors (teacher.json)
    python bench/teacher.py --epochs 3,5,10    # one run from scratch per budget (the one-cycle schedule spans it)
    python bench/teacher.py --quick            # digits, 3 epochs, crops: to try the script (teacher-quick.json)

Each budget trains the built-in teacher (:func:`distill.image.builtin.builtin_teacher`) from scratch into a fresh
cache in a temporary folder, on the CPU with ``--threads`` training threads, and records the wall and CPU time,
the validation accuracy after every epoch, and the final test accuracy (``t10k-*`` files; never used for anything
else). Fashion-MNIST is Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``); the published
small CNNs reach 0.916-0.934 test accuracy. Other work on the machine slows the timings: the load averages at the
start and the end are in the results.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import distill
from distill.image.builtin import TEACHER_EPOCHS, builtin_teacher
from _results import RESULTS, header, load_before, publish  # bench/ is on sys.path when a script runs

FASHION = "mnist:/usr/share/datasets/fashion-mnist"
TARGET = 0.93


class _Epochs(logging.Handler):
    """Collects the teacher's per-epoch log records: (epoch, training loss, validation accuracy)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.epochs: list[dict[str, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("Teacher epoch"):
            epoch, _, loss, accuracy = record.args  # type: ignore[misc]
            self.epochs.append({"epoch": epoch, "seconds": round(time.perf_counter() - self.start, 1),
                                "loss": round(loss, 4), "val_accuracy": round(accuracy, 4)})
            print(f"  epoch {epoch}: {self.epochs[-1]}", flush=True)

    def reset(self) -> None:
        self.epochs, self.start = [], time.perf_counter()


def run(data: distill.Dataset, epochs: int, augment: str) -> dict[str, Any]:
    """Train the teacher for ``epochs`` from scratch; its wall time, per-epoch record and test accuracy."""
    handler = _Epochs()
    logger = logging.getLogger("distill.image.builtin")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-teacher-") as cache:
            handler.reset()
            start, cpu = time.perf_counter(), time.process_time()
            teacher = builtin_teacher(data, Path(cache), epochs, seed=0, augment=augment)
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    finally:
        logger.removeHandler(handler)
    module = teacher.module
    assert isinstance(module, distill.TeacherCNN)
    val, test = accuracies(module, data)
    module.mirror_average, averaged = False, module.mirror_average
    single_val, single_test = accuracies(module, data)  # what the mirror average adds
    return {"epochs": epochs, "augment": augment, "seconds": round(seconds, 1), "cpu_seconds": round(cpu_seconds, 1),
            "val_accuracy": val, "test_accuracy": test, "mirror_average": averaged,
            "single_view": {"val_accuracy": single_val, "test_accuracy": single_test}, "per_epoch": handler.epochs}


def accuracies(module: torch.nn.Module, data: distill.Dataset) -> tuple[float, float | None]:
    """Validation and test accuracy, rounded."""
    test = None if data.test is None else round(distill.evaluate(module, data, data.test).accuracy, 4)
    return round(distill.evaluate(module, data).accuracy, 4), test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=FASHION)
    parser.add_argument("--epochs", default=str(TEACHER_EPOCHS),
                        help=f"comma-separated budgets, each trained from scratch (default: {TEACHER_EPOCHS})")
    parser.add_argument("--augment", default="standard", choices=("crop", "standard"),
                        help="crops only, or crops and mirrors (default: standard)")
    parser.add_argument("--threads", type=int, default=2, help="torch training threads (default: 2)")
    parser.add_argument("--quick", action="store_true", help="digits, 3 epochs, crops only")
    parser.add_argument("--out", type=Path, help="the results file (default: bench/results/teacher.json)")
    args = parser.parse_args()
    data_source, budgets = ("digits", [3]) if args.quick else (args.data, [int(e) for e in args.epochs.split(",")])
    augment = "crop" if args.quick else args.augment  # a mirrored digit is another digit
    torch.set_num_threads(args.threads)
    load = load_before()
    data = distill.load_dataset(data_source)
    print(f"{data_source}: {len(data.train)} training, {len(data.val)} validation images; {data.test_note}",
          flush=True)
    runs = []
    for epochs in budgets:
        runs.append(run(data, epochs, augment))
        print(f"{epochs} epochs: {runs[-1]['seconds']} s, validation {runs[-1]['val_accuracy']}, test "
              f"{runs[-1]['test_accuracy']}", flush=True)
    module = distill.TeacherCNN(data.input_shape, data.num_classes)
    results = {**header(load), "data": data_source, "train_images": len(data.train), "threads": args.threads,
               "params": sum(p.numel() for p in module.parameters()), "target_test_accuracy": TARGET, "runs": runs}
    rows = [f"| {r['epochs']} | {r['augment']} | {r['seconds']} | {r['cpu_seconds']} | {r['val_accuracy']} | "
            f"{r['test_accuracy']} | {r['single_view']['test_accuracy']} |" for r in runs]
    report = "\n".join([f"Built-in teacher on {data_source} ({args.threads} threads, load {load} at start):",
                        "| epochs | augment | wall s | CPU s | validation | test | test without the mirror average |",
                        "| --- | --- | --- | --- | --- | --- | --- |", *rows])
    publish(results, report, args.out or RESULTS / ("teacher-quick.json" if args.quick else "teacher.json"))


if __name__ == "__main__":
    main()
