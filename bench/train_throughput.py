"""Training throughput of `nas` processes sharing one host's CPU cores: one process alone against two at once.

Run from the repository root on a quiet machine (no other work: every figure here is a timing)::

    python bench/train_throughput.py            # 300 steps per student, 3 repeats: a few minutes on 2 cores
    python bench/train_throughput.py --quick    # 30 steps per student, 1 repeat; written to train_throughput-quick.json

Each worker process distils the same three digits students (the mbconv space's smallest, the first a seeded random
sampler draws, its largest) from the same cached teacher outputs, for the same number of steps, as a search's trials
do. Two settings:

- ``uncoordinated``: what `nas search` did before: torch's default intra-op threads (one per core) in every process;
- ``coordinated``: `nas.cores`: each process joins the host's registry (a private one here, so that other work on
  the machine does not count) and takes ``cores // live members`` threads before each student; every training
  step passes the measurement pause.

For each, one worker alone, then two started together (they load everything, join, and start on one signal). The
combined throughput of the two is both workers' steps over the time from the first start to the last end. Target:
the two coordinated processes' combined throughput >= 0.8x one process's (measured before: two uncoordinated searches
on 2 cores were 20x slower per trial). Printed, and written to ``bench/results/train_throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import distill
from _results import RESULTS, ROOT, header, load_before, publish  # bench/ is on sys.path when a script runs

DATA = "digits"
SPACE = "mbconv"
SEED = 0
TEACHER_EPOCHS = 3  # the teacher's quality does not matter here, only its cached outputs
MODES = ("uncoordinated", "coordinated")
TARGET_PAIR_OVER_ALONE = 0.8


@dataclass(frozen=True)
class Settings:
    steps: int  # per student
    repeats: int
    batch_size: int
    quick: bool


# -- one worker process ----------------------------------------------------------------------------------


def worker(mode: str, cache_dir: Path, steps: int, batch_size: int) -> None:
    """Load the data, the cached teacher outputs and the students; say ``ready``; on ``go`` (stdin) distil each
    student for ``steps`` steps; print one JSON line: steps, wall-clock start and end, threads per student."""
    import nas
    from nas import cores
    from search_spaces import get_space, seeded_build

    space = get_space(SPACE)
    data = distill.load_dataset(DATA)
    teacher = distill.load_teacher("builtin", data, cache_dir, epochs=TEACHER_EPOCHS, seed=SEED)
    outputs = distill.teacher_outputs(teacher, data, cache_dir)
    archs = [space.smallest(), nas.random_archs(space, 1, seed=SEED)[0], space.largest()]
    students = [seeded_build(space, arch, SEED, data.input_shape, data.num_classes) for arch in archs]
    config = distill.TrainConfig(steps=steps, batch_size=batch_size, lr=1e-2, seed=SEED)
    coordinated = mode == "coordinated"
    placement = distill.Placement.on("cpu", before_step=cores.MeasurementPause() if coordinated else None)
    if coordinated:
        cores.training_threads()  # joins the registry before the start signal
    print("ready", flush=True)
    sys.stdin.readline()
    threads, start = [], time.time()
    for student in students:
        threads.append(cores.training_threads() if coordinated else torch.get_num_threads())
        distill.distill(student, data, outputs, config, placement=placement)
    end = time.time()
    print(json.dumps({"steps": steps * len(students), "start": start, "end": end, "threads": threads}), flush=True)


# -- the parent ---------------------------------------------------------------------------------------------


def run_workers(count: int, mode: str, settings: Settings, cache_dir: Path, registry: Path) -> dict[str, Any]:
    """``count`` workers of ``mode`` started together; their steps per second alone and combined."""
    env = {**os.environ, "NAS_CORES_DIR": str(registry),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "bench"), str(ROOT)])}
    command = [sys.executable, __file__, "--worker", mode, "--cache-dir", str(cache_dir),
               "--steps", str(settings.steps), "--batch-size", str(settings.batch_size)]
    workers = [subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for _ in range(count)]
    try:
        for process in workers:
            assert process.stdout is not None
            if (line := process.stdout.readline().strip()) != "ready":
                raise RuntimeError(f"a {mode} worker did not get ready (said {line!r}, exit {process.wait()})")
        for process in workers:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        reports = [json.loads(process.communicate()[0].strip().splitlines()[-1]) for process in workers]
    finally:
        for process in workers:
            process.kill()
            process.wait()
    window = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    return {"workers": count, "mode": mode, "threads": [r["threads"] for r in reports],
            "per_worker_steps_per_s": [r["steps"] / (r["end"] - r["start"]) for r in reports],
            "combined_steps_per_s": sum(r["steps"] for r in reports) / window, "window_s": window}


def measure(settings: Settings, cache_dir: Path, registry: Path) -> dict[str, Any]:
    """Alone and in pairs, both modes, ``settings.repeats`` interleaved rounds; the median combined throughput."""
    runs: dict[str, list[dict[str, Any]]] = {f"{mode}_{count}": [] for mode in MODES for count in (1, 2)}
    for round_ in range(settings.repeats):
        for mode in MODES:
            for count in (1, 2):
                print(f"round {round_ + 1}/{settings.repeats}: {mode}, {count} process(es) ...", flush=True)
                runs[f"{mode}_{count}"].append(run_workers(count, mode, settings, cache_dir, registry))
    summary = {}
    for mode in MODES:
        alone = statistics.median(r["combined_steps_per_s"] for r in runs[f"{mode}_1"])
        pair = statistics.median(r["combined_steps_per_s"] for r in runs[f"{mode}_2"])
        per_worker_pair = statistics.median(s for r in runs[f"{mode}_2"] for s in r["per_worker_steps_per_s"])
        summary[mode] = {"alone_steps_per_s": alone, "pair_combined_steps_per_s": pair,
                         "pair_per_process_steps_per_s": per_worker_pair, "pair_over_alone": pair / alone}
    return {"runs": runs, "summary": summary}


def report(results: dict[str, Any]) -> str:
    lines = [f"Distillation steps per second ({results['settings']['steps']} steps x 3 {SPACE} students on {DATA}, "
             f"{results['cores']} cores, median of {results['settings']['repeats']}):"]
    for mode, row in results["summary"].items():
        lines.append(f"  {mode:>13}: alone {row['alone_steps_per_s']:.1f}; two at once "
                     f"{row['pair_combined_steps_per_s']:.1f} combined ({row['pair_per_process_steps_per_s']:.1f} each)"
                     f" = {row['pair_over_alone']:.2f}x alone")
    lines.append(f"Check: coordinated pair >= {TARGET_PAIR_OVER_ALONE}x alone: "
                 f"{'PASS' if results['checks']['coordinated_pair_over_alone'] else 'FAIL'}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, help="distillation steps per student (default: 300; quick: 30)")
    parser.add_argument("--repeats", type=int, help="interleaved rounds (default: 3; quick: 1)")
    parser.add_argument("--batch-size", type=int, default=64, help="as a search's default (64)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 30 steps per student, one round")
    parser.add_argument("--output", type=Path, help="JSON file (default: bench/results/train_throughput[-quick].json)")
    parser.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(steps=args.steps or (30 if args.quick else 300),
                        repeats=args.repeats or (1 if args.quick else 3), batch_size=args.batch_size, quick=args.quick)
    if args.worker:
        worker(args.worker, args.cache_dir, settings.steps, settings.batch_size)
        return 0
    from nas.cores import host_cores

    load_at_start = load_before()
    with tempfile.TemporaryDirectory(prefix="bench-train-throughput-") as tmp:
        cache_dir, registry = Path(tmp) / "cache", Path(tmp) / "registry"
        print("Training the teacher and caching its outputs ...", flush=True)
        data = distill.load_dataset(DATA)
        distill.teacher_outputs(distill.load_teacher("builtin", data, cache_dir, epochs=TEACHER_EPOCHS, seed=SEED),
                                data, cache_dir)
        measured = measure(settings, cache_dir, registry)
    results: dict[str, Any] = {**header(load_at_start), "settings": asdict(settings), "cores": host_cores(),
                               "target_pair_over_alone": TARGET_PAIR_OVER_ALONE, **measured}
    results["checks"] = {"coordinated_pair_over_alone":
                         results["summary"]["coordinated"]["pair_over_alone"] >= TARGET_PAIR_OVER_ALONE}
    output = args.output or RESULTS / ("train_throughput-quick.json" if args.quick else "train_throughput.json")
    publish(results, report(results), output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
