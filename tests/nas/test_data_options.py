"""Held-out test splits through the CLI: `nas export` judges the ONNX file on them; the data settings are checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import distill
from nas.cli import main

FAST = ["--trials", "1", "--steps", "3", "--sampler", "random", "--early-stop", "off"]


def _export(out: Path, target: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict, list[str]]:
    capsys.readouterr()
    assert main(["export", str(out), "--epochs", "0.5", "--output", str(target)]) == 0
    return json.loads(target.with_suffix(".json").read_text()), capsys.readouterr().out.splitlines()


def _onnx_accuracy(path: Path, split: distill.ImageSplit, normalise: dict) -> float:
    """The file's accuracy on ``split``, normalised as FILE.json says a deployment must."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    mean, std = (np.asarray(normalise[k], np.float32)[:, None, None] for k in ("mean", "std"))
    logits = session.run(None, {"input": (split.x.astype(np.float32) - mean) / std})[0]
    return float((logits.argmax(1) == split.y).mean())


def test_export_scores_the_onnx_file_on_the_carved_digits_test_split(tmp_path: Path, cache_dir: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["search", *FAST, "--teacher-epochs", "3", "--out", str(out), "--cache-dir", str(cache_dir)]) == 0
    metadata, printed = _export(out, tmp_path / "s.onnx", capsys)
    test = distill.load_dataset("digits").test
    assert test is not None and metadata["test_samples"] == len(test) == 359
    assert metadata["test_score"] == pytest.approx(_onnx_accuracy(tmp_path / "s.onnx", test, metadata["normalise"]))
    low, high = metadata["test_score_ci95"]
    assert low <= metadata["test_score"] <= high and high - low > 0.01
    assert metadata["test_note"].startswith("test split: 0.2 of digits (359 images)")
    assert "score" in metadata  # the validation score, beside it
    assert any(line.startswith("  test accuracy ") and "of the ONNX file in ONNX Runtime" in line for line in printed)
    assert main(["search", *FAST, "--test-fraction", "0.1", "--out", str(out), "--cache-dir", str(cache_dir)]) == 2
    assert "(test_fraction: study has 0.2, got 0.1)" in capsys.readouterr().err


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist_style(directory: Path, prefixes: dict[str, int]) -> None:
    """8x8 images of 4 classes (a bright quadrant per class, plus noise) in IDX files ``<prefix>-*``."""
    rng = np.random.default_rng(0)
    directory.mkdir()
    for prefix, count in prefixes.items():
        labels = np.arange(count) % 4
        images = rng.integers(0, 60, (count, 8, 8))
        for index, label in enumerate(labels):
            row, col = divmod(int(label), 2)
            images[index, 4 * row:4 * row + 4, 4 * col:4 * col + 4] += 180
        _write_idx(directory / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels)


def test_export_scores_the_onnx_file_on_the_t10k_files(tmp_path: Path, cache_dir: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "mnist"
    _write_mnist_style(data_dir, {"train": 160, "t10k": 48})
    out = tmp_path / "out"
    assert main(["search", *FAST, "--data", f"mnist:{data_dir}", "--teacher-epochs", "1", "--out", str(out),
                 "--cache-dir", str(cache_dir)]) == 0
    metadata, printed = _export(out, tmp_path / "m.onnx", capsys)
    test = distill.load_dataset(f"mnist:{data_dir}").test
    assert test is not None and metadata["test_samples"] == 48
    assert metadata["test_note"] == f"test split: the t10k-* files of {data_dir} (48 images)"
    assert metadata["test_score"] == pytest.approx(_onnx_accuracy(tmp_path / "m.onnx", test, metadata["normalise"]))


def test_without_a_test_split_export_says_why_in_one_line(tmp_path: Path, cache_dir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "mnist"
    _write_mnist_style(data_dir, {"train": 120})
    out = tmp_path / "out"
    assert main(["search", *FAST, "--data", f"mnist:{data_dir}", "--test-fraction", "0", "--teacher-epochs", "1",
                 "--out", str(out), "--cache-dir", str(cache_dir)]) == 0
    metadata, printed = _export(out, tmp_path / "m.onnx", capsys)
    assert metadata["test_score"] is None and metadata["test_score_ci95"] is None
    why = f"no test split: mnist:{data_dir} has none of its own and test_fraction is 0"
    assert metadata["test_note"] == why and printed.count(f"  {why}") == 1
    assert not any("test accuracy" in line for line in printed)


@pytest.mark.parametrize("flags, message", [
    (["--test-data", "npz:/no/such.npz"], "Data file '/no/such.npz' does not exist."),
    (["--test-fraction", "1.5"], "--test-fraction must be in [0, 1), but got 1.5."),
    (["--image-size", "96x"], "--image-size: An image size must be H or HxW"),
    (["--image-size", "16"], "An image size resizes folder: images only, but the data is 'digits'."),
])
def test_bad_data_settings_fail_in_one_line_before_any_work(flags: list[str], message: str, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "--out", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "cache"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("error: ")
    assert not (tmp_path / "o" / "study.db").exists() and not (tmp_path / "cache" / "teachers").exists()


def test_test_data_with_other_classes_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "other.npz", x=rng.integers(0, 17, (20, 8, 8)), y=np.arange(20) % 3)
    assert main(["search", "--test-data", f"npz:{tmp_path / 'other.npz'}", "--out", str(tmp_path / "o"),
                 "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: The classes of --test-data npz:{tmp_path / 'other.npz'} must equal the training data's, "
                   "but they are ['0', '1', '2'] against ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'].")
