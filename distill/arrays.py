"""Arrays cached on disk: written atomically, loaded memory-mapped, computed once; their rows read as tensors.

Both teacher-output caches (``distill.image.cache``, ``distill.text.cache``) go through :func:`cached_arrays`,
and every distillation term reads its batch's rows of a cached array through :func:`rows`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

K = TypeVar("K", bound=Hashable)


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``path``: concurrent processes never read a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp{path.suffix}")
    write(tmp)
    tmp.replace(path)


def cached_arrays(paths: Mapping[K, Path], compute: Callable[[Sequence[K]], Mapping[K, np.ndarray]]) -> dict[K, np.ndarray]:
    """The ``.npy`` arrays at ``paths``, memory-mapped; the missing ones are computed by one call of
    ``compute(missing keys)`` and saved first (anything else it returns is ignored)."""
    missing = [key for key, path in paths.items() if not path.is_file()]
    if missing:
        computed = compute(missing)
        for key in missing:
            write_atomically(paths[key], lambda tmp, array=computed[key]: np.save(tmp, array))
    return {key: np.load(path, mmap_mode="r") for key, path in paths.items()}


def rows(array: np.ndarray, indices: np.ndarray, device: torch.device | None = None) -> torch.Tensor:
    """Rows ``indices`` of a (memory-mapped) array, as a float32 tensor (on ``device``, default the CPU)."""
    return torch.from_numpy(np.asarray(array[indices])).to(device, non_blocking=True).float()
