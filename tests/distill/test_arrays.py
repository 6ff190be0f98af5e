from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from distill.arrays import cached_arrays, rows, write_atomically


def test_only_missing_arrays_are_computed_once_and_come_back_memory_mapped(tmp_path: Path) -> None:
    calls: list[list[str]] = []

    def compute(missing: Sequence[str]) -> dict[str, np.ndarray]:
        calls.append(list(missing))
        return {"a": np.arange(6.0).reshape(3, 2), "b": np.ones(3), "extra": np.zeros(1)}

    paths = {"a": tmp_path / "x" / "a.npy", "b": tmp_path / "x" / "b.npy"}
    first = cached_arrays(paths, compute)
    assert calls == [["a", "b"]] and sorted(p.name for p in (tmp_path / "x").iterdir()) == ["a.npy", "b.npy"]
    np.testing.assert_array_equal(first["a"], np.arange(6.0).reshape(3, 2))
    paths["c"] = tmp_path / "x" / "c.npy"
    second = cached_arrays(paths, lambda missing: calls.append(list(missing)) or {"c": np.full(2, 7.0)})
    assert calls[1:] == [["c"]] and all(isinstance(array, np.memmap) for array in second.values())
    assert cached_arrays(paths, lambda missing: calls.append(list(missing)) or {})["c"].tolist() == [7.0, 7.0]
    assert len(calls) == 2  # everything cached: nothing computed


def test_atomic_writes_leave_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "model.pt"
    write_atomically(target, lambda tmp: tmp.write_bytes(b"done"))
    assert target.read_bytes() == b"done" and [p.name for p in target.parent.iterdir()] == ["model.pt"]


def test_rows_of_a_cached_array_are_float32_tensors(tmp_path: Path) -> None:
    np.save(tmp_path / "half.npy", np.arange(8, dtype=np.float16).reshape(4, 2))
    array = np.load(tmp_path / "half.npy", mmap_mode="r")
    picked = rows(array, np.array([3, 0]))
    assert picked.dtype == torch.float32
    torch.testing.assert_close(picked, torch.tensor([[6.0, 7.0], [0.0, 1.0]]))
