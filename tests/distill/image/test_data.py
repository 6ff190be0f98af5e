from __future__ import annotations

import gzip
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill import DataError, load_dataset, parse_image_size
from distill.image import data as image_data
from tests.conftest import MNIST_DIR


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(directory: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    _write_idx(directory / f"{prefix}-images-idx3-ubyte", images)
    _write_idx(directory / f"{prefix}-labels-idx1-ubyte", labels)


def _write_folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (6, 5), mode: str = "RGB",
                  seed: int = 0) -> None:
    """``count`` PNG images per class (class-dependent brightness, some noise) of ``size`` (H, W)."""
    rng = np.random.default_rng(seed)
    for index, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            shape = size if mode == "L" else (*size, 3)
            pixels = np.clip(40 * index + rng.integers(0, 30, shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode).save(root / name / f"{i}.png")


def test_digits_are_split_three_ways_stratified_seeded_and_stored_as_bytes() -> None:
    data = load_dataset("digits", seed=1)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert data.test is not None and (len(data.test), len(data.val), len(data.train)) == (359, 288, 1150)
    assert "0.2 of digits (359 images), carved before validation" in data.test_note
    assert {data.train.x.dtype, data.val.x.dtype, data.test.x.dtype} == {np.dtype(np.uint8)}
    assert min(np.bincount(data.val.y).min(), np.bincount(data.test.y).min()) >= 25  # every class in both
    again = load_dataset("digits", seed=1)
    assert np.array_equal(again.test.y, data.test.y) and again.fingerprint == data.fingerprint
    fingerprints = {data.fingerprint, load_dataset("digits", seed=2).fingerprint,
                    load_dataset("digits", seed=1, test_fraction=0.1).fingerprint,
                    load_dataset("digits", seed=1, val_fraction=0.3).fingerprint}
    assert len(fingerprints) == 4  # the split settings are part of it
    none = load_dataset("digits", test_fraction=0)
    assert none.test is None and none.test_note.startswith("no test split") and len(none.train) + len(none.val) == 1797


def test_per_batch_normalisation_equals_the_float_normalisation_of_the_whole_split() -> None:
    data = load_dataset("digits")
    x = data.train.x
    mean, std = x.astype(np.float64).mean(axis=(0, 2, 3)), x.astype(np.float64).std(axis=(0, 2, 3)) + 1e-6
    np.testing.assert_allclose(data.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(data.std, std, rtol=1e-9)
    whole = ((x.astype(np.float32) - np.float32(data.mean[0])) / np.float32(data.std[0])).astype(np.float32)
    batched = np.concatenate(list(data.batches(data.train, batch_size=100)))
    assert batched.dtype == np.float32 and np.array_equal(batched, whole)
    assert abs(float(batched.mean())) < 1e-4 and float(batched.std()) == pytest.approx(1.0, abs=1e-3)
    assert torch.equal(data.normalise_tensor(torch.from_numpy(x[:64])), torch.from_numpy(whole[:64]))


def test_mnist_keeps_the_t10k_files_as_the_test_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train_x, test_x = rng.integers(0, 255, (60, 6, 5)), rng.integers(0, 255, (20, 6, 5))
    _write_mnist(tmp_path, "train", train_x, np.arange(60) % 4)
    _write_mnist(tmp_path, "t10k", test_x, np.arange(20) % 4)
    data = load_dataset(f"mnist:{tmp_path}")
    assert data.input_shape == (1, 6, 5) and data.classes == ["0", "1", "2", "3"]
    assert data.test is not None and np.array_equal(data.test.x[:, 0], test_x) and len(data.test) == 20
    assert len(data.train) + len(data.val) == 60 and len(data.val) == 12  # validation from train-* only
    assert data.test_note == f"test split: the t10k-* files of {tmp_path} (20 images)"
    assert load_dataset(f"mnist:{tmp_path}", test_fraction=0.5).test_note == data.test_note  # nothing carved
    _write_mnist(tmp_path, "t10k", test_x, np.arange(20) % 5)
    with pytest.raises(DataError, match=r"classes of the t10k-\* files .* are \['0', '1', '2', '3', '4'\] "
                                        r"against \['0', '1', '2', '3'\]"):
        load_dataset(f"mnist:{tmp_path}")


def test_mnist_with_one_pair_carves_a_test_split_and_checks_counts(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    _write_mnist(tmp_path, "train", rng.integers(0, 255, (40, 6, 5)), np.arange(40) % 4)
    data = load_dataset(f"mnist:{tmp_path}")
    assert (len(data.train), len(data.val), len(data.test)) == (26, 6, 8)  # 20% of 40, then 20% of 32
    assert data.test_note.startswith(f"test split: 0.2 of mnist:{tmp_path} (8 images)")
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(39) % 4)
    with pytest.raises(DataError, match="40 images but train-labels-idx1-ubyte 39 labels"):
        load_dataset(f"mnist:{tmp_path}")


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="shared MNIST test split not present")
def test_mnist_gzipped_idx_files_and_their_uncompressed_copy(tmp_path: Path) -> None:
    data = load_dataset(f"mnist:{MNIST_DIR}")
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10 and data.train.x.dtype == np.uint8
    assert len(data.train) + len(data.val) + len(data.test) == 10_000  # one pair: carved three ways
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        with gzip.open(MNIST_DIR / f"{name}.gz") as src, open(tmp_path / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    assert load_dataset(f"mnist:{tmp_path}").fingerprint == data.fingerprint


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
    assert data.classes == ["5", "7", "9"] and set(np.unique(data.train.y)) == {0, 1, 2}
    assert data.train.x.dtype == np.float32  # float images stay float


def test_npz_integer_images_in_byte_range_are_stored_as_bytes(tmp_path: Path) -> None:
    np.savez(tmp_path / "b.npz", x=np.arange(30 * 16).reshape(30, 4, 4) % 256, y=np.arange(30) % 3)
    assert load_dataset(f"npz:{tmp_path / 'b.npz'}").train.x.dtype == np.uint8
    np.savez(tmp_path / "w.npz", x=np.arange(30 * 16).reshape(30, 4, 4) * 10, y=np.arange(30) % 3)
    assert load_dataset(f"npz:{tmp_path / 'w.npz'}").train.x.dtype == np.float32  # 12-bit values kept


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
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")


def _one_line_error(source: str) -> str:
    with pytest.raises(DataError) as error:
        load_dataset(source)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_npz_bad_input_is_one_line_naming_the_file_and_what_was_expected(tmp_path: Path) -> None:
    good = tmp_path / "good.npz"
    np.savez_compressed(good, x=np.zeros((10, 4, 4)), y=np.arange(10) % 2)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert _one_line_error(f"npz:{truncated}") == (f"Cannot read {str(truncated)!r} as a .npz file (a zip archive of "
                                                    ".npy arrays x and y, as numpy.savez writes): File is not a zip "
                                                    "file.")
    noise = tmp_path / "noise.npz"
    noise.write_bytes(np.random.default_rng(0).bytes(300))
    message = _one_line_error(f"npz:{noise}")
    assert message.startswith(f"{str(noise)!r} is not a .npz file (a zip archive") and "pickle" not in message
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    assert _one_line_error(f"npz:{folder}") == f"Data file {str(folder)!r} is a directory; expected a .npz file."
    complex_x = tmp_path / "complex.npz"
    np.savez(complex_x, x=np.ones((10, 4, 4)) * (1 + 2j), y=np.arange(10) % 2)
    assert _one_line_error(f"npz:{complex_x}") == (f"{str(complex_x)!r}: x must hold real numbers (integers or "
                                                    "floats), but its dtype is complex128.")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def test_folder_is_decoded_once_into_a_memory_mapped_byte_cache(tmp_path: Path, cache: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _write_folder(tmp_path / "d", {"cat": 10, "dog": 10})
    Image.fromarray(np.zeros((9, 14, 3), np.uint8)).save(tmp_path / "d" / "dog" / "9.png")  # resized to 6x5
    opened: list[str] = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    data = load_dataset(f"folder:{tmp_path / 'd'}", cache_dir=cache)
    assert data.classes == ["cat", "dog"] and data.input_shape == (3, 6, 5)
    assert len(data.train) + len(data.val) + len(data.test) == 20 and len(opened) == 2 * 20  # header, then pixels
    pool = np.load(next((cache / "images").glob("*/x.npy")), mmap_mode="r")  # the folder's images, in order
    assert pool.dtype == np.uint8 and pool.shape == (20, 3, 6, 5) and not pool[-1].any()
    np.testing.assert_array_equal(pool[0].transpose(1, 2, 0), np.asarray(real_open(tmp_path / "d" / "cat" / "0.png")))
    for split in (data.train, data.val, data.test):  # carved splits: memory-mapped copies beside it
        assert isinstance(split.x, np.memmap) and split.x.dtype == np.uint8
        assert Path(split.x.filename).parent == cache / "images"
    files = sorted((cache / "images").rglob("*.npy"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    opened.clear()
    again = load_dataset(f"folder:{tmp_path / 'd'}", cache_dir=cache)
    assert opened == [] and sorted((cache / "images").rglob("*.npy")) == files  # nothing decoded or written
    assert [f.stat().st_mtime_ns for f in files] == mtimes and again.fingerprint == data.fingerprint
    np.testing.assert_array_equal(again.train.x, data.train.x)
    os.utime(tmp_path / "d" / "cat" / "3.png", ns=(0, 0))  # the content key sees modification times
    load_dataset(f"folder:{tmp_path / 'd'}", cache_dir=cache)
    assert len(opened) == 2 * 20


def test_rows_of_a_memory_mapped_file_are_read_whole_or_in_runs(tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 255, (50, 3, 4, 5), dtype=np.uint8)
    np.save(tmp_path / "a.npy", array)
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")
    for rows in (np.array([7]), np.array([3, 4, 5, 9, 1, 2, 49]), np.arange(50)):
        read = image_data.read_rows(mapped, rows)
        assert type(read) is np.ndarray and np.array_equal(read, array[rows])
        assert np.array_equal(image_data.read_rows(mapped[10:], rows[rows < 40]), array[10:][rows[rows < 40]])


def test_folder_size_and_mode(tmp_path: Path, cache: Path) -> None:
    _write_folder(tmp_path / "gray", {"a": 5, "b": 5}, size=(7, 9), mode="L")
    assert load_dataset(f"folder:{tmp_path / 'gray'}", cache_dir=cache).input_shape == (1, 7, 9)
    data = load_dataset(f"folder:{tmp_path / 'gray'}", cache_dir=cache, image_size="4x6")
    assert data.input_shape == (1, 4, 6)
    Image.fromarray(np.zeros((7, 9, 3), np.uint8)).save(tmp_path / "gray" / "b" / "rgb.png")
    assert load_dataset(f"folder:{tmp_path / 'gray'}", cache_dir=cache, image_size=5).input_shape == (3, 5, 5)
    assert parse_image_size("96") == (96, 96) and parse_image_size("96x128") == (96, 128)
    for bad in ("0", "96x", "a", "1x2x3"):
        with pytest.raises(DataError, match="must be H or HxW"):
            parse_image_size(bad)
    with pytest.raises(DataError, match="resizes folder: images only, but the data is 'digits'"):
        load_dataset("digits", image_size=16)


def test_folder_with_train_val_and_test_subfolders(tmp_path: Path, cache: Path) -> None:
    _write_folder(tmp_path / "d" / "train", {"a": 12, "b": 12}, size=(6, 6))
    _write_folder(tmp_path / "d" / "val", {"b": 3, "a": 4}, size=(8, 8), seed=1)  # resized to train's size
    _write_folder(tmp_path / "d" / "test", {"a": 5, "b": 6}, size=(6, 6), mode="L", seed=2)  # made RGB
    data = load_dataset(f"folder:{tmp_path / 'd'}", cache_dir=cache)
    assert (len(data.train), len(data.val), len(data.test)) == (24, 7, 11)
    assert data.val.x.shape[1:] == data.test.x.shape[1:] == (3, 6, 6)
    assert np.bincount(data.val.y).tolist() == [4, 3] and data.classes == ["a", "b"]
    assert data.test_note == f"test split: {tmp_path / 'd'}/test (11 images)"
    shutil.rmtree(tmp_path / "d" / "val")
    data = load_dataset(f"folder:{tmp_path / 'd'}", cache_dir=cache)
    assert len(data.test) == 11 and (len(data.train), len(data.val)) == (19, 5)  # validation carved from train/
    shutil.rmtree(tmp_path / "d" / "test")
    _write_folder(tmp_path / "d" / "val", {"a": 4, "b": 3}, size=(6, 6))
    data = load_dataset(f"folder:{tmp_path / 'd'}", cache_dir=cache)
    assert len(data.test) == 7 and data.test_note.endswith("/val (7 images)")  # the one held-out folder is the test


def test_unreadable_images_fail_with_their_names_unless_skipped(tmp_path: Path, cache: Path,
                                                                caplog: pytest.LogCaptureFixture,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    _write_folder(tmp_path / "d", {"a": 6, "b": 6})
    for name in ("x1", "x2", "x3", "x4"):
        (tmp_path / "d" / "b" / f"{name}.png").write_bytes(b"not an image")
    good = (tmp_path / "d" / "a" / "0.png").read_bytes()
    (tmp_path / "d" / "a" / "cut.png").write_bytes(good[: len(good) // 2])  # a header, then too little data
    message = _one_line_error_of(lambda: load_dataset(f"folder:{tmp_path / 'd'}", cache_dir=cache))
    assert message.startswith(f"5 image(s) in {str(tmp_path / 'd')!r} cannot be read (a/cut.png: ")
    assert "b/x1.png: cannot identify image file" in message and "; ...); remove them, or skip them with " \
        "--skip-bad-images." in message and "x4" not in message
    opened: list[str] = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda path, *a, **k: opened.append(str(path)) or real_open(path, *a, **k))
    with caplog.at_level(logging.WARNING):
        data = load_dataset(f"folder:{tmp_path / 'd'}", cache_dir=cache, skip_bad_images=True)
    assert opened == []  # the cache remembers what could not be read
    assert len(data.train) + len(data.val) + len(data.test) == 12 and "Left out 5 unreadable image(s)" in caplog.text


def _one_line_error_of(load: Callable[[], object]) -> str:
    with pytest.raises(DataError) as error:
        load()
    assert "\n" not in str(error.value)
    return str(error.value)


def test_parallel_decoding_matches_decoding_here(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_folder(tmp_path / "d", {"a": 9, "b": 9}, size=(5, 4))
    (tmp_path / "d" / "b" / "zz.png").write_bytes(b"junk")
    serial = load_dataset(f"folder:{tmp_path / 'd'}", cache_dir=cache / "serial", skip_bad_images=True, test_fraction=0)
    monkeypatch.setattr(image_data, "_DECODE_CHUNK", 4)  # 19 images: 5 tasks for the process pool
    parallel = load_dataset(f"folder:{tmp_path / 'd'}", cache_dir=cache / "pool", skip_bad_images=True, test_fraction=0)
    np.testing.assert_array_equal(parallel.train.x, serial.train.x)
    np.testing.assert_array_equal(parallel.val.y, serial.val.y)


def test_test_data_must_have_the_training_classes(tmp_path: Path, cache: Path) -> None:
    _write_folder(tmp_path / "train", {"a": 8, "b": 8})
    _write_folder(tmp_path / "other", {"a": 3, "c": 3})
    with pytest.raises(DataError, match=r"classes of --test-data folder:.*other must equal the training data's, but "
                                        r"they are \['a', 'c'\] against \['a', 'b'\]"):
        load_dataset(f"folder:{tmp_path / 'train'}", test_data=f"folder:{tmp_path / 'other'}", cache_dir=cache)
    _write_folder(tmp_path / "held", {"b": 2, "a": 3}, size=(9, 9))
    data = load_dataset(f"folder:{tmp_path / 'train'}", test_data=f"folder:{tmp_path / 'held'}", cache_dir=cache)
    assert len(data.test) == 5 and np.bincount(data.test.y).tolist() == [3, 2] and len(data.train) + len(data.val) == 16
    assert data.test.x.shape[1:] == data.input_shape and data.test_note.startswith("test split: --test-data folder:")
    with pytest.raises(DataError, match=r"'digits' holds images of shape \(1, 8, 8\) .* are \(3, 6, 5\)"):
        load_dataset(f"folder:{tmp_path / 'train'}", test_data="digits", cache_dir=cache)


def test_folder_errors(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(DataError, match="holds no images"):
        load_dataset(f"folder:{tmp_path}", cache_dir=cache)
    _write_folder(tmp_path / "only", {"x": 4})
    with pytest.raises(DataError, match="at least 2 class sub-folders"):
        load_dataset(f"folder:{tmp_path / 'only'}", cache_dir=cache)


@pytest.mark.parametrize("source", ["cifar", "digits:x", "mnist", "npz:"])
def test_unknown_sources_list_the_known_ones(source: str) -> None:
    with pytest.raises(DataError, match="expected one of: digits, mnist:DIR, npz:FILE, folder:DIR"):
        load_dataset(source)
