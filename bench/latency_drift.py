"""Does a latency order hold across time? Students measured on a quiet machine, then under an injected background load:
raw, normalised to the drift canary, and measured together; with the repeat spread of the normalised latency.

Run from the repository root, on an otherwise quiet machine (about five minutes on a 2-core CPU; no GPU needed)::

    python bench/latency_drift.py            # full run: 12 students, 5 runs under load
    python bench/latency_drift.py --quick    # smoke run: 4 students, 2 runs, written to latency_drift-quick.json

The students are seeded random architectures of the ``mbconv`` space (``nas.random_archs``, built with the weights
a search gives them by ``search_spaces.seeded_build``, 1x28x28 inputs), 12 picked from a pool of 60 at evenly spaced
log-latency (one short quiet measurement of each, before anything else), each at least 5% from the others in that
measurement where the pool allows, so that their latencies are apart: neighbours 1% apart swap on any machine and
no method could keep their order (evenly spaced MACs left two pairs within 0.5%: MACs do not order latency that
finely). On ONNX Runtime's CPU provider with one thread, the search's
protocol (``hwprofile.MeasureConfig(threads=1)``):

1. Quiet: the canary baseline (``hwprofile.measure_baseline``, as a search takes it at its start); then every
   student measured round-robin ``--reference-rounds`` times (raw, no canary), and as many rounds again after the
   load (step 3): each student's fastest round is the reference latency and its order the reference order (a
   disturbance only slows, and one lasting the seconds of a whole phase once set a reference 18-35% slow); the two
   phases' agreement is reported. One more quiet pass measures each student raw and with the canary interleaved,
   for the canary's cost.
2. Under load: a child process (started here, killed at the end) burns one core on and off, busy and idle for
   0.5-3 s at a time (seeded), streaming 32 MB arrays through the shared cache and memory while busy. Each of
   ``--runs`` runs measures every student, one after the other as a search's trials are measured:
   - *raw*: ``hwprofile.profile(path, config)``, as before the canary (no canary, no re-measurement);
   - *normalised*: ``hwprofile.profile(path, config, baseline=baseline)``: the canary measured interleaved with each
     student, block by block, twice (the fastest normalised attempt kept) and again while the canary is slower
     than the quiet baseline allows, normalised to it;
   - *together*: ``hwprofile.measure_together`` over all students, 3 rounds with the short protocol of the search's
     front re-measurement (``nas.drift.FRONT_PROTOCOL``), the fastest normalised round (as the search keeps).
3. Quiet again (the load killed): the reference's second phase of rounds.

Reported: Kendall's tau of each run's latency order against the reference (mean and minimum over runs) for the
three; per student, the spread (max - min) / median of its normalised (and raw) latency over the runs (the maximum
and median over students); how often a measurement was re-measured or flagged ``latency_drift``; and the canary's
cost: the wall time of a measurement with the canary over one without, on the quiet machine. Targets: tau >= 0.9
under load with the correction (normalised and together), normalised repeats within 8%.

The figures are printed and written to ``bench/results/latency_drift.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from scipy.stats import kendalltau

import hwprofile
import nas
from nas.drift import FRONT_PROTOCOL, FRONT_ROUNDS
from search_spaces import arch_hash, get_space, seeded_build
from _results import RESULTS, header, load_before, publish  # bench/ is on sys.path when a script runs

SPACE = "mbconv"
SEED = 0  # the search's default seed: students get the weights the search gives them
STUDENT_INPUT = (1, 28, 28)
NUM_CLASSES = 10
POOL = 60
MIN_GAP = 0.05  # picked students at least 5% apart in their pick measurement, where the pool allows
TARGETS = {"tau_min": 0.9, "spread_max": 0.08}
# The injected load: one process busy, then idle, for a uniformly drawn 0.5-3 s each, until it is killed. Busy, it
# streams 32 MB through the shared last-level cache and memory, as a co-tenant's inference or training would (a
# pure-Python spin on the other core of a 2-core machine slowed a 1-thread measurement by 1-3% only).
BURNER = """
import random, sys, time
import numpy as np
rng = random.Random(int(sys.argv[1]))
source = np.ones(8 << 20, dtype=np.float32)
target = np.empty_like(source)
while True:
    end = time.perf_counter() + rng.uniform(0.5, 3.0)
    while time.perf_counter() < end:
        np.copyto(target, source)
    time.sleep(rng.uniform(0.5, 3.0))
"""


@dataclass(frozen=True)
class Settings:
    """What one run of the benchmark does; ``--quick`` shrinks every part."""

    students: int
    runs: int
    reference_rounds: int
    seed: int
    quick: bool

    def config(self) -> hwprofile.MeasureConfig:
        return hwprofile.MeasureConfig(threads=1)


def students(count: int, seed: int, workdir: Path, config: hwprofile.MeasureConfig) -> list[dict[str, Any]]:
    """``count`` students from a pool of :data:`POOL` seeded random archs, at evenly spaced log-latency (one short
    measurement each, ``pick_ms``), each at least :data:`MIN_GAP` from those picked before where the pool allows;
    exported."""
    space = get_space(SPACE)
    short = dataclasses.replace(config, **FRONT_PROTOCOL)
    pool = []
    for index, arch in enumerate(nas.random_archs(space, POOL, seed)):
        path = hwprofile.export_onnx(seeded_build(space, arch, SEED, STUDENT_INPUT, NUM_CLASSES), STUDENT_INPUT,
                                     workdir / f"pool-{index}.onnx")
        pool.append({"arch_hash": arch_hash(arch), "path": path, **hwprofile.model_stats(path).to_dict(),
                     "pick_ms": hwprofile.measure_latency(path, short).median_ms})
    low, high = (math.log(f(s["pick_ms"] for s in pool)) for f in (min, max))
    picked: list[dict[str, Any]] = []
    for step in range(count):
        goal = low + (high - low) * step / max(1, count - 1)
        candidates = [s for s in pool if s not in picked]
        apart = [s for s in candidates if all(abs(math.log(s["pick_ms"] / p["pick_ms"])) >= math.log1p(MIN_GAP)
                                              for p in picked)]
        picked.append(min(apart or candidates, key=lambda s: abs(math.log(s["pick_ms"]) - goal)))
    return picked


@contextmanager
def background_load(seed: int) -> Iterator[subprocess.Popen[bytes]]:
    """A child process burning one core on and off, killed when the block ends."""
    process = subprocess.Popen([sys.executable, "-c", BURNER, str(seed)])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def tau(reference: Sequence[float], measured: Sequence[float]) -> float:
    return float(kendalltau(reference, measured).statistic)


def spread(values: Sequence[float]) -> float:
    return (max(values) - min(values)) / statistics.median(values)


def timed(call: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = call()
    return result, time.perf_counter() - start


def quiet_rounds(paths: list[Path], config: hwprofile.MeasureConfig, rounds: int) -> list[list[float]]:
    """Each student's raw median in each of ``rounds`` round-robin rounds (each round starting one student later)."""
    medians: list[list[float]] = [[] for _ in paths]
    for round_ in range(rounds):
        for step in range(len(paths)):
            index = (round_ + step) % len(paths)
            medians[index].append(hwprofile.profile(paths[index], config).latency.median_ms)
    return medians


def reference(before: list[list[float]], after: list[list[float]]) -> dict[str, Any]:
    """The quiet reference from the rounds taken before the load and after it: each student's fastest round (a
    disturbance only slows, and one that hits a whole phase of seconds must not set the reference), with how well
    the two phases agree (Kendall tau of their medians, and the largest relative gap)."""
    early, late = ([statistics.median(m) for m in phase] for phase in (before, after))
    return {"reference_ms": [min(a + b) for a, b in zip(before, after)], "before_ms": early, "after_ms": late,
            "phases_tau": tau(early, late), "phases_gap_max": max(abs(b / a - 1) for a, b in zip(early, late))}


def guarded_profiles(paths: list[Path], config: hwprofile.MeasureConfig, baseline: hwprofile.CanaryBaseline
                     ) -> tuple[list[tuple[hwprofile.Measurement, float]], hwprofile.CanaryBaseline]:
    """Each student measured in turn with the canary beside it, as a search's trials are (the baseline keeping the
    fastest canary met), with its wall seconds; and the baseline after them."""
    measured = []
    for path in paths:
        measured.append(timed(lambda: hwprofile.profile(path, config, baseline=baseline)))
        baseline = baseline.after(measured[-1][0])
    return measured, baseline


def overhead(paths: list[Path], config: hwprofile.MeasureConfig, baseline: hwprofile.CanaryBaseline
             ) -> tuple[dict[str, Any], hwprofile.CanaryBaseline]:
    """Wall seconds, on the quiet machine, of a measurement without and with the canary interleaved (and the
    re-measurements it called for); and the baseline after them."""
    raw = [timed(lambda: hwprofile.profile(path, config))[1] for path in paths]
    guarded, baseline = guarded_profiles(paths, config, baseline)
    raw_s, guarded_s = statistics.fmean(raw), statistics.fmean(wall for _, wall in guarded)
    return {"raw_wall_s": raw_s, "canary_wall_s": guarded_s, "ratio": guarded_s / raw_s,
            "remeasured": sum(m.drift.remeasured for m, _ in guarded if m.drift is not None),
            "quiet_normalised_ms": [m.normalised_ms for m, _ in guarded]}, baseline


def loaded_run(paths: list[Path], config: hwprofile.MeasureConfig, baseline: hwprofile.CanaryBaseline
               ) -> tuple[dict[str, Any], hwprofile.CanaryBaseline]:
    """One run under load: every student raw, then normalised, then all together; and the baseline after it."""
    raw = [hwprofile.profile(path, config).latency.median_ms for path in paths]
    measured, baseline = guarded_profiles(paths, config, baseline)
    guarded = [m for m, _ in measured]
    short = dataclasses.replace(config, **FRONT_PROTOCOL)
    rounds = hwprofile.measure_together(paths, short, baseline, rounds=FRONT_ROUNDS)
    together = [hwprofile.fastest_normalised(model) for model in rounds]
    return {
        "raw_ms": raw, "normalised_ms": [m.normalised_ms for m in guarded], "together_ms": together,
        "guarded_raw_ms": [m.latency.median_ms for m in guarded],
        "canary_ms": [m.canary.canary_ms for m in guarded if m.canary is not None],
        "remeasured": [m.drift.remeasured for m in guarded if m.drift is not None],
        "latency_drift": [m.drift.latency_drift for m in guarded if m.drift is not None],
        "fastest_canary_ms": baseline.fastest_seen_ms,
    }, baseline


def summary(runs: list[dict[str, Any]], count: int) -> dict[str, Any]:
    taus = {name: [run["tau"][name] for run in runs] for name in ("raw", "normalised", "together")}
    spreads = {name: [spread([run[f"{name}_ms"][i] for run in runs]) for i in range(count)]
               for name in ("raw", "normalised", "together")}
    measurements = [flag for run in runs for flag in run["latency_drift"]]
    return {
        "tau": {name: {"mean": statistics.fmean(values), "min": min(values)} for name, values in taus.items()},
        "spread": {name: {"max": max(values), "median": statistics.median(values)} for name, values in spreads.items()},
        "remeasured_share": sum(r > 0 for run in runs for r in run["remeasured"]) / len(measurements),
        "latency_drift_share": sum(measurements) / len(measurements),
    }


def checks(result: dict[str, Any]) -> dict[str, bool]:
    tau_ = result["tau"]
    return {"tau_normalised": tau_["normalised"]["min"] >= TARGETS["tau_min"],
            "tau_together": tau_["together"]["min"] >= TARGETS["tau_min"],
            "spread_normalised": result["spread"]["normalised"]["max"] <= TARGETS["spread_max"]}


def report(results: dict[str, Any]) -> str:
    m, load, s, cost = results["machine"], results["load_average"], results["summary"], results["overhead"]
    settings = results["settings"]
    lines = [
        f"Machine: {m['cores']} CPUs ({m['cpu']}), onnxruntime {m['onnxruntime']}, 1 thread; load average "
        f"{load['before'][0]} before, {load['after'][0]} after (1 min)",
        f"{settings['students']} students, reference latency {min(results['reference_ms']):.4f}-"
        f"{max(results['reference_ms']):.4f} ms (fastest of 2 x {settings['reference_rounds']} quiet rounds; closest "
        f"neighbours {100 * results['closest_gap']:.1f}% apart); canary baseline {results['baseline_ms']:.4f} ms",
        f"Quiet rounds before vs after the load: tau {results['phases_tau']:.3f}, largest gap "
        f"{100 * results['phases_gap_max']:.1f}% (the reference: each student's fastest round)",
        f"Under load, {settings['runs']} runs: Kendall tau vs the quiet order (mean / min over runs)",
    ]
    for name in ("raw", "normalised", "together"):
        lines.append(f"  {name:<10} {s['tau'][name]['mean']:.3f} / {s['tau'][name]['min']:.3f}   repeat spread "
                     f"max {100 * s['spread'][name]['max']:.1f}%, median {100 * s['spread'][name]['median']:.1f}%")
    lines += [
        f"Normalised measurements re-measured: {100 * s['remeasured_share']:.0f}%, flagged latency_drift: "
        f"{100 * s['latency_drift_share']:.0f}%",
        f"Canary cost (quiet): a measurement takes {cost['raw_wall_s']:.3f} s without the canary, "
        f"{cost['canary_wall_s']:.3f} s with it interleaved and its re-measurements (x{cost['ratio']:.2f}, "
        f"{cost['remeasured']} re-measured of {len(cost['quiet_normalised_ms'])})",
    ]
    for name, ok in results["checks"].items():
        lines.append(f"Check {name}: {'PASS' if ok else 'FAIL'}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> tuple[Settings, Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, help="students measured (default: 12; quick: 4)")
    parser.add_argument("--runs", type=int, help="runs under load (default: 5; quick: 2)")
    parser.add_argument("--reference-rounds", type=int, help="quiet rounds of the reference (default: 3; quick: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the students and of the load (default: 0)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 students, 2 runs, 1 reference round")
    parser.add_argument("--output", type=Path, help="JSON file (default: bench/results/latency_drift[-quick].json)")
    args = parser.parse_args(argv)
    quick = args.quick
    settings = Settings(students=args.students or (4 if quick else 12), runs=args.runs or (2 if quick else 5),
                        reference_rounds=args.reference_rounds or (1 if quick else 3), seed=args.seed, quick=quick)
    if settings.students < 2 or settings.runs < 1 or settings.reference_rounds < 1:
        parser.error("--students must be >= 2, --runs and --reference-rounds >= 1")
    output = args.output or RESULTS / ("latency_drift-quick.json" if quick else "latency_drift.json")
    return settings, output


def main(argv: Sequence[str] | None = None) -> int:
    settings, output = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    load_at_start = load_before()
    config = settings.config()
    with tempfile.TemporaryDirectory(prefix="bench-latency-drift-") as tmp:
        print(f"Exporting {POOL} students, picking {settings.students} ...", flush=True)
        picked = students(settings.students, settings.seed, Path(tmp), config)
        paths = [s["path"] for s in picked]
        print("Quiet: canary baseline, reference rounds, canary cost ...", flush=True)
        baseline = hwprofile.measure_baseline(config)
        before = quiet_rounds(paths, config, settings.reference_rounds)
        cost, running = overhead(paths, config, baseline)  # running: the baseline as a search's process holds it
        loaded_ms = []
        with background_load(settings.seed):
            for run in range(settings.runs):
                print(f"Under load: run {run + 1}/{settings.runs} ...", flush=True)
                result, running = loaded_run(paths, config, running)
                loaded_ms.append(result)
        print("Quiet again: reference rounds ...", flush=True)
        quiet = reference(before, quiet_rounds(paths, config, settings.reference_rounds))
    reference_ms = quiet["reference_ms"]
    runs = [{**run, "tau": {name: tau(reference_ms, run[f"{name}_ms"]) for name in ("raw", "normalised", "together")}}
            for run in loaded_ms]
    ordered = sorted(reference_ms)
    results: dict[str, Any] = {
        **header(load_at_start),
        "settings": asdict(settings),
        "measure_config": asdict(config),
        "baseline_ms": baseline.canary_ms,
        "threshold": baseline.threshold,
        "students": [{k: v for k, v in s.items() if k != "path"} for s in picked],
        **quiet,
        "closest_gap": min(b / a - 1 for a, b in zip(ordered, ordered[1:])),
        "overhead": cost,
        "runs": runs,
        "summary": summary(runs, len(paths)),
        "targets": TARGETS,
    }
    results["checks"] = checks(results["summary"])
    publish(results, report(results), output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
