"""Image-classification data: ``digits`` (built in), ``mnist:DIR``, ``npz:FILE``, ``folder:DIR``."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.errors import DataError

SOURCES = ("digits", "mnist:DIR", "npz:FILE", "folder:DIR")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


@dataclass(frozen=True)
class Dataset:
    """A seeded train/validation split of ``(N, C, H, W)`` float32 images, normalised per channel."""

    source: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    classes: list[str]
    mean: list[float]  # per channel, of the raw training images; subtracted ...
    std: list[float]  # ... and divided by, so deployments can normalise the same way
    fingerprint: str = field(repr=False)  # identifies the raw data and the split

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_dataset(source: str, *, val_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Load ``source`` (one of :data:`SOURCES`), split it and normalise it."""
    kind, _, arg = source.partition(":")
    loaders = {"digits": _load_digits, "mnist": _load_mnist, "npz": _load_npz, "folder": _load_folder}
    if kind not in loaders or (kind == "digits") != (arg == ""):
        raise DataError(f"Unknown data source {source!r}; expected one of: {', '.join(SOURCES)}.")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"`0 < val_fraction < 1` must hold, but got {val_fraction=}.")
    x, y, classes = loaders[kind](arg) if arg else loaders[kind]()
    return _split_and_normalise(source, x, y, classes, val_fraction, seed)


def _load_digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images[:, None].astype(np.float32), digits.target.astype(np.int64), [str(c) for c in range(10)]


def _load_mnist(directory: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    root = _existing(directory, want_dir=True)
    image_files = sorted(p for p in root.iterdir() if "images-idx3-ubyte" in p.name)
    label_files = sorted(p for p in root.iterdir() if "labels-idx1-ubyte" in p.name)
    if not image_files or len(image_files) != len(label_files):
        raise DataError(f"MNIST directory {directory!r} must hold matching '*-images-idx3-ubyte[.gz]' and "
                        f"'*-labels-idx1-ubyte[.gz]' files; found {[p.name for p in root.iterdir()]}.")
    images = [_read_idx(p, ndim=3) for p in image_files]
    labels = [_read_idx(p, ndim=1) for p in label_files]
    for image_file, label_file, x, y in zip(image_files, label_files, images, labels):
        if len(x) != len(y):
            raise DataError(f"{image_file.name} holds {len(x)} images but {label_file.name} {len(y)} labels.")
    x = np.concatenate(images)[:, None].astype(np.float32)
    y = np.concatenate(labels).astype(np.int64)
    return x, *_index_labels(y, directory)


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    try:
        raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    except OSError as error:
        raise DataError(f"Cannot read IDX file {str(path)!r}: {error}.") from error
    if len(raw) < 4 + 4 * ndim or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        raise DataError(f"{str(path)!r} is not an IDX file of unsigned bytes with {ndim} dimension(s).")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{str(path)!r} declares shape {dims} but holds {body.size} values.")
    return body.reshape(dims)


def _load_npz(file: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    path = _existing(file, want_dir=False)
    try:
        with np.load(path, allow_pickle=False) as arrays:
            if "x" not in arrays or "y" not in arrays:
                raise DataError(f"{file!r} must hold arrays 'x' and 'y'; it holds {sorted(arrays.files)}.")
            x, y = arrays["x"], arrays["y"]
    except (OSError, ValueError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"Cannot read {file!r} as a .npz file: {error}.") from error
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # channels-last images
    if x.ndim != 4 or y.ndim != 1 or len(x) != len(y):
        raise DataError(f"{file!r}: expected x of shape (N, H, W), (N, C, H, W) or (N, H, W, C) and y of shape "
                        f"(N,), but got x {x.shape} and y {y.shape}.")
    if not np.issubdtype(x.dtype, np.number) or not np.isfinite(x).all():
        raise DataError(f"{file!r}: x must hold finite numbers, but its dtype is {x.dtype} or it holds NaN/inf.")
    return x.astype(np.float32), *_index_labels(y, file)


def _load_folder(directory: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from PIL import Image, UnidentifiedImageError

    root = _existing(directory, want_dir=True)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    files = [(f, label) for label, d in enumerate(class_dirs) for f in sorted(d.iterdir())
             if f.suffix.lower() in _IMAGE_SUFFIXES]
    if not files:
        raise DataError(f"Image folder {directory!r} holds no images in class sub-folders "
                        f"(expected {directory}/<class>/<image>{{{','.join(sorted(_IMAGE_SUFFIXES))}}}).")
    images = []
    mode = size = None
    for file, _ in files:
        try:
            with Image.open(file) as image:
                mode = mode or ("L" if image.mode in ("1", "L", "I", "I;16", "F") else "RGB")
                size = size or image.size  # every image is resized to the first one's size
                images.append(np.asarray(image.convert(mode).resize(size), dtype=np.float32))
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"Cannot read image {str(file)!r}: {error}.") from error
    x = np.stack(images)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    y = np.array([label for _, label in files], dtype=np.int64)
    used = sorted(set(y.tolist()))
    if len(used) < 2:
        raise DataError(f"Image folder {directory!r} needs at least 2 class sub-folders with images; found {len(used)}.")
    remap = {old: new for new, old in enumerate(used)}
    return x, np.array([remap[v] for v in y], dtype=np.int64), [class_dirs[i].name for i in used]


def _existing(path: str, want_dir: bool) -> Path:
    resolved = Path(path).expanduser()
    if want_dir and not resolved.is_dir():
        raise DataError(f"Data directory {path!r} does not exist or is not a directory.")
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
    return indexed.astype(np.int64), [str(v) for v in values]


def _split_and_normalise(source: str, x: np.ndarray, y: np.ndarray, classes: list[str],
                         val_fraction: float, seed: int) -> Dataset:
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y, minlength=len(classes))
    if counts.min() < 2:
        raise DataError(f"{source!r}: every class needs at least 2 samples for a stratified split; "
                        f"class {classes[int(counts.argmin())]!r} has {counts.min()}.")
    index = np.arange(len(y))
    n_val = max(len(classes), round(val_fraction * len(y)))
    if len(y) - n_val < len(classes):
        raise DataError(f"{source!r}: {len(y)} samples are too few for {len(classes)} classes and {val_fraction=}.")
    train, val = train_test_split(index, test_size=n_val, stratify=y, random_state=seed)
    mean = x[train].mean(axis=(0, 2, 3))
    std = x[train].std(axis=(0, 2, 3)) + 1e-6

    def normalise(part: np.ndarray) -> np.ndarray:
        return ((x[part] - mean[:, None, None]) / std[:, None, None]).astype(np.float32)

    digest = hashlib.sha256()
    for item in (x, y, np.array([val_fraction, seed])):
        digest.update(np.ascontiguousarray(item).tobytes())
        digest.update(str(item.shape).encode())
    return Dataset(source=source, x_train=normalise(train), y_train=y[train], x_val=normalise(val), y_val=y[val],
                   classes=classes, mean=mean.tolist(), std=std.tolist(), fingerprint=digest.hexdigest()[:16])
