"""The inputs a measurement feeds: concrete shapes for dynamic dimensions, and seeded random data."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from hwprofile.errors import InvalidModelError, InvalidOptionError


@dataclass(frozen=True)
class InputSpec:
    """One graph input: dims are ints (fixed), strings (named dynamic) or None (unnamed dynamic)."""

    name: str
    dims: tuple[int | str | None, ...]
    dtype: np.dtype


def resolve_shapes(specs: list[InputSpec], batch: int, dims: dict[str, int]) -> dict[str, tuple[int, ...]]:
    """Concrete shapes: a dynamic leading dimension is the batch, other dynamic ones come from ``dims``.

    A fixed leading dimension with ``batch != 1`` and a dynamic dimension with no value are errors,
    and so is a value in ``dims`` that names no dimension of the model.
    """
    shapes, used = {}, set()
    for spec in specs:
        shape = []
        for axis, dim in enumerate(spec.dims):
            if isinstance(dim, int) and dim > 0:
                if axis == 0 and batch != 1 and dim != batch and len(spec.dims) > 1:
                    raise InvalidOptionError(f"Input {spec.name!r} has a fixed batch dimension of {dim}; batch={batch} "
                                             f"cannot apply (export the model with a dynamic batch).")
                shape.append(dim)
            elif isinstance(dim, str) and dim in dims:
                shape.append(dims[dim])
                used.add(dim)
            elif axis == 0:
                shape.append(batch)
            else:
                label = f"dimension {dim!r}" if isinstance(dim, str) else "an unnamed dynamic dimension"
                raise InvalidOptionError(f"Input {spec.name!r} has {label} at axis {axis} (shape {list(spec.dims)}); "
                                         f"give its value with dims (e.g. --dim {dim or 'NAME'}=N).")
        shapes[spec.name] = tuple(shape)
    if unused := sorted(set(dims) - used):
        names = sorted({d for s in specs for d in s.dims if isinstance(d, str)})
        raise InvalidOptionError(f"dims {unused} name no dynamic dimension of the model; its named dimensions: "
                                 f"{names}.")
    return shapes


def input_bytes(specs: list[InputSpec], shapes: dict[str, tuple[int, ...]]) -> int:
    """What :func:`random_inputs` would allocate for ``shapes``, in bytes."""
    return sum(math.prod(shapes[spec.name]) * spec.dtype.itemsize for spec in specs)


def random_inputs(specs: list[InputSpec], shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded data: normal floats, 0/1 integers (valid indices for any embedding), random booleans.

    An integer or boolean input whose name contains ``mask`` (e.g. a transformer's ``attention_mask``) is
    all ones: every position valid, the full-length sequences whose latency a deployment sees at worst.
    """
    rng = np.random.default_rng(seed)
    feed = {}
    for spec in specs:
        shape = shapes[spec.name]
        if spec.dtype.kind == "f":
            feed[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype.kind in "iub" and "mask" in spec.name.lower():
            feed[spec.name] = np.ones(shape, dtype=spec.dtype)
        elif spec.dtype.kind in "iu":
            feed[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
        elif spec.dtype.kind == "b":
            feed[spec.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            raise InvalidModelError(f"Input {spec.name!r} has unsupported element type {spec.dtype}.")
    return feed
