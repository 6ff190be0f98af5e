"""How far to trust ``hwprofile.profile``'s latency: against a plain timing loop, over repeats, and against MACs.

Run from the repository root (about a minute on a 2-core CPU; no GPU needed)::

    python bench/latency_fidelity.py            # full run: 5 models x 5 repeats, 30 students
    python bench/latency_fidelity.py --quick    # smoke run: 2 models x 2 repeats, 8 students,
                                                # written to latency_fidelity-quick.json

It measures, on ONNX Runtime's CPU provider with one thread:

1. For each model (three students of the ``mbconv`` space on 1x28x28 digits, a ResNet-18 on 3x64x64
   and a MobileNetV2 of width 0.5 on 3x96x96, all exported with ``hwprofile.export_onnx``):
   - *ours*: the median latency of ``hwprofile.profile(path, MeasureConfig(threads=1), cache=None)``,
     and the wall time of that call (the cost of one measurement, session creation included);
   - *plain*: an independent loop -- a fresh ``onnxruntime.InferenceSession`` with the same thread
     settings and graph optimisation level (all other options ORT's defaults), a random input, 20
     warm-up runs, then ``time.perf_counter`` around each ``session.run`` call until both 200 runs
     and 0.5 s are reached (a fixed count alone leaves a 20 us model a 4 ms window, which one burst
     of another process's work ruins); the median.
   Ours and plain alternate (ours, plain, ours, plain, ...) over the repeats, so machine noise hits
   both alike. Reported: the mean of the per-repeat ratios ours/plain (target within +-10%), the
   spread (max - min) / median of our medians over the repeats (target <= 5%; the plain loop's
   spread is shown beside it as the machine's own noise), and how many of our measurements
   hwprofile flagged ``stable=False``. ``session.run`` converts the input and allocates numpy
   outputs on every call, which hwprofile's pre-bound I/O does not: a microsecond or two that shows
   as a ratio below 1 on models of a few tens of microseconds.
2. The Spearman rank correlation, over 30 students drawn by a seeded random sampler, between the
   MACs (and the parameters) that ``hwprofile.model_stats`` counts and the latency ours measures.

The figures are printed and written to ``bench/results/latency_fidelity.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import optuna
import torch
import torch.nn as nn
from scipy.stats import spearmanr

import hwprofile
import nas
from search_spaces import Arch, get_space, seeded_build
from _results import RESULTS, header, load_before, publish  # bench/ is on sys.path when a script runs

SPACE = "mbconv"
SEED = 0  # the search's default seed: students get the weights the search gives them
STUDENT_INPUT = (1, 28, 28)
NUM_CLASSES = 10
PLAIN_WARMUP = 20
THREADS = 1
TARGETS = {"ratio_max_deviation": 0.10, "spread_max": 0.05}
MODELS = ("student-smallest", "student-mid", "student-largest", "resnet18", "mobilenetv2-0.5")


@dataclass(frozen=True)
class Settings:
    """What one run of the benchmark does; ``--quick`` shrinks every part."""

    models: tuple[str, ...]
    repeats: int
    plain_runs: int  # the plain loop times at least this many runs ...
    plain_seconds: float  # ... and at least this long, per repeat
    students: int
    seed: int
    min_seconds: float  # of our protocol (hwprofile's default unless --min-seconds)
    quick: bool

    def config(self) -> hwprofile.MeasureConfig:
        return hwprofile.MeasureConfig(threads=THREADS, min_seconds=self.min_seconds)


@dataclass(frozen=True)
class Model:
    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, int, int]


# -- models ---------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet's two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def resnet18(num_classes: int = NUM_CLASSES) -> nn.Module:
    """ResNet-18 (He et al. 2016): 7x7/2 stem, max-pool, four stages of two basic blocks, 64 to 512 channels."""
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                               nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for index, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            layers.append(BasicBlock(cin, cout, 2 if index > 0 and block == 0 else 1))
            cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion, 3x3 depthwise, linear 1x1 projection, residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(inplace=True), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.residual else self.body(x)


def mobilenet_v2(width: float = 0.5, num_classes: int = NUM_CLASSES) -> nn.Module:
    """MobileNetV2 (Sandler et al. 2018) with its (expand, channels, blocks, stride) table scaled by ``width``."""
    table = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def scaled(channels: int) -> int:  # rounded to a multiple of 8, as in the paper's code
        return max(8, int(channels * width + 4) // 8 * 8)

    cin = scaled(32)
    layers: list[nn.Module] = [nn.Conv2d(3, cin, 3, 2, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(inplace=True)]
    for expand, channels, blocks, stride in table:
        cout = scaled(channels)
        for block in range(blocks):
            layers.append(InvertedResidual(cin, cout, stride if block == 0 else 1, expand))
            cin = cout
    head = 1280  # not scaled below width 1, as in the paper
    layers += [nn.Conv2d(cin, head, 1, bias=False), nn.BatchNorm2d(head), nn.ReLU6(inplace=True),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(head, num_classes)]
    return nn.Sequential(*layers)


def sampled_archs(count: int, seed: int) -> list[Arch]:
    """``count`` architectures drawn by a seeded random sampler, as a search's first trials would be."""
    return nas.random_archs(get_space(SPACE), count, seed)


def student(arch: Arch) -> Callable[[], nn.Module]:
    """The student of ``arch`` as the search builds it."""
    return lambda: seeded_build(get_space(SPACE), arch, SEED, STUDENT_INPUT, NUM_CLASSES)


def model(name: str, seed: int) -> Model:
    """One of ``MODELS``; the mid-size student is the seeded sampler's first draw."""
    builds: dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int]]] = {
        "student-smallest": (student(get_space(SPACE).smallest()), STUDENT_INPUT),
        "student-mid": (student(sampled_archs(1, seed)[0]), STUDENT_INPUT),
        "student-largest": (student(get_space(SPACE).largest()), STUDENT_INPUT),
        "resnet18": (resnet18, (3, 64, 64)),
        "mobilenetv2-0.5": (mobilenet_v2, (3, 96, 96)),
    }
    return Model(name, *builds[name])


def export(model: Model, workdir: Path) -> Path:
    torch.manual_seed(0)  # the reference models' weights (students seed their own)
    return hwprofile.export_onnx(model.build(), model.input_shape, workdir / f"{model.name}.onnx")


# -- 1. ours against a plain loop ---------------------------------------------------------------


def ours(path: Path, config: hwprofile.MeasureConfig) -> dict[str, Any]:
    """One uncached ``hwprofile.profile`` call: its median and its whole wall time."""
    start = time.perf_counter()
    measurement = hwprofile.profile(path, config, cache=None)
    wall_s = time.perf_counter() - start
    stats = measurement.latency
    return {"median_ms": stats.median_ms, "cv": stats.cv, "runs": stats.runs, "attempts": stats.attempts,
            "stable": stats.stable, "session_ms": stats.session_ms, "wall_s": wall_s}


def plain_session(path: Path) -> ort.InferenceSession:
    """A session set up as hwprofile's ORT backend sets its threads and optimisation level; defaults otherwise."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def plain(path: Path, input_shape: tuple[int, int, int], runs: int, seconds: float) -> tuple[float, int]:
    """The median ms of at least ``runs`` timed ``session.run`` calls over at least ``seconds``, after 20 warm-up
    runs, on a fresh session; and the number of runs."""
    session = plain_session(path)
    feed = {session.get_inputs()[0].name: np.random.default_rng(0).standard_normal((1, *input_shape), np.float32)}
    with hwprofile.exclusive_measurement():  # no other measurement on this host overlaps ours either
        for _ in range(PLAIN_WARMUP):
            session.run(None, feed)
        samples: list[float] = []
        begin = time.perf_counter()
        while len(samples) < runs or time.perf_counter() - begin < seconds:
            start = time.perf_counter()
            session.run(None, feed)
            samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples), len(samples)


def relative_spread(values: Sequence[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def fidelity(model: Model, settings: Settings, workdir: Path) -> dict[str, Any]:
    """Ours and plain, interleaved over the repeats, on one model."""
    path = export(model, workdir)
    stats = hwprofile.model_stats(path)
    runs: list[dict[str, Any]] = []
    plain_ms: list[float] = []
    plain_runs: list[int] = []
    for _ in range(settings.repeats):
        runs.append(ours(path, settings.config()))
        median_ms, count = plain(path, model.input_shape, settings.plain_runs, settings.plain_seconds)
        plain_ms.append(median_ms)
        plain_runs.append(count)
    ours_ms = [run["median_ms"] for run in runs]
    ratios = [o / p for o, p in zip(ours_ms, plain_ms)]
    return {
        "input_shape": list(model.input_shape),
        "params": stats.params,
        "macs": stats.macs,
        "ours_median_ms": ours_ms,
        "plain_median_ms": plain_ms,
        "ratios": ratios,
        "mean_ratio": statistics.fmean(ratios),
        "spread": relative_spread(ours_ms),
        "plain_spread": relative_spread(plain_ms),
        "wall_s": [run["wall_s"] for run in runs],
        "median_wall_s": statistics.median(run["wall_s"] for run in runs),
        "session_ms": [run["session_ms"] for run in runs],
        "runs": [run["runs"] for run in runs],
        "attempts": [run["attempts"] for run in runs],
        "plain_runs": plain_runs,
        "cv": [run["cv"] for run in runs],
        "unstable": sum(not run["stable"] for run in runs),  # measurements hwprofile flagged stable=False
    }


# -- 2. MACs against latency ----------------------------------------------------------------------


def rank_correlation(settings: Settings, workdir: Path) -> dict[str, Any]:
    """Spearman's rho of MACs and of parameters against measured latency over sampled students."""
    points = []
    for index, arch in enumerate(sampled_archs(settings.students, settings.seed)):
        path = export(Model(f"sampled-{index}", student(arch), STUDENT_INPUT), workdir)
        stats = hwprofile.model_stats(path)
        latency_ms = ours(path, settings.config())["median_ms"]
        points.append({"macs": stats.macs, "params": stats.params, "median_ms": latency_ms})
    macs, params, latency = ([point[key] for point in points] for key in ("macs", "params", "median_ms"))
    return {
        "students": len(points),
        "seed": settings.seed,
        "spearman_macs_latency": float(spearmanr(macs, latency).statistic),
        "spearman_params_latency": float(spearmanr(params, latency).statistic),
        "points": points,
    }


# -- report ------------------------------------------------------------------------------------------


def checks(results: dict[str, Any]) -> dict[str, dict[str, bool]]:
    """Per model: is the mean ratio within +-10% of 1, and is the spread of our medians <= 5%?"""
    return {name: {"ratio": abs(model["mean_ratio"] - 1) <= TARGETS["ratio_max_deviation"],
                   "spread": model["spread"] <= TARGETS["spread_max"]}
            for name, model in results["models"].items()}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(results: dict[str, Any]) -> str:
    m, load, corr = results["machine"], results["load_average"], results["rank_correlation"]
    repeats = results["settings"]["repeats"]
    lines = [
        f"Machine: {m['cores']} CPUs ({m['cpu']}), onnxruntime {m['onnxruntime']}, 1 thread; "
        f"load average {load['before'][0]} before, {load['after'][0]} after (1 min)",
        f"Ours vs plain loop ({repeats} interleaved repeats; ours: min {results['settings']['min_seconds']} s "
        f"timed; plain: >= {results['settings']['plain_runs']} runs and >= {results['settings']['plain_seconds']} s)",
        f"{'model':<18} {'MACs':>11} {'ours ms':>9} {'plain ms':>9} {'ratio':>6} {'spread':>7} "
        f"{'plain spr':>9} {'cost s':>7} {'runs':>5} {'flagged':>7}",
    ]
    for name, model in results["models"].items():
        lines.append(
            f"{name:<18} {model['macs']:>11,} {statistics.median(model['ours_median_ms']):>9.4f} "
            f"{statistics.median(model['plain_median_ms']):>9.4f} {model['mean_ratio']:>6.3f} "
            f"{100 * model['spread']:>6.2f}% {100 * model['plain_spread']:>8.2f}% {model['median_wall_s']:>7.2f} "
            f"{int(statistics.median(model['runs'])):>5} {model['unstable']:>4}/{repeats}")
    lines.append("(ms: median over repeats; ratio: mean of ours/plain per repeat; spread: (max - min) / median\n"
                 " over repeats; cost: wall s of one profile() call; runs: timed runs in it; flagged: stable=False)")
    lines.append(f"MACs vs latency over {corr['students']} sampled students: Spearman rho "
                 f"{corr['spearman_macs_latency']:.3f} (params vs latency {corr['spearman_params_latency']:.3f})")
    ratio_max, spread_max = 100 * TARGETS["ratio_max_deviation"], 100 * TARGETS["spread_max"]
    for name, check in results["checks"].items():
        lines.append(f"Check {name}: ratio within +-{ratio_max:.0f}% {verdict(check['ratio'])}, "
                     f"spread <= {spread_max:.0f}% {verdict(check['spread'])}")
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, help="models to compare (default: all; quick: "
                        "student-mid resnet18)")
    parser.add_argument("--repeats", type=int, help="interleaved repeats per model (default: 5; quick: 2)")
    parser.add_argument("--plain-runs", type=int, help="least timed runs of the plain loop (default: 200; quick: 50)")
    parser.add_argument("--plain-seconds", type=float, help="least timed seconds of the plain loop (default: 0.5; "
                        "quick: 0.2)")
    parser.add_argument("--students", type=int, help="sampled students for the correlation (default: 30; quick: 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the student sampler (default: 0)")
    parser.add_argument("--min-seconds", type=float, default=hwprofile.MeasureConfig().min_seconds,
                        help="minimum timed seconds of our measurement (default: hwprofile's, %(default)s)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 models, 2 repeats, 8 students")
    parser.add_argument("--output", type=Path, help="JSON file (default: bench/results/latency_fidelity[-quick].json)")
    args = parser.parse_args(argv)
    quick = args.quick
    settings = Settings(
        models=tuple(args.models or (("student-mid", "resnet18") if quick else MODELS)),
        repeats=args.repeats or (2 if quick else 5),
        plain_runs=args.plain_runs or (50 if quick else 200),
        plain_seconds=args.plain_seconds or (0.2 if quick else 0.5),
        students=args.students or (8 if quick else 30),
        seed=args.seed,
        min_seconds=args.min_seconds,
        quick=quick,
    )
    output = args.output or RESULTS / ("latency_fidelity-quick.json" if quick else "latency_fidelity.json")
    return settings, output


def main(argv: Sequence[str] | None = None) -> int:
    settings, output = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    load_at_start = load_before()
    with tempfile.TemporaryDirectory(prefix="bench-latency-fidelity-") as tmp:
        workdir = Path(tmp)
        measured = {}
        for name in settings.models:
            print(f"Measuring {name} ({settings.repeats} repeats of ours and plain) ...", flush=True)
            measured[name] = fidelity(model(name, settings.seed), settings, workdir)
        print(f"Measuring {settings.students} sampled students ...", flush=True)
        correlation = rank_correlation(settings, workdir)
    results: dict[str, Any] = {
        **header(load_at_start),
        "settings": asdict(settings),
        "measure_config": asdict(settings.config()),
        "models": measured,
        "rank_correlation": correlation,
        "targets": TARGETS,
    }
    results["checks"] = checks(results)
    publish(results, report(results), output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
