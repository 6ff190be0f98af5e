"""Peak resident memory of a search on data that need not fit in memory, and the cost of decoding a folder.

Run from the repository root::

    python bench/data_memory.py            # Fashion-MNIST (60k) and a generated 20,000-image 96x96 RGB folder
    python bench/data_memory.py --quick    # 2,000 generated images, to try the script (data_memory-quick.json)

For each data set it runs ``nas search`` as a child process (3 trials of 30 distillation steps, the built-in
teacher trained for 1 epoch, a fresh --out and --cache-dir in a temporary folder) and reports its peak resident
memory: ``ru_maxrss`` of the child from ``wait4`` (the largest of the search process and the decoding workers
it waited for), and the largest sum of VmRSS over the child's process tree, polled every 50 ms. Targets:
<= 1.5 GB on Fashion-MNIST (``mnist:/usr/share/datasets/fashion-mnist``, Debian's ``dataset-fashion-mnist``),
<= 2 GB on the folder. It also times loading the folder into a fresh cache (decoding every image) and again
(memory-mapping the cache), and writes everything to ``bench/results/data_memory.json``.

The folder is generated deterministically in a temporary folder: 10 classes of 2,000 PNG images each, stripes
whose orientation and frequency are the class (5 frequencies x 2 orientations), with a random phase, random
colours and noise.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import distill
from _results import RESULTS, ROOT, header, load_before, publish  # bench/ is on sys.path when a script runs

FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES, SIZE = 10, 96
TARGETS_MB = {"fashion-mnist": 1536, "folder": 2048}
SEARCH = ["--trials", "3", "--steps", "30", "--teacher-epochs", "1", "--sampler", "random"]


def write_images(root: str, start: int, stop: int, per_class: int) -> None:
    """Images ``start..stop-1`` of the generated set (image ``i`` is of class ``i // per_class``), as PNG files."""
    from PIL import Image

    rows, cols = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    for index in range(start, stop):
        label = index // per_class
        rng = np.random.default_rng(index)
        cycles = 3 + 2 * (label % 5)
        axis = rows if label < 5 else cols
        wave = 0.5 + 0.5 * np.sin(2 * np.pi * (cycles * axis + rng.random()))
        low, high = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        pixels = low + wave[..., None] * (high - low) + rng.normal(0, 20, (SIZE, SIZE, 3))
        folder = Path(root) / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{index:05d}.png", compress_level=1)


def generate_folder(root: Path, count: int) -> float:
    """Write ``count`` images (``count / 10`` per class) under ``root`` with every core; returns the seconds."""
    start, per_class, step = time.perf_counter(), count // CLASSES, 500
    with concurrent.futures.ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(write_images, [str(root)] * len(range(0, count, step)), range(0, count, step),
                      [min(i + step, count) for i in range(0, count, step)], [per_class] * len(range(0, count, step))))
    return time.perf_counter() - start


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    queue += [int(child) for child in handle.read().split()]
        except OSError:
            continue
    return found


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            return next((int(line.split()[1]) for line in handle if line.startswith("VmRSS:")), 0)
    except OSError:
        return 0


def measure_search(data: str, workdir: Path, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Run ``nas search`` on ``data`` as a child process: its wall time and peak resident memory."""
    command = [sys.executable, "-m", "nas", "search", "--data", data, *SEARCH, *extra,
               "--out", str(workdir / "out"), "--cache-dir", str(workdir / "cache")]
    print(f"$ {' '.join(command[1:])}", flush=True)
    workdir.mkdir(parents=True)
    start, tree_peak_kb = time.perf_counter(), 0
    with open(workdir / "stdout.txt", "w+") as stdout, open(workdir / "stderr.txt", "w+") as stderr:
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True, cwd=ROOT)
        while True:  # wait4 rather than Popen.wait: it gives this child's resource usage
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            tree_peak_kb = max(tree_peak_kb, sum(_rss_kb(p) for p in _tree(child.pid)))
            time.sleep(0.05)
        child.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        stdout.seek(0)
        stderr.seek(0)
        out, err = stdout.read(), stderr.read()
    if child.returncode != 0:
        raise SystemExit(f"nas search failed ({child.returncode}):\n{err[-3000:]}")
    return {"command": command[1:], "seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024,
            "peak_tree_rss_mb": tree_peak_kb / 1024, "summary": out.strip().splitlines()[0]}


def time_folder_loads(folder: Path, cache: Path) -> dict[str, float]:
    """Seconds to load the folder into an empty cache (decoding every image) and then from the cache."""
    start = time.perf_counter()
    first = distill.load_dataset(f"folder:{folder}", cache_dir=cache)
    decoded = time.perf_counter()
    second = distill.load_dataset(f"folder:{folder}", cache_dir=cache)
    cached = time.perf_counter()
    assert second.fingerprint == first.fingerprint
    images = len(first.train) + len(first.val) + (len(first.test) if first.test is not None else 0)
    cache_bytes = sum(f.stat().st_size for f in (cache / "images").rglob("*.npy"))
    return {"images": images, "first_load_s": decoded - start, "cached_load_s": cached - decoded,
            "images_per_s_decoding": images / (decoded - start), "cache_mb": cache_bytes / 2**20,
            "input_shape": list(first.input_shape)}


def report(results: dict[str, Any]) -> str:
    lines = ["data set            images  peak RSS (MB)  tree peak (MB)  target (MB)  search (s)"]
    for name, row in results["searches"].items():
        lines.append(f"{name:<18} {row['images']:>7}  {row['peak_rss_mb']:>13.0f}  {row['peak_tree_rss_mb']:>14.0f}  "
                     f"{row['target_mb']:>11}  {row['seconds']:>10.0f}  {'ok' if row['within_target'] else 'OVER'}")
    loads = results["folder_loads"]
    lines.append(f"folder: {loads['images']} images {loads['input_shape']}: first load (decode) "
                 f"{loads['first_load_s']:.1f} s ({loads['images_per_s_decoding']:.0f} images/s), cached load "
                 f"{loads['cached_load_s']:.2f} s; cache {loads['cache_mb']:.0f} MB")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 generated images; skips Fashion-MNIST")
    parser.add_argument("--output", type=Path, help="JSON file (default: bench/results/data_memory[-quick].json)")
    args = parser.parse_args(argv)
    count = 2000 if args.quick else 20_000
    output = args.output or RESULTS / f"data_memory{'-quick' if args.quick else ''}.json"
    load_at_start = load_before()
    searches: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-data-memory-") as tmp:
        workdir = Path(tmp)
        if not args.quick:
            if not FASHION.is_dir():
                raise SystemExit(f"{FASHION} is missing: apt-get install dataset-fashion-mnist")
            row = measure_search(f"mnist:{FASHION}", workdir / "fashion")
            searches["fashion-mnist"] = {**row, "images": 70_000, "target_mb": TARGETS_MB["fashion-mnist"]}
        folder = workdir / "images"
        print(f"Generating {count} {SIZE}x{SIZE} RGB images ...", flush=True)
        generate_s = generate_folder(folder, count)
        row = measure_search(f"folder:{folder}", workdir / "folder")
        searches["folder"] = {**row, "images": count, "target_mb": TARGETS_MB["folder"]}
        loads = time_folder_loads(folder, workdir / "load-cache")
    for row in searches.values():
        row["within_target"] = row["peak_rss_mb"] <= row["target_mb"]
    results = {**header(load_at_start), "settings": {"search": SEARCH, "folder_images": count, "size": SIZE,
                                                      "generate_s": generate_s, "quick": args.quick},
               "searches": searches, "folder_loads": loads,
               "self_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    publish(results, report(results), output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
