"""One prepared check of training on a CUDA GPU: the device, per-step distillation time CPU vs GPU, and a search.

Made to run once on a lent GPU machine (Python 3.12, a CUDA build of torch, no internet) in about 6 minutes, from
the repository root, with the wheels and the data that ``build/gpu/`` holds (see ``--wheels`` and ``--data``)::

    python bench/gpu_check.py --out "$OUT"                    # on the GPU machine
    python bench/gpu_check.py --out "$OUT" --parts search --workers 4   # a search of 4 processes sharing the GPU
    python bench/gpu_check.py --dry --out /tmp/gpu-check-dry   # here, on the CPU: a tiny run of every code path

Parts, each recorded in ``<out>/gpu_check.json`` as it ends (its result, or its error and traceback; one failing
part does not stop the others, and a killed run leaves the parts done so far):

- ``install``: the project's dependencies that this Python lacks, installed from the wheel folder (no index);
- ``environment`` (a): the GPU's name, memory and capability, the CUDA and cuDNN versions, ``nvidia-smi``;
- ``step_times`` (b): milliseconds per distillation step of the mbconv space's smallest, a mid-size (the first a
  seeded random sampler draws) and largest students on 1x28x28 Fashion-MNIST images, batches of 64 and 256, on the
  CPU (all its cores) and on the GPU in fp32, bf16 autocast, channels-last, and both; after warm-up steps;
- ``concurrency``: distillation steps per second of the whole GPU with 1, 2, 4, 8 and 16 processes each training
  the mid-size student at once (batch 64, fp32): whether students share one GPU faster than one after another, i.e.
  how many workers a GPU bench should run;
- ``search`` (c): ``nas search --device cuda`` on Fashion-MNIST (12k training images; validation carved from them;
  a 2k test file) within a time limit, then ``nas export`` of the best student with its test accuracy; with
  ``--workers N``, N worker processes share the GPU (on a journal storage). Flags that
  another change may add (``--augment``, ``--views``) are used only when ``nas search --help`` lists them.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project, installed or not
GPU_DIR = ROOT / "build" / "gpu"
# What a torch + torchvision + onnxruntime environment may lack of the project's dependencies; pip resolves theirs.
NEEDED = {"optuna": "optuna>=5.0,<6", "onnx": "onnx>=1.17", "matplotlib": "matplotlib>=3.8", "tqdm": "tqdm>=4.66",
          "onnxruntime": "onnxruntime>=1.20"}
# What each part does, within --budget-s (340 s): a CPU step costs 10-100x a GPU step, hence fewer CPU steps.
FULL: dict[str, Any] = {"cpu_steps": 6, "cpu_warmup": 1, "gpu_steps": 100, "gpu_warmup": 10, "batch_sizes": (64, 256),
                        "step_times_s": 100, "trials": 16, "search_timeout_s": 150, "teacher_epochs": 10, "epochs": 3,
                        "export_epochs": 15, "export_reserve_s": 60, "search_flags": (), "views": 8, "budget_s": 340,
                        "process_counts": (1, 2, 4, 8, 16), "concurrency_steps": 300, "concurrency_s": 150}
# --dry: every code path, tiny; one training thread (a shared CPU is slowed down many times over by more threads
# than it has free cores)
DRY: dict[str, Any] = {**FULL, "cpu_steps": 3, "cpu_warmup": 1, "gpu_steps": 3, "gpu_warmup": 1, "batch_sizes": (64,),
                       "trials": 2, "teacher_epochs": 1, "epochs": 0.05, "export_epochs": 0.05,
                       "export_reserve_s": 30, "search_flags": ("--train-threads", "1"), "views": 2,
                       "search_timeout_s": 400, "budget_s": 900, "process_counts": (1, 2), "concurrency_steps": 3}
PARTS = ("install", "environment", "data", "step_times", "concurrency", "search")
CUDA_VARIANTS = {"cuda_fp32": (False, False), "cuda_bf16": (True, False), "cuda_channels_last": (False, True),
                 "cuda_bf16_channels_last": (True, True)}


def run_part(results: dict[str, Any], name: str, work: Callable[[], Any], out: Path) -> None:
    """``results[name]`` = what ``work()`` returns, or its error; with its seconds; the JSON rewritten after it."""
    print(f"== {name}", flush=True)
    start = time.perf_counter()
    try:
        results[name] = {"ok": True, "result": work()}
    except BaseException as error:  # a part's failure (even an interrupt) is recorded; the next part still runs
        results[name] = {"ok": False, "error": f"{type(error).__name__}: {error}",
                         "traceback": traceback.format_exc()[-4000:]}
        print(results[name]["traceback"], file=sys.stderr, flush=True)
        if isinstance(error, KeyboardInterrupt):
            write(results, out)
            raise
    results[name]["seconds"] = round(time.perf_counter() - start, 2)
    write(results, out)


def write(results: dict[str, Any], out: Path) -> None:
    path = out / "gpu_check.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=2, default=str) + "\n")
    tmp.replace(path)


def tail(text: str, chars: int = 3000) -> str:
    return text[-chars:]


# -- install -------------------------------------------------------------------------------------------------


def install(wheels: Path, dry: bool) -> dict[str, Any]:
    """pip-install what is missing of :data:`NEEDED` from ``wheels`` alone (``dry``: only ask pip what it would do);
    when pip cannot install them all at once, each alone, so that one that cannot be had keeps no other out."""
    missing = [module for module in NEEDED if importlib.util.find_spec(module) is None]
    wanted = [NEEDED[module] for module in missing] or ([NEEDED["optuna"]] if dry else [])
    report: dict[str, Any] = {"missing": missing, "wheels": sorted(path.name for path in wheels.glob("*.whl"))}
    if not wanted:
        return report
    report["pip"] = [pip_install(wheels, wanted, dry)]
    if report["pip"][0]["returncode"] != 0 and len(wanted) > 1:
        report["pip"] += [pip_install(wheels, [requirement], dry) for requirement in wanted]
    importlib.invalidate_caches()
    report["still_missing"] = [module for module in NEEDED if importlib.util.find_spec(module) is None]
    if report["still_missing"] and not dry:
        raise RuntimeError(f"still missing after pip: {report['still_missing']}; pip said: {report['pip']}")
    return report


def pip_install(wheels: Path, requirements: list[str], dry: bool) -> dict[str, Any]:
    """``pip install --no-index --find-links wheels requirements``: its command, exit code and output's end."""
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels),
               *(["--dry-run"] if dry else []), *requirements]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    if done.returncode != 0 and "externally-managed" in done.stderr:  # a distribution's Python: this machine is lent
        command.insert(4, "--break-system-packages")
        done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    return {"command": " ".join(command), "returncode": done.returncode, "output": tail(done.stdout + done.stderr)}


# -- (a) the environment -------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "torch": torch.__version__, "torch_cuda": torch.version.cuda,
                            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                            "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count(),
                            "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=round(properties.total_memory / 2**30, 1),
                    capability=f"{properties.major}.{properties.minor}", bf16_supported=torch.cuda.is_bf16_supported())
    try:
        info["nvidia_smi"] = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout[-3000:]
    except (OSError, subprocess.SubprocessError) as error:
        info["nvidia_smi"] = f"not run: {error}"
    for module in ("numpy", "onnxruntime", "onnx", "optuna", "torchvision"):
        try:
            info[module] = __import__(module).__version__
        except Exception as error:  # absent or broken: say so, go on
            info[module] = f"unavailable: {type(error).__name__}: {error}"
    print(f"GPU: {info.get('gpu', 'none')}; torch {info['torch']} (CUDA {info['torch_cuda']})", flush=True)
    return info


# -- (b) per-step distillation time ----------------------------------------------------------------------------


def fashion(data_dir: Path, scratch: Path) -> tuple[str, str | None]:
    """The ``--data`` and ``--test-data`` sources: the carried Fashion-MNIST files, else random uint8 images."""
    train, test = data_dir / "fashion-train.npz", data_dir / "fashion-test.npz"
    if train.is_file():
        return f"npz:{train}", f"npz:{test}" if test.is_file() else None
    import numpy as np

    rng = np.random.default_rng(0)
    path = scratch / "random-28x28.npz"
    np.savez(path, x=rng.integers(0, 256, (14000, 28, 28), dtype=np.uint8), y=rng.integers(0, 10, 14000))
    return f"npz:{path}", None


def students() -> dict[str, Any]:
    """The smallest, a mid-size and the largest mbconv architectures (mid-size: needs Optuna; else left out)."""
    from search_spaces import get_space

    space = get_space("mbconv")
    archs = {"smallest": space.smallest()}
    try:
        import nas

        archs["mid"] = nas.random_archs(space, 1, seed=0)[0]
    except Exception as error:  # Optuna missing: the two ends still tell the story
        print(f"no mid-size student: {type(error).__name__}: {error}", file=sys.stderr)
    archs["largest"] = space.largest()
    return archs


def step_times(source: tuple[str, str | None], device: str, settings: dict[str, Any], stop_at: float) -> dict[str, Any]:
    """Milliseconds per distillation step (:func:`distill.train` from cached logits) per student, batch and variant;
    rows not started by ``stop_at`` (``time.monotonic()``) are left out, so that the search keeps its time."""
    import numpy as np
    import torch

    import distill
    from search_spaces import get_space, seeded_build

    data = distill.load_dataset(source[0], test_data=source[1])
    logits = np.random.default_rng(0).standard_normal((len(data.train), data.num_classes)).astype(np.float32)
    soft = distill.CachedLogits(logits)
    target = distill.resolve_device(device)
    variants = {name: distill.Placement(target, bf16, channels_last)
                for name, (bf16, channels_last) in CUDA_VARIANTS.items() if target.type == "cuda"}
    variants["cpu"] = distill.Placement.on("cpu")  # last: the GPU's rows matter most if time runs out
    space = get_space("mbconv")
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    for name, arch in students().items():
        original = seeded_build(space, arch, 0, data.input_shape, data.num_classes)
        params = sum(p.numel() for p in original.parameters())
        for batch_size in settings["batch_sizes"]:
            for variant, placement in variants.items():
                if time.monotonic() > stop_at:
                    skipped.append(f"{name}/b{batch_size}/{variant}")
                    continue
                row: dict[str, Any] = {"student": name, "params": params, "batch_size": batch_size, "variant": variant}
                side = "gpu" if placement.cuda else "cpu"  # the CPU is the slow side: fewer steps
                warmup, count = settings[f"{side}_warmup"], settings[f"{side}_steps"]
                student = copy.deepcopy(original)
                try:  # a failing variant (e.g. out of memory) is recorded; the others still run
                    if placement.cuda:
                        torch.cuda.reset_peak_memory_stats(placement.device)
                    distill.train(student, data, soft, distill.TrainConfig(steps=warmup, batch_size=batch_size),
                                  placement=placement)
                    timed = distill.train(student, data, soft, distill.TrainConfig(steps=count, batch_size=batch_size,
                                                                                   seed=1), placement=placement)
                    row.update(steps=timed.steps, ms_per_step=round(timed.step_ms, 3), final_losses=timed.final_losses)
                    if placement.cuda:
                        row["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(placement.device) / 2**20, 1)
                except Exception as error:
                    row["error"] = f"{type(error).__name__}: {error}"[:2000]
                rows.append(row)
                shown = f"{row['ms_per_step']:.2f} ms/step" if "ms_per_step" in row else row["error"]
                print(f"  {name:>8} batch {batch_size:>3} {variant:>24}: {shown}", flush=True)
    return {"threads": torch.get_num_threads(), "device": str(target), "rows": rows, "skipped": skipped,
            "speedup_vs_cpu": speedups(rows)}


def speedups(rows: list[dict[str, Any]]) -> dict[str, float]:
    """CPU ms per step over each variant's, per student and batch size."""
    timed = [r for r in rows if "ms_per_step" in r]
    cpu = {(r["student"], r["batch_size"]): r["ms_per_step"] for r in timed if r["variant"] == "cpu"}
    return {f"{r['student']}/b{r['batch_size']}/{r['variant']}": round(cpu[r["student"], r["batch_size"]] /
                                                                         r["ms_per_step"], 2)
            for r in timed if r["variant"] != "cpu" and (r["student"], r["batch_size"]) in cpu}


def concurrent_student(source: tuple[str, str | None], device: str, arch: dict[str, Any], settings: dict[str, Any],
                       threads: int, barrier: Any, results: Any) -> None:
    """One process of the concurrency part: warm up, wait for the others, then put (start, end) of its timed steps."""
    import numpy as np
    import torch

    import distill
    from search_spaces import get_space, seeded_build

    torch.set_num_threads(threads)
    data = distill.load_dataset(source[0], test_data=source[1])
    soft = distill.CachedLogits(np.random.default_rng(0).standard_normal((len(data.train), data.num_classes))
                                .astype(np.float32))
    student = seeded_build(get_space("mbconv"), arch, 0, data.input_shape, data.num_classes)
    placement = distill.Placement.on(device)
    distill.train(student, data, soft, distill.TrainConfig(steps=settings["gpu_warmup"]), placement=placement)
    barrier.wait()
    start = time.perf_counter()
    distill.train(student, data, soft, distill.TrainConfig(steps=settings["concurrency_steps"], seed=1),
                  placement=placement)
    results.put((start, time.perf_counter()))


def concurrency(source: tuple[str, str | None], device: str, settings: dict[str, Any], stop_at: float) -> dict[str, Any]:
    """Steps per second of all processes together when N train a student each at once, for each N of
    ``process_counts`` (counts not started by ``stop_at`` are left out); the speedup over one process."""
    context = multiprocessing.get_context("spawn")
    students_ = students()
    arch = students_.get("mid", students_["largest"])
    rows: list[dict[str, Any]] = []
    for count in settings["process_counts"]:
        if time.monotonic() > stop_at:
            rows.append({"processes": count, "skipped": "out of time"})
            continue
        barrier, results = context.Barrier(count), context.Queue()
        threads = max(1, (os.cpu_count() or 1) // count)
        workers = [context.Process(target=concurrent_student, args=(source, device, arch, settings, threads, barrier,
                                                                     results)) for _ in range(count)]
        for worker in workers:
            worker.start()
        try:
            windows = [results.get(timeout=max(30.0, stop_at - time.monotonic() + 60)) for _ in workers]
        finally:
            for worker in workers:
                worker.join(timeout=30)
                if worker.is_alive():
                    worker.kill()
        wall = max(end for _, end in windows) - min(start for start, _ in windows)
        row = {"processes": count, "threads_each": threads, "steps_each": settings["concurrency_steps"],
               "wall_s": round(wall, 3), "steps_per_s": round(count * settings["concurrency_steps"] / wall, 1)}
        rows.append(row)
        print(f"  {count:>2} process(es): {row['steps_per_s']} steps/s together", flush=True)
    alone = next((r["steps_per_s"] for r in rows if r["processes"] == 1 and "steps_per_s" in r), None)
    return {"device": device, "rows": rows, "speedup_vs_one": {str(r["processes"]): round(r["steps_per_s"] / alone, 2)
                                                               for r in rows if alone and "steps_per_s" in r}}


# -- (c) a search and an export ----------------------------------------------------------------------------------


def nas_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "nas", *args]


def run_nas(args: list[str], limit_s: float, env: dict[str, str]) -> dict[str, Any]:
    """Run ``nas ARGS`` within ``limit_s`` seconds; its exit code, seconds and output's end."""
    start = time.perf_counter()
    try:
        done = subprocess.run(nas_command(*args), cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=max(1.0, limit_s))
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as expired:
        code = "killed after timeout"
        stdout, stderr = [(part or b"").decode(errors="replace") if isinstance(part, bytes) else (part or "")
                          for part in (expired.stdout, expired.stderr)]
    print(f"  nas {args[0]}: exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
    return {"command": " ".join(nas_command(*args)), "exit": code, "seconds": round(time.perf_counter() - start, 1),
            "stdout": tail(stdout), "stderr": tail(stderr)}


def optional_flags(env: dict[str, str], views: int) -> list[str]:
    """``--augment standard --views V`` where this version of ``nas search`` has those flags; else nothing."""
    help_text = subprocess.run(nas_command("search", "--help"), cwd=ROOT, env=env, capture_output=True, text=True,
                               timeout=120).stdout
    flags = []
    if "--augment" in help_text:
        flags += ["--augment", "standard"]
    if "--views" in help_text:
        flags += ["--views", str(views)]
    return flags


def trial_rows(storage: str) -> list[dict[str, Any]]:
    """Each trial's state and what it recorded: where it trained, its score, latency and distillation time."""
    import optuna

    from nas.storage import create_storage

    study = optuna.load_study(storage=create_storage(storage, heartbeat_s=10), study_name="search")
    return [{"number": t.number, "state": t.state.name, "status": t.user_attrs.get("status"),
             "train_device": t.user_attrs.get("train_device"), "score": t.user_attrs.get("score"),
             "latency_ms": (t.user_attrs.get("latency") or {}).get("median_ms"),
             "steps": t.user_attrs.get("steps"), "distill_s": t.user_attrs.get("distill_s")} for t in study.trials]


def search_and_export(source: tuple[str, str | None], device: str, out: Path, scratch: Path, settings: dict[str, Any],
                      deadline: float, workers: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    search_out, cache = out / "search", scratch / "cache"
    extra = optional_flags(env, settings["views"])
    # several workers need a storage that processes share; SQLite is the search's default for one
    storage = f"journal:{search_out / 'study.journal'}" if workers > 1 else f"sqlite:///{search_out / 'study.db'}"
    search_s = min(settings["search_timeout_s"], deadline - time.monotonic() - settings["export_reserve_s"])
    if search_s < 20:
        raise TimeoutError(f"only {search_s:.0f} s left for the search: skipped")
    args = ["search", "--data", source[0], *(["--test-data", source[1]] if source[1] else []), "--device", device,
            "--trials", str(settings["trials"]), "--timeout", str(int(search_s)),
            "--teacher-epochs", str(settings["teacher_epochs"]), "--epochs", str(settings["epochs"]),
            "--out", str(search_out), "--cache-dir", str(cache), "--storage", storage, "--workers", str(workers),
            "-v", *settings["search_flags"], *extra]
    result: dict[str, Any] = {"flags_added": extra, "search": run_nas(args, search_s + 45, env)}
    for name in ("pareto.json", "config.json"):
        if (search_out / name).is_file():
            result[name] = json.loads((search_out / name).read_text())
    try:
        result["trials"] = trial_rows(storage)
    except Exception as error:  # no study: the search's own output says why
        result["trials"] = f"unreadable: {type(error).__name__}: {error}"
    if result["search"]["exit"] != 0:
        return result
    export_s = max(45.0, deadline - time.monotonic())
    result["export"] = run_nas(["export", str(search_out), "--epochs", str(settings["export_epochs"]), "--output",
                                str(out / "best.onnx")], export_s, env)
    if (out / "best.json").is_file():
        report = json.loads((out / "best.json").read_text())
        keys = ("test_score", "test_score_ci95", "score", "teacher_score", "test_note", "train_device", "device",
                "latency_ms")
        result["best"] = {key: report.get(key) for key in keys}
        result["best_report"] = report
    return result


# -- main -----------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ROOT / "runs" / "gpu-check")),
                        help="folder for gpu_check.json and the search's files (default: $OUT)")
    parser.add_argument("--device", default="cuda", help="the GPU to check (default: cuda)")
    parser.add_argument("--dry", action="store_true", help="a tiny run on the CPU: every code path (a few minutes)")
    parser.add_argument("--data", type=Path, default=GPU_DIR, help="folder of fashion-train.npz and fashion-test.npz")
    parser.add_argument("--wheels", type=Path, default=GPU_DIR / "wheels", help="wheels of the missing dependencies")
    parser.add_argument("--budget-s", type=float, help="wall time for the whole check (default: 340; dry: 900)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of the search part (default: 1)")
    parser.add_argument("--parts", nargs="+", choices=PARTS[3:], default=PARTS[3:],
                        help="the measuring parts to run (default: all; install, environment and data always run)")
    args = parser.parse_args(argv)
    if args.dry and args.device == "cuda":
        args.device = "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {**(DRY if args.dry else FULL), **({"budget_s": args.budget_s} if args.budget_s else {})}
    deadline = time.monotonic() + settings["budget_s"]
    if args.dry:
        torch.set_num_threads(1)
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv, "dry": args.dry,
                               "device": args.device, "settings": settings, "workers": args.workers}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        scratch = Path(tmp)
        run_part(results, "install", lambda: install(args.wheels, args.dry), args.out)
        run_part(results, "environment", environment, args.out)
        run_part(results, "data", lambda: fashion(args.data, scratch), args.out)
        source = results["data"].get("result")  # (--data, --test-data); None when that part failed
        measures: dict[str, Callable[[], Any]] = {
            "step_times": lambda: step_times(source, args.device, settings,
                                             time.monotonic() + settings["step_times_s"]),
            "concurrency": lambda: concurrency(source, args.device, settings,
                                               time.monotonic() + settings["concurrency_s"]),
            "search": lambda: search_and_export(source, args.device, args.out, scratch, settings, deadline,
                                                args.workers)}
        for name in args.parts:
            run_part(results, name, measures[name], args.out)
    results["total_s"] = round(settings["budget_s"] - (deadline - time.monotonic()), 1)
    write(results, args.out)
    print(f"Wrote {args.out / 'gpu_check.json'} ({results['total_s']} s); parts ok: "
          + ", ".join(f"{name} {results[name]['ok']}" for name in PARTS if name in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
