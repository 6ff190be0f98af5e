"""What the memory format and bf16 autocast do to a training step on this CPU: the built-in teacher and mbconv students.

Run from the repository root, on an otherwise quiet machine (about two minutes on a 2-core CPU)::

    python bench/cpu_training.py            # the teacher (batch 128) and 5 students (batch 64), 1x28x28
    python bench/cpu_training.py --quick    # the teacher and 2 students, fewer steps (cpu_training-quick.json)

Each model trains (cross-entropy, AdamW, random inputs of Fashion-MNIST's shape) under the four placements of
:class:`distill.Placement` on the CPU: contiguous or channels-last memory format, with or without bf16 autocast
(bf16 only where :func:`distill.device.computes_bf16` says the CPU computes it natively). After warm-up steps, the
four are timed in interleaved rounds (the median step of each over the rounds), so that a machine that changes
speed slows them alike. The students are the mbconv space's smallest and largest and the first ones a seeded random
sampler draws (``nas.random_archs``). What the tool does with the figures: channels-last for every model, bf16 for
the built-in teacher only (:data:`distill.device.CHANNELS_LAST`, :meth:`distill.Placement.with_native_bf16`).

Results go to ``bench/results/cpu_training.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

import distill
import nas
from distill.device import computes_bf16
from search_spaces import get_space, seeded_build
from _results import RESULTS, header, load_before, publish  # bench/ is on sys.path when a script runs

SHAPE, CLASSES = (1, 28, 28), 10
PLACEMENTS = {"contiguous": (False, False), "channels_last": (False, True), "bf16": (True, False),
              "bf16_channels_last": (True, True)}


def models(students: int) -> dict[str, tuple[nn.Module, int]]:
    """The teacher and ``students`` mbconv students, each with its batch size."""
    space = get_space("mbconv")
    archs = [space.smallest(), space.largest(), *nas.random_archs(space, max(0, students - 2), seed=0)][:students]
    built = {"teacher": (distill.TeacherCNN(SHAPE, CLASSES), 128)}
    built |= {f"student {i}": (seeded_build(space, arch, 0, SHAPE, CLASSES), 64) for i, arch in enumerate(archs)}
    return built


def step_ms(model: nn.Module, batch: int, placement: distill.Placement, steps: int, warmup: int) -> float:
    """The median milliseconds of a training step of ``model`` on ``placement`` (after ``warmup`` steps)."""
    module = placement.prepare(model)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    x, y = placement.put(torch.randn(batch, *SHAPE)), torch.randint(0, CLASSES, (batch,))
    times = []
    for index in range(warmup + steps):
        start = time.perf_counter()
        with placement.autocast():
            loss = F.cross_entropy(module(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if index >= warmup:
            times.append((time.perf_counter() - start) * 1e3)
    module.to(memory_format=torch.contiguous_format)
    return statistics.median(times)


def measure(name: str, model: nn.Module, batch: int, rounds: int, steps: int) -> dict[str, Any]:
    """Every placement of one model, interleaved over ``rounds``: median step times and ratios to contiguous fp32."""
    native = computes_bf16(torch.device("cpu"))
    chosen = {key: distill.Placement(bf16=bf16, channels_last=last) for key, (bf16, last) in PLACEMENTS.items()
              if native or not bf16}
    samples: dict[str, list[float]] = {key: [] for key in chosen}
    for _ in range(rounds):
        for key, placement in chosen.items():
            samples[key].append(step_ms(model, batch, placement, steps, warmup=2))
    medians = {key: round(statistics.median(values), 2) for key, values in samples.items()}
    row = {"model": name, "batch": batch, "params": sum(p.numel() for p in model.parameters()), "step_ms": medians,
           "speedup": {key: round(medians["contiguous"] / value, 2) for key, value in medians.items()}}
    print(f"{name:<10} batch {batch:3d}: " + ", ".join(f"{key} {value} ms" for key, value in medians.items()),
          flush=True)
    return row


def report(results: dict[str, Any]) -> str:
    keys = list(results["rows"][0]["step_ms"])
    lines = [f"Training step on this CPU (torch threads {results['threads']}, median of {results['rounds']} "
             f"interleaved rounds), ms and speed-up over contiguous fp32:",
             "| model | params | batch | " + " | ".join(keys) + " |", "| --- " * (3 + len(keys)) + "|"]
    for row in results["rows"]:
        cells = [f"{row['step_ms'][key]} ({row['speedup'][key]}×)" for key in keys]
        lines.append(f"| {row['model']} | {row['params']:,} | {row['batch']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the teacher and 2 students, 1 round of 3 steps")
    args = parser.parse_args(argv)
    students, rounds, steps = (2, 1, 3) if args.quick else (5, 3, 6)
    load = load_before()
    rows = [measure(name, model, batch, rounds, steps) for name, (model, batch) in models(students).items()]
    results = {**header(load), "threads": torch.get_num_threads(), "rounds": rounds, "steps": steps,
               "bf16_native": computes_bf16(torch.device("cpu")), "rows": rows}
    publish(results, report(results), RESULTS / f"cpu_training{'-quick' if args.quick else ''}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
