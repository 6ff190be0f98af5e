from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import distill
import hwprofile
from distill import TeacherCNN, TeacherError, load_teacher


def test_builtin_teacher_is_accurate_and_cached(digits: distill.Dataset, digits_outputs: distill.TeacherOutputs,
                                                cache_dir: Path) -> None:
    assert digits_outputs.accuracy(digits) > 0.9  # 3 epochs already do well on digits
    cached = sorted((cache_dir / "teachers").glob("builtin-*.pt"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    again = load_teacher("builtin", digits, cache_dir, epochs=3)
    assert cached[0].stat().st_mtime_ns == mtime  # loaded, not retrained
    np.testing.assert_allclose(again.logits(digits.normalise(digits.val.x[:5])), np.asarray(digits_outputs.val[:5]), atol=1e-5)


def _trained_copy(digits: distill.Dataset) -> nn.Module:
    return TeacherCNN(digits.input_shape, digits.num_classes).eval()


def test_file_teachers_torch_save_torchscript_and_onnx(digits: distill.Dataset, tmp_path: Path) -> None:
    module = _trained_copy(digits)
    expected = module(torch.from_numpy(digits.normalise(digits.val.x[:4]))).detach().numpy()
    torch.save(module, tmp_path / "t.pt")
    torch.jit.script(module).save(str(tmp_path / "t.ts"))
    hwprofile.export_onnx(module, digits.input_shape, tmp_path / "t.onnx")
    for name in ("t.pt", "t.ts", "t.onnx"):
        teacher = load_teacher(str(tmp_path / name), digits, tmp_path)
        np.testing.assert_allclose(teacher.logits(digits.normalise(digits.val.x[:4])), expected, atol=1e-4)
        assert teacher.identity.startswith("file-")


def test_teacher_errors_name_the_problem(digits: distill.Dataset, tmp_path: Path) -> None:
    with pytest.raises(TeacherError, match="absent.pt' does not exist"):
        load_teacher(str(tmp_path / "absent.pt"), digits, tmp_path)
    torch.save(TeacherCNN((1, 8, 8), 3), tmp_path / "three.pt")
    with pytest.raises(TeacherError, match=r"maps inputs \(2, 1, 8, 8\) to \(2, 3\); expected \(2, 10\)"):
        load_teacher(str(tmp_path / "three.pt"), digits, tmp_path)
    torch.save(TeacherCNN((3, 8, 8), 10), tmp_path / "rgb.pt")
    with pytest.raises(TeacherError, match=r"fails on inputs of shape \(2, 1, 8, 8\)"):
        load_teacher(str(tmp_path / "rgb.pt"), digits, tmp_path)
    torch.save(TeacherCNN((1, 8, 8), 10).state_dict(), tmp_path / "weights.pt")
    with pytest.raises(TeacherError, match="holds a .*Dict, not an nn.Module"):
        load_teacher(str(tmp_path / "weights.pt"), digits, tmp_path)
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(TeacherError, match="ONNX Runtime cannot load teacher"):
        load_teacher(str(tmp_path / "junk.onnx"), digits, tmp_path)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(TeacherError, match="Cannot load teacher .*junk.pt"):
        load_teacher(str(tmp_path / "junk.pt"), digits, tmp_path)
