"""Image-classification data: ``digits`` (built in), ``mnist:DIR``, ``npz:FILE``, ``folder:DIR``.

A :class:`Dataset` holds a training, a validation and (usually) a test split of images in their compact dtype
(uint8; float32 only from a float ``.npz``), in memory or memory-mapped; they become float32 model inputs only
per batch, through :meth:`Dataset.normalise` (numpy) or :meth:`Dataset.normalise_tensor` (torch).

Splits. Validation is always carved (stratified, seeded) from the training pool. The test split is the
source's own when it has one: ``mnist:DIR`` with ``train-*`` and ``t10k-*`` files uses the ``t10k-*`` files;
``folder:DIR`` with a ``train/`` sub-folder and ``val/`` and/or ``test/`` beside it uses them (``train/`` with only
one of ``val/`` or ``test/``: that one is the test split and validation is carved from ``train/``). Otherwise
``test_fraction`` of the source is carved first, then validation from the rest. ``test_data`` names a test
split from any source instead (all of its images; the source's own test files are then left unused).

Folders are decoded once, in parallel, into a uint8 memory-mapped cache under ``<cache_dir>/images/``, keyed by
the folder's content (relative paths, sizes, modification times) and the requested image size; a second load
only memory-maps it. Images are grayscale if every image is, else RGB, and all take the requested size
(default: the first image's).
"""

from __future__ import annotations

import concurrent.futures
import gzip
import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from distill.arrays import write_atomically
from distill.errors import DataError

log = logging.getLogger(__name__)

SOURCES = ("digits", "mnist:DIR", "npz:FILE", "folder:DIR")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
_GRAY_MODES = {"1", "L", "I", "I;16", "F"}  # PIL modes kept as one channel
_DECODE_CHUNK = 256  # images per task of the decoding process pool
_STATS_VALUES = 2**22  # pixel values per chunk when computing the channel statistics
_EVAL_PIXELS = 2**17  # image pixels (H x W) per batch when a model runs over a split: 16 to 512 images
T = TypeVar("T")


@dataclass(frozen=True)
class ImageSplit:
    """Images ``x`` (N, C, H, W) in their compact dtype, in memory or a read-only memory map, and int64 labels ``y``."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    """Seeded, stratified train/validation(/test) splits of one image source, with its normalisation."""

    source: str
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit | None  # never used to choose anything: it judges the exported student
    classes: list[str]
    mean: list[float]  # per channel, of the raw training images; subtracted ...
    std: list[float]  # ... and divided by, so deployments can normalise the same way
    fingerprint: str = field(repr=False)  # identifies the raw data and the split settings
    test_note: str = ""  # one line: where the test split came from, or why there is none

    @property
    def input_shape(self) -> tuple[int, int, int]:
        _, channels, height, width = self.train.x.shape
        return channels, height, width

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @cached_property
    def _scale(self) -> tuple[np.ndarray, np.ndarray]:
        shape = (len(self.mean), 1, 1)
        return np.asarray(self.mean, np.float32).reshape(shape), np.asarray(self.std, np.float32).reshape(shape)

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """Raw images ``x`` (N, C, H, W) as float32 model inputs: minus the mean, over the std, per channel."""
        mean, std = self._scale
        return (np.asarray(x, dtype=np.float32) - mean) / std

    def normalise_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`normalise` for a tensor (the same float32 arithmetic, the same values)."""
        mean, std = self._scale
        return (x.float() - torch.from_numpy(mean)) / torch.from_numpy(std)

    @property
    def eval_batch_size(self) -> int:
        """Images per batch when a model runs over a split: about 2**17 pixels (512 images of 8x8 or 16x16 pixels, 167
        of 28x28, at least 16), so that inference takes no more memory than training on batches of 64 does."""
        _, height, width = self.input_shape
        return max(16, min(512, _EVAL_PIXELS // (height * width)))

    def batches(self, split: ImageSplit, batch_size: int | None = None) -> Iterator[np.ndarray]:
        """The images of ``split``, normalised, ``batch_size`` (default :attr:`eval_batch_size`) at a time, in order."""
        batch_size = batch_size or self.eval_batch_size
        for start in range(0, len(split), batch_size):
            yield self.normalise(read_rows(split.x, np.arange(start, min(start + batch_size, len(split)))))


class Rows(NamedTuple):
    """A batch of a split's rows: their indices, their raw images (compact dtype) and labels."""

    indices: np.ndarray
    x: torch.Tensor
    y: torch.Tensor


class SplitRows(TorchDataset):
    """A split as a torch dataset: a row is its raw image (compact dtype) and label; a batch is :class:`Rows`."""

    def __init__(self, split: ImageSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(read_rows(self.split.x, np.array([index]))[0]), int(self.split.y[index])

    def __getitems__(self, indices: Sequence[int]) -> Rows:
        rows = np.asarray(indices, dtype=np.int64)
        return Rows(rows, torch.from_numpy(read_rows(self.split.x, rows)), torch.from_numpy(self.split.y[rows]))


def read_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of ``x`` as a new array. A memory-mapped .npy file's rows are read with plain file reads (a run
    of consecutive rows at once): its pages stay in the OS page cache, never in this process's resident memory."""
    whole_file = (isinstance(x, np.memmap) and x.flags.c_contiguous and x.filename is not None
                  and x.offset + x.nbytes == os.path.getsize(x.filename))
    if not whole_file:  # in memory, or a view of part of a file
        return x[rows]
    row_bytes = int(np.prod(x.shape[1:])) * x.dtype.itemsize
    out = np.empty((len(rows), *x.shape[1:]), dtype=x.dtype)
    flat = out.reshape(len(rows), -1).view(np.uint8)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    with open(x.filename, "rb") as handle:
        for run in np.split(np.arange(len(rows)), breaks):
            start = x.offset + int(rows[run[0]]) * row_bytes
            flat[run[0]:run[-1] + 1] = np.frombuffer(os.pread(handle.fileno(), len(run) * row_bytes, start),
                                                     np.uint8).reshape(len(run), row_bytes)
    return out


def _batch_as_is(rows: Rows) -> Rows:
    return rows


def row_loader(split: ImageSplit, batches: Iterable[np.ndarray]) -> DataLoader:
    """A DataLoader over ``split`` that reads the batches of row indices ``batches`` yields, in that order, as
    :class:`Rows`."""
    # Its own generator: creating the iterator would otherwise draw from (and shift) torch's global RNG.
    return DataLoader(SplitRows(split), batch_sampler=batches, collate_fn=_batch_as_is, generator=torch.Generator())


def parse_image_size(size: str | int) -> tuple[int, int]:
    """``"96"`` or ``96`` → (96, 96); ``"96x128"`` → (96, 128): height and width."""
    text = str(size).strip().lower()
    parts = text.split("x")
    if len(parts) > 2 or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise DataError(f"An image size must be H or HxW in pixels (e.g. 96 or 96x128), but got {size!r}.")
    height, width = int(parts[0]), int(parts[-1])
    return height, width


def load_dataset(source: str, *, val_fraction: float = 0.2, test_fraction: float = 0.2, test_data: str | None = None,
                 image_size: str | int | None = None, skip_bad_images: bool = False,
                 cache_dir: str | Path | None = None, seed: int = 0) -> Dataset:
    """Load ``source`` (one of :data:`SOURCES`) and split it into training, validation and test images.

    ``test_data`` (a source) is the test split instead of the source's own or a carved one; ``test_fraction``
    (0: none) is the share carved when there is neither. ``image_size`` (H or HxW) resizes folder images;
    ``skip_bad_images`` leaves unreadable folder images out (with a warning) instead of failing;
    ``cache_dir`` holds the decoded folder images (default: a folder in the system's temp directory).
    """
    if not 0.0 < val_fraction < 1.0 or not 0.0 <= test_fraction < 1.0:
        raise DataError(f"`0 < val_fraction < 1` and `0 <= test_fraction < 1` must hold, but got "
                        f"({val_fraction=}, {test_fraction=}).")
    reader = _Reader(Path(cache_dir) if cache_dir is not None else Path(tempfile.gettempdir()) / "distill-cache",
                     skip_bad_images, parse_image_size(image_size) if image_size is not None else None)
    origin = reader.read(source)
    pool = origin.pool
    if test_data is not None:
        test = _matching(reader.read(test_data, like=pool, whole=True).pool, pool, f"--test-data {test_data}")
        note = f"test split: --test-data {test_data} ({len(test.y)} images)"
    elif origin.test is not None:
        test = _matching(origin.test, pool, origin.test.name)
        note = f"test split: {origin.test.name} ({len(test.y)} images)"
    else:
        test, note = None, f"no test split: {source} has none of its own and test_fraction is 0"
    val = None if origin.val is None else _matching(origin.val, pool, origin.val.name)
    rows = np.arange(len(pool.y))
    if test is None and test_fraction > 0:
        rows, test_rows = _carve(pool.y, rows, test_fraction, seed, source, pool.classes, "test_fraction")
        test = pool.rows(test_rows, reader)
        note = (f"test split: {test_fraction:g} of {source} ({len(test_rows)} images), carved before validation "
                f"(stratified, seed {seed})")
    if val is None:
        rows, val_rows = _carve(pool.y, rows, val_fraction, seed, source, pool.classes, "val_fraction")
        val = pool.rows(val_rows, reader)
    train = pool.rows(rows, reader)
    mean, std = _channel_stats(train.x)
    digest = hashlib.sha256(json.dumps({
        "pool": pool.key, "val": val.key, "test": None if test is None else test.key, "classes": pool.classes,
        "val_fraction": val_fraction, "test_fraction": test_fraction, "seed": seed,
    }).encode())
    return Dataset(source=source, train=train.split, val=val.split, test=None if test is None else test.split,
                   classes=pool.classes, mean=mean.tolist(), std=std.tolist(), fingerprint=digest.hexdigest()[:16],
                   test_note=note)


@dataclass(frozen=True)
class _Images:
    """Labelled images of one origin: ``y`` indexes ``classes``; ``key`` identifies the content."""

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    key: str
    name: str  # for messages: "the t10k-* files of DIR", "DIR/test", ...

    @property
    def split(self) -> ImageSplit:
        return ImageSplit(self.x, self.y)

    def rows(self, rows: np.ndarray, reader: _Reader) -> _Images:
        """Rows ``rows`` (sorted); of a memory-mapped ``x``, a memory-mapped copy written once beside it."""
        key = f"{self.key}-rows-{hashlib.sha256(rows.tobytes()).hexdigest()[:16]}"
        if len(rows) == len(self.y):
            return self
        if not isinstance(self.x, np.memmap):
            return _Images(self.x[rows], self.y[rows], self.classes, key, self.name)
        path = reader.images_dir / f"{key}.npy"
        if not path.is_file():
            write_atomically(path, lambda tmp: _copy_rows(self.x, rows, tmp))
        return _Images(np.load(path, mmap_mode="r"), self.y[rows], self.classes, key, self.name)


@dataclass(frozen=True)
class _Origin:
    pool: _Images  # the training pool: validation (and a test split, when there is none) are carved from it
    val: _Images | None = None
    test: _Images | None = None


@dataclass(frozen=True)
class _Reader:
    cache_dir: Path
    skip_bad_images: bool
    image_size: tuple[int, int] | None

    @property
    def images_dir(self) -> Path:
        return self.cache_dir / "images"

    def read(self, source: str, *, like: _Images | None = None, whole: bool = False) -> _Origin:
        """The images of ``source``; ``like``: images whose shape they must take (folders) or have (the others);
        ``whole``: every image of the source in one pool (its own train/test parts joined)."""
        kind, _, arg = source.partition(":")
        if kind not in ("digits", "mnist", "npz", "folder") or (kind == "digits") != (arg == ""):
            raise DataError(f"Unknown data source {source!r}; expected one of: {', '.join(SOURCES)}.")
        if self.image_size is not None and kind != "folder" and like is None:
            raise DataError(f"An image size resizes folder: images only, but the data is {source!r}.")
        if kind == "folder":
            shape = None if like is None else like.x.shape[1:]
            return _read_folder(arg, self, None if shape is None else (shape[1], shape[2]),
                                None if shape is None else ("L" if shape[0] == 1 else "RGB"), whole)
        origin = {"digits": _read_digits, "mnist": lambda: _read_mnist(arg, whole),
                  "npz": lambda: _read_npz(arg)}[kind]()
        if like is not None and origin.pool.x.shape[1:] != like.x.shape[1:]:
            raise DataError(f"{source!r} holds images of shape {origin.pool.x.shape[1:]} (C, H, W), but the training "
                            f"images are {like.x.shape[1:]}.")
        return origin


def _matching(part: _Images, pool: _Images, what: str) -> _Images:
    """``part`` with its labels re-indexed to the pool's classes, which its classes must equal."""
    if set(part.classes) != set(pool.classes):
        raise DataError(f"The classes of {what} must equal the training data's, but they are {sorted(part.classes)} "
                        f"against {sorted(pool.classes)}.")
    index = np.array([pool.classes.index(name) for name in part.classes], dtype=np.int64)
    return _Images(part.x, index[part.y], pool.classes, part.key, part.name)


def _carve(y: np.ndarray, rows: np.ndarray, fraction: float, seed: int, source: str, classes: list[str],
           setting: str) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` (of labels ``y``) into (kept, carved), both sorted: ``fraction`` of them (at least one per
    class) carved, stratified (each class's share by largest remainders) and seeded."""
    labels = y[rows]
    counts = np.bincount(labels, minlength=len(classes))
    if counts.min() < 2:
        raise DataError(f"{source!r}: every class needs at least 2 samples for a stratified split ({setting}); "
                        f"class {classes[int(counts.argmin())]!r} has {counts.min()}.")
    n_carved = max(len(classes), round(fraction * len(rows)))
    if len(rows) - n_carved < len(classes):
        raise DataError(f"{source!r}: {len(rows)} samples are too few for {len(classes)} classes and "
                        f"{setting}={fraction}.")
    exact = counts * n_carved / len(rows)
    shares = np.floor(exact).astype(np.int64)
    shares[np.argsort(shares - exact, kind="stable")[:n_carved - shares.sum()]] += 1
    shares = np.clip(shares, 1, counts - 1)  # every class on both sides
    rng = np.random.default_rng(seed)
    carved = np.concatenate([rng.permutation(rows[labels == label])[:share] for label, share in enumerate(shares)])
    return np.setdiff1d(rows, carved), np.sort(carved)


def _channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std (+1e-6) of ``x`` (N, C, H, W), in float64 over chunks, with no float copy of ``x``:
    from per-channel histograms for bytes (exact, one pass), in two passes otherwise."""
    step = max(1, _STATS_VALUES // int(np.prod(x.shape[1:])))
    chunks = [slice(i, i + step) for i in range(0, len(x), step)]
    count = len(x) * x.shape[2] * x.shape[3]
    if x.dtype == np.uint8:
        histograms = np.zeros((x.shape[1], 256), dtype=np.int64)
        for chunk in chunks:
            part = read_rows(x, np.arange(len(x))[chunk])
            for channel in range(x.shape[1]):
                histograms[channel] += np.bincount(part[:, channel].ravel(), minlength=256)
        values = np.arange(256, dtype=np.float64)
        mean = histograms @ values / count
        variance = (histograms * np.square(values[None] - mean[:, None])).sum(axis=1) / count
        return mean, np.sqrt(variance) + 1e-6
    mean = sum(x[c].astype(np.float64).sum(axis=(0, 2, 3)) for c in chunks) / count
    centred = (np.square(x[c].astype(np.float64) - mean[:, None, None]).sum(axis=(0, 2, 3)) for c in chunks)
    return mean, np.sqrt(sum(centred) / count) + 1e-6


def _copy_rows(x: np.ndarray, rows: np.ndarray, path: Path) -> None:
    """Rows ``rows`` of ``x`` into a new .npy file at ``path``, by plain reads (:func:`read_rows`) and writes."""
    header = {"descr": np.lib.format.dtype_to_descr(x.dtype), "fortran_order": False,
              "shape": (len(rows), *x.shape[1:])}
    with open(path, "wb") as target:
        np.lib.format.write_array_header_1_0(target, header)
        for start in range(0, len(rows), _DECODE_CHUNK):
            target.write(read_rows(x, rows[start:start + _DECODE_CHUNK]).tobytes())


def _content_key(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()[:16]


def _in_memory(x: np.ndarray, y: np.ndarray, classes: list[str], name: str) -> _Images:
    return _Images(x, y, classes, _content_key(x, y), name)


def _read_digits() -> _Origin:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.images[:, None].astype(np.uint8)  # values 0..16
    return _Origin(_in_memory(x, digits.target.astype(np.int64), [str(c) for c in range(10)], "digits"))


def _read_mnist(directory: str, whole: bool) -> _Origin:
    root = _existing(directory, want_dir=True)
    pairs: dict[str, dict[str, Path]] = {}
    for path in sorted(root.iterdir()):
        for kind, marker in (("images", "-images-idx3-ubyte"), ("labels", "-labels-idx1-ubyte")):
            if marker in path.name:
                pairs.setdefault(path.name.split(marker)[0], {})[kind] = path
    if not pairs or any(len(pair) != 2 for pair in pairs.values()):
        raise DataError(f"MNIST directory {directory!r} must hold matching '*-images-idx3-ubyte[.gz]' and "
                        f"'*-labels-idx1-ubyte[.gz]' files; found {sorted(p.name for p in root.iterdir())}.")
    test = sorted(prefix for prefix in pairs if prefix.startswith("t10k"))
    train = sorted(prefix for prefix in pairs if prefix not in test)
    if whole or not train or not test:
        return _Origin(_idx_images([pairs[p] for p in sorted(pairs)], directory, directory))
    return _Origin(_idx_images([pairs[p] for p in train], directory, f"the {', '.join(train)}-* files of {directory}"),
                   test=_idx_images([pairs[p] for p in test], directory, f"the t10k-* files of {directory}"))


def _idx_images(pairs: list[dict[str, Path]], directory: str, name: str) -> _Images:
    images, labels = [], []
    for pair in pairs:
        x, y = _read_idx(pair["images"], ndim=3), _read_idx(pair["labels"], ndim=1)
        if len(x) != len(y):
            raise DataError(f"{pair['images'].name} holds {len(x)} images but {pair['labels'].name} {len(y)} labels.")
        images.append(x)
        labels.append(y)
    x = (images[0] if len(images) == 1 else np.concatenate(images))[:, None]
    y, classes = _index_labels(np.concatenate(labels), directory)
    return _in_memory(x, y, classes, name)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"Cannot read IDX file {str(path)!r}: {error}.") from error
    if len(raw) < 4 + 4 * ndim or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise DataError(f"{str(path)!r} is not an IDX file of unsigned bytes with {ndim} dimension(s).")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{str(path)!r} declares shape {dims} but holds {body.size} values.")
    return body.reshape(dims)


def _read_npz(file: str) -> _Origin:
    path = _existing(file, want_dir=False)
    expected = "a .npz file (a zip archive of .npy arrays x and y, as numpy.savez writes)"
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise DataError(f"{file!r} is not {expected}: it starts with {magic!r}.")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if "x" not in arrays or "y" not in arrays:
                raise DataError(f"{file!r} must hold arrays 'x' and 'y'; it holds {sorted(arrays.files)}.")
            x, y = arrays["x"], arrays["y"]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        if isinstance(error, DataError):
            raise
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"Cannot read {file!r} as {expected}: {reason}.") from error
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # channels-last images
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{file!r}: expected x of shape (N, H, W), (N, C, H, W) or (N, H, W, C) and y of shape "
                        f"(N,), but got x {x.shape} and y {y.shape}.")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating) or x.dtype == bool):
        raise DataError(f"{file!r}: x must hold real numbers (integers or floats), but its dtype is {x.dtype}.")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise DataError(f"{file!r}: x must hold finite numbers, but it holds NaN or infinity.")
    in_bytes = x.dtype == bool or (np.issubdtype(x.dtype, np.integer) and x.size and 0 <= x.min() and x.max() <= 255)
    x = np.ascontiguousarray(x, dtype=np.uint8 if in_bytes else np.float32)  # other integers keep their values
    y, classes = _index_labels(y, file)
    return _Origin(_in_memory(x, y, classes, file))


def _existing(path: str, want_dir: bool) -> Path:
    resolved = Path(path).expanduser()
    if want_dir and not resolved.is_dir():
        raise DataError(f"Data directory {path!r} does not exist or is not a directory.")
    if not want_dir and resolved.is_dir():
        raise DataError(f"Data file {path!r} is a directory; expected a .npz file.")
    if not want_dir and not resolved.is_file():
        raise DataError(f"Data file {path!r} does not exist.")
    return resolved


def _index_labels(y: np.ndarray, source: str) -> tuple[np.ndarray, list[str]]:
    """Map arbitrary integer labels to ``0..K-1``; the class names are the original labels."""
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{source!r}: labels must be integers, but got dtype {y.dtype}.")
    values, indexed = np.unique(y, return_inverse=True)
    if len(values) < 2:
        raise DataError(f"{source!r}: need at least 2 classes, but the labels hold {len(values)}.")
    return indexed.astype(np.int64).reshape(-1), [str(v) for v in values]


# Folders -----------------------------------------------------------------------------------------------------------

def _read_folder(directory: str, reader: _Reader, size: tuple[int, int] | None, mode: str | None,
                 whole: bool) -> _Origin:
    """Class sub-folders of ``directory``, or its ``train/`` with ``val/`` and/or ``test/`` (unless ``whole``)."""
    root = _existing(directory, want_dir=True)
    parts = {name: root / name for name in ("train", "val", "test") if (root / name).is_dir()}
    if whole or "train" not in parts or len(parts) == 1:
        return _Origin(_folder_images(root, directory, reader, size, mode))
    pool = _folder_images(parts["train"], f"{directory}/train", reader, size, mode)
    size, mode = (pool.x.shape[2], pool.x.shape[3]), "L" if pool.x.shape[1] == 1 else "RGB"
    held = {name: _folder_images(path, f"{directory}/{name}", reader, size, mode)
            for name, path in parts.items() if name != "train"}
    if len(held) == 1:  # one held-out folder, whichever its name: the test split; validation is carved from train/
        return _Origin(pool, test=next(iter(held.values())))
    return _Origin(pool, val=held["val"], test=held["test"])


def _folder_images(root: Path, name: str, reader: _Reader, size: tuple[int, int] | None, mode: str | None) -> _Images:
    """The images in the class sub-folders of ``root``, decoded once into the cache; ``size`` (H, W) and ``mode``
    are forced when given (the training images' for held-out folders), else ``reader.image_size`` and the images'."""
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    files = [(f, label) for label, d in enumerate(class_dirs) for f in sorted(d.iterdir())
             if f.suffix.lower() in _IMAGE_SUFFIXES and f.is_file()]
    if not files:
        raise DataError(f"Image folder {name!r} holds no images in class sub-folders "
                        f"(expected {name}/<class>/<image>{{{','.join(sorted(_IMAGE_SUFFIXES))}}}).")
    size = size or reader.image_size
    listing = [(str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns) for f, _ in files]
    key = hashlib.sha256(json.dumps({"files": listing, "size": size, "mode": mode}).encode()).hexdigest()[:16]
    entry = reader.images_dir / key
    if not (entry / "meta.json").is_file():
        _decode_into(entry, [f for f, _ in files], [path for path, _, _ in listing], size, mode, name)
    meta = json.loads((entry / "meta.json").read_text())
    bad = {path: reason for path, reason in meta["bad"]}
    if bad:
        listed = "; ".join([f"{path}: {reason}" for path, reason in list(bad.items())[:3]] + ["..."] * (len(bad) > 3))
        if not reader.skip_bad_images:
            raise DataError(f"{len(bad)} image(s) in {name!r} cannot be read ({listed}); remove them, or skip them "
                            "with --skip-bad-images.")
        log.warning("Left out %d unreadable image(s) of %s: %s", len(bad), name, listed)
    labels = np.array([label for (_, label), (path, _, _) in zip(files, listing) if path not in bad], dtype=np.int64)
    used = sorted(set(labels.tolist()))
    if len(used) < 2:
        raise DataError(f"Image folder {name!r} needs at least 2 class sub-folders with images; found {len(used)}.")
    remap = np.zeros(len(class_dirs), dtype=np.int64)
    remap[used] = np.arange(len(used))
    x = np.load(entry / "x.npy", mmap_mode="r")
    return _Images(x, remap[labels], [class_dirs[i].name for i in used], key, name)


def _decode_into(entry: Path, files: list[Path], names: list[str], size: tuple[int, int] | None, mode: str | None,
                 name: str) -> None:
    """Decode ``files`` (relative paths ``names``) once into ``entry/x.npy`` (uint8, N x C x H x W, the readable
    images in order) and ``entry/meta.json`` (the size, mode and unreadable files); the entry appears whole or not
    at all."""
    from tqdm import tqdm

    chunks = [files[i:i + _DECODE_CHUNK] for i in range(0, len(files), _DECODE_CHUNK)]
    tmp = entry.with_name(f"{entry.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with _pool(len(chunks)) as pool:
            headers = [h for part in _run(pool, _probe_chunk, [(chunk,) for chunk in chunks]) for h in part]
            bad = {i: reason for i, (_, _, reason) in enumerate(headers) if reason is not None}
            good = [i for i in range(len(files)) if i not in bad]
            if good:
                mode = mode or ("L" if all(headers[i][0] for i in good) else "RGB")
                size = size or headers[good[0]][1]
                shape = (len(good), 1 if mode == "L" else 3, *size)
                np.lib.format.open_memmap(tmp / "x.npy", mode="w+", dtype=np.uint8, shape=shape).flush()
                tasks = [(str(tmp / "x.npy"), [str(files[i]) for i in good[s:s + _DECODE_CHUNK]], s, size, mode)
                         for s in range(0, len(good), _DECODE_CHUNK)]
                with tqdm(total=len(good), desc=f"Decoding {name}", unit="img", file=sys.stderr, leave=False,
                          disable=None) as bar:
                    failed = [f for part in _run(pool, _decode_chunk, tasks, lambda i: bar.update(len(tasks[i][1])))
                              for f in part]
                bad |= {good[row]: reason for row, reason in failed}
                if failed:  # unreadable only when decoded: drop their rows
                    _compact(tmp / "x.npy", sorted({row for row, _ in failed}))
        meta = {"size": size, "mode": mode, "files": len(files),
                "bad": [[names[i], bad[i]] for i in sorted(bad)]}
        if len(bad) == len(files):
            np.lib.format.open_memmap(tmp / "x.npy", mode="w+", dtype=np.uint8, shape=(0, 1, 1, 1)).flush()
        (tmp / "meta.json").write_text(json.dumps(meta) + "\n")
        try:
            tmp.rename(entry)
        except OSError:  # another process decoded the same folder first
            if not (entry / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pool(tasks: int) -> concurrent.futures.Executor:
    """Worker processes for ``tasks`` tasks (none for one: it runs here)."""
    workers = min(tasks, os.cpu_count() or 1)
    if workers <= 1:
        return _InlineExecutor()
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    return concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)


class _InlineExecutor(concurrent.futures.Executor):
    """Runs each task at once, here."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _run(pool: concurrent.futures.Executor, fn: Callable[..., T], tasks: Sequence[tuple[Any, ...]],
         done: Callable[[int], None] | None = None) -> list[T]:
    """``fn(*task)`` for every task on ``pool``, results in task order; ``done(index)`` as each task finishes."""
    futures = {pool.submit(fn, *task): index for index, task in enumerate(tasks)}
    if done is not None:
        for future in concurrent.futures.as_completed(futures):
            done(futures[future])
    return [future.result() for future in futures]


def _probe_chunk(files: list[Path]) -> list[tuple[bool | None, tuple[int, int] | None, str | None]]:
    """(grayscale?, (H, W), None) of each file from its header, or (None, None, why it cannot be read)."""
    from PIL import Image

    headers: list[tuple[bool | None, tuple[int, int] | None, str | None]] = []
    for file in files:
        try:
            with Image.open(file) as image:
                headers.append((image.mode in _GRAY_MODES, (image.height, image.width), None))
        except Exception as error:  # any failure to read a file is that file's
            headers.append((None, None, _reason(error)))
    return headers


def _decode_chunk(path: str, files: list[str], start: int, size: tuple[int, int], mode: str) -> list[tuple[int, str]]:
    """Decode ``files`` into rows ``start...`` of the memory-mapped ``path``; returns (row, reason) of failures."""
    from PIL import Image

    out = np.load(path, mmap_mode="r+")
    failures = []
    for row, file in enumerate(files, start):
        try:
            with Image.open(file) as image:
                pixels = np.asarray(image.convert(mode).resize((size[1], size[0])), dtype=np.uint8)
            out[row] = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        except Exception as error:  # any failure to decode a file is that file's
            failures.append((row, _reason(error)))
    out.flush()
    return failures


def _reason(error: Exception) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]


def _compact(path: Path, drop: list[int]) -> None:
    """Rewrite the .npy at ``path`` without the rows ``drop``."""
    x = np.load(path, mmap_mode="r")
    keep = np.setdiff1d(np.arange(len(x)), drop)
    _copy_rows(x, keep, path.with_name("compact.npy"))
    del x
    path.with_name("compact.npy").replace(path)
