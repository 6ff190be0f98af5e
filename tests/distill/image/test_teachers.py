from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import distill
import hwprofile
from distill import DeadlineReached, TeacherCNN, TeacherError, load_teacher
from distill.image.builtin import builtin_teacher


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


def test_the_builtin_teacher_stops_at_its_deadline_and_resumes_from_its_checkpoint(
        digits: distill.Dataset, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    whole = builtin_teacher(digits, tmp_path / "whole", epochs=2)  # 33 steps of 35 images an epoch
    cache = tmp_path / "cache"
    for step in (1, 2):  # the deadline has passed: each run takes one step, saves its state and stops
        with pytest.raises(DeadlineReached, match=rf"stopped at epoch {step / 33:.2f} of 2, checkpoint saved in "
                                                  r".*\.checkpoint; run the same command again to resume it"):
            builtin_teacher(digits, cache, epochs=2, deadline=0.0)
        [checkpoint] = (cache / "teachers").glob("*.checkpoint")
        assert torch.load(checkpoint)["step"] == step and not list((cache / "teachers").glob("*.pt"))
    with caplog.at_level(logging.INFO, logger="distill"):
        resumed = builtin_teacher(digits, cache, epochs=2)
    assert "at step 2 of 66" in caplog.text and "Teacher epoch 1 of 2" in caplog.text
    assert not checkpoint.exists() and len(list((cache / "teachers").glob("*.pt"))) == 1  # finished: cached
    for mine, theirs in zip(resumed.module.state_dict().values(), whole.module.state_dict().values()):
        torch.testing.assert_close(mine, theirs)  # the interrupted run is the uninterrupted one


def test_the_builtin_teacher_fits_every_image_size() -> None:
    for shape in ((1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 96, 128), (3, 224, 224)):
        assert TeacherCNN(shape, 7)(torch.zeros(2, *shape)).shape == (2, 7)
