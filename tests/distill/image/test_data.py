from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from distill import DataError, load_dataset
from tests.conftest import MNIST_DIR


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_digits_split_is_stratified_seeded_and_normalised() -> None:
    data = load_dataset("digits", seed=1)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert len(data.x_train) + len(data.x_val) == 1797
    assert len(data.x_val) == round(0.2 * 1797)
    assert data.x_train.dtype == np.float32
    assert abs(float(data.x_train.mean())) < 1e-4 and float(data.x_train.std()) == pytest.approx(1.0, abs=1e-3)
    assert np.bincount(data.y_val).min() >= 30  # every class in validation
    again = load_dataset("digits", seed=1)
    assert np.array_equal(again.y_val, data.y_val) and again.fingerprint == data.fingerprint
    assert load_dataset("digits", seed=2).fingerprint != data.fingerprint


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="shared MNIST test split not present")
def test_mnist_gzipped_idx_files() -> None:
    data = load_dataset(f"mnist:{MNIST_DIR}")
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert len(data.x_train) + len(data.x_val) == 10_000


def test_mnist_uncompressed_idx_and_mismatched_counts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    _write_idx(tmp_path / "train-images-idx3-ubyte", rng.integers(0, 255, (40, 6, 5)))
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(40) % 4)
    data = load_dataset(f"mnist:{tmp_path}")
    assert data.input_shape == (1, 6, 5) and data.classes == ["0", "1", "2", "3"]
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(39) % 4)
    with pytest.raises(DataError, match="40 images but train-labels-idx1-ubyte 39 labels"):
        load_dataset(f"mnist:{tmp_path}")


def test_corrupt_idx_and_missing_dir(tmp_path: Path) -> None:
    (tmp_path / "t-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03garbage"))
    (tmp_path / "t-labels-idx1-ubyte").write_bytes(b"nope")
    with pytest.raises(DataError, match="is not an IDX file"):
        load_dataset(f"mnist:{tmp_path}")
    with pytest.raises(DataError, match="'/no/such/dir' does not exist"):
        load_dataset("mnist:/no/such/dir")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="must hold matching"):
        load_dataset(f"mnist:{empty}")


@pytest.mark.parametrize("layout", ["nhw", "nchw", "nhwc"])
def test_npz_layouts(tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(0)
    x = {"nhw": rng.random((30, 9, 7)), "nchw": rng.random((30, 3, 9, 7)), "nhwc": rng.random((30, 9, 7, 3))}[layout]
    np.savez(tmp_path / "d.npz", x=x, y=np.repeat([5, 7, 9], 10))
    data = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert data.input_shape == ((1, 9, 7) if layout == "nhw" else (3, 9, 7))
    assert data.classes == ["5", "7", "9"] and set(np.unique(data.y_train)) == {0, 1, 2}


def test_npz_errors(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((10, 4, 4)), labels=np.zeros(10))
    with pytest.raises(DataError, match="must hold arrays 'x' and 'y'; it holds \\['labels', 'x'\\]"):
        load_dataset(f"npz:{path}")
    np.savez(path, x=np.zeros((10, 4)), y=np.arange(10) % 2)
    with pytest.raises(DataError, match="expected x of shape .* but got x \\(10, 4\\)"):
        load_dataset(f"npz:{path}")
    np.savez(path, x=np.zeros((10, 4, 4)), y=np.zeros(10, dtype=int))
    with pytest.raises(DataError, match="need at least 2 classes"):
        load_dataset(f"npz:{path}")
    np.savez(path, x=np.zeros((10, 4, 4)), y=np.linspace(0, 1, 10))
    with pytest.raises(DataError, match="labels must be integers"):
        load_dataset(f"npz:{path}")
    np.savez(path, x=np.full((10, 4, 4), np.nan), y=np.arange(10) % 2)
    with pytest.raises(DataError, match="finite"):
        load_dataset(f"npz:{path}")
    np.savez(path, x=np.zeros((5, 4, 4)), y=np.array([0, 0, 0, 0, 1]))
    with pytest.raises(DataError, match="class '1' has 1"):
        load_dataset(f"npz:{path}")
    (tmp_path / "bad.npz").write_text("not a zip")
    with pytest.raises(DataError, match="Cannot read .*bad.npz"):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")


def test_image_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(6):
            size = (12, 10) if i else (14, 9)  # resized to the first image's size
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    data = load_dataset(f"folder:{tmp_path}")
    assert data.classes == ["cat", "dog"] and data.input_shape[0] == 3 and len(data.x_train) + len(data.x_val) == 12
    (tmp_path / "dog" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="Cannot read image .*broken.png"):
        load_dataset(f"folder:{tmp_path}")


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(f"folder:{tmp_path}")
    (tmp_path / "only").mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((5, 5), dtype=np.uint8)).save(tmp_path / "only" / f"{i}.png")
    with pytest.raises(DataError, match="at least 2 class sub-folders"):
        load_dataset(f"folder:{tmp_path}")


@pytest.mark.parametrize("source", ["cifar", "digits:x", "mnist", "npz:"])
def test_unknown_sources_list_the_known_ones(source: str) -> None:
    with pytest.raises(DataError, match="expected one of: digits, mnist:DIR, npz:FILE, folder:DIR"):
        load_dataset(source)


def test_copy_of_shared_mnist_without_gzip(tmp_path: Path) -> None:
    if not MNIST_DIR.is_dir():
        pytest.skip("shared MNIST test split not present")
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(MNIST_DIR / f"{name}.gz") as src, open(tmp_path / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    assert load_dataset(f"mnist:{tmp_path}").fingerprint == load_dataset(f"mnist:{MNIST_DIR}").fingerprint
