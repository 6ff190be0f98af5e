"""The drift canary: a fixed reference model measured beside the models, so that a device that changes speed
between measurements shows it, and latencies taken at different moments can be put on one scale.

The canary is a small convolutional network (about 2.2 M multiply-accumulates on a 3x32x32 input, the size of a
mid-size student) built here with ``onnx.helper``; its weights come from integer hashing (splitmix64) rather than a
random generator, so its bytes, and the ``canary_sha256()`` that identifies it, are the same on every machine and
every numpy version. It is measured with the setup of the model it stands beside and a short protocol
(:func:`canary_config`).
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import hashlib
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from hwprofile.config import MeasureConfig
from hwprofile.errors import InvalidOptionError
from hwprofile.registry import get_backend

CANARY_NAME = "hwprofile-canary-v1"
INPUT_SHAPE = (3, 32, 32)
OPSET, IR_VERSION = 17, 8
# (name, output channels, kernel, stride, groups) of each convolution; ReLU after each, then pooling and a linear head.
_CONVS = (("stem", 32, 3, 1, 1), ("down", 64, 3, 2, 1), ("depthwise", 64, 3, 1, 64), ("pointwise", 128, 1, 1, 1))
_CLASSES = 10
# The canary protocol: at most these, and never more than the model's own protocol asks (see canary_config).
CANARY_PROTOCOL = {"warmup_runs": 5, "warmup_seconds": 0.01, "min_runs": 20, "min_seconds": 0.03, "max_seconds": 1.0}
_MASK64 = (1 << 64) - 1


def _hashed_weights(shape: tuple[int, ...], salt: int, fan_in: int) -> np.ndarray:
    """Weights in ±1/√fan_in from splitmix64 of (salt, index): exact integer arithmetic, the same bits everywhere."""
    x = np.arange(math.prod(shape), dtype=np.uint64) + np.uint64((salt * 0x9E3779B97F4A7C15) & _MASK64)
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    x = x ^ (x >> np.uint64(31))
    unit = (x >> np.uint64(40)).astype(np.float64) / float(1 << 24)  # 24 bits: exact in float32
    return ((unit * 2 - 1) / math.sqrt(fan_in)).astype(np.float32).reshape(shape)


@functools.lru_cache(maxsize=1)
def canary_bytes() -> bytes:
    """The canary's ONNX file, byte for byte (dynamic batch; input ``input``: batch x 3 x 32 x 32 float)."""
    nodes, weights = [], []
    channels, current = INPUT_SHAPE[0], "input"
    for salt, (name, out, kernel, stride, groups) in enumerate(_CONVS):
        fan_in = channels // groups * kernel * kernel
        weights += [numpy_helper.from_array(_hashed_weights((out, channels // groups, kernel, kernel), salt, fan_in),
                                            f"{name}.weight"),
                    numpy_helper.from_array(_hashed_weights((out,), 100 + salt, fan_in), f"{name}.bias")]
        nodes += [helper.make_node("Conv", [current, f"{name}.weight", f"{name}.bias"], [f"{name}.conv"],
                                   kernel_shape=[kernel, kernel], strides=[stride, stride], group=groups,
                                   pads=[kernel // 2] * 4),
                  helper.make_node("Relu", [f"{name}.conv"], [f"{name}.out"])]
        channels, current = out, f"{name}.out"
    weights += [numpy_helper.from_array(_hashed_weights((_CLASSES, channels), 200, channels), "head.weight"),
                numpy_helper.from_array(_hashed_weights((_CLASSES,), 201, channels), "head.bias")]
    nodes += [helper.make_node("GlobalAveragePool", [current], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["features"]),
              helper.make_node("Gemm", ["features", "head.weight", "head.bias"], ["output"], transB=1)]
    graph = helper.make_graph(
        nodes, CANARY_NAME, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", *INPUT_SHAPE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", _CLASSES])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                              producer_name="hwprofile", producer_version="1")
    return model.SerializeToString(deterministic=True)


@functools.lru_cache(maxsize=1)
def canary_sha256() -> str:
    """What identifies the canary: readings of different canaries are never compared."""
    return hashlib.sha256(canary_bytes()).hexdigest()


@functools.lru_cache(maxsize=1)
def _folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="hwprofile-canary-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def canary_path() -> Path:
    """The canary written to a private temporary folder of this process (again, if something removed it)."""
    path = _folder() / f"{CANARY_NAME}.onnx"
    if not path.is_file():
        path.write_bytes(canary_bytes())
    return path


def canary_config(config: MeasureConfig) -> MeasureConfig:
    """``config``'s setup with the canary's short protocol (never longer than ``config``'s own) and no named dims.

    The canary is an ONNX model: a backend that reads another format (``torch-cuda``'s ``.pt2``) cannot measure it.
    """
    if (suffix := type(get_backend(config.backend)).suffix) != ".onnx":
        raise InvalidOptionError(f"The drift canary is an ONNX model; backend {config.backend!r} reads {suffix} files, "
                                 f"so it cannot measure the canary.")
    protocol = {name: min(getattr(config, name), cap) for name, cap in CANARY_PROTOCOL.items()}
    return dataclasses.replace(config, dims=(), repeats_if_unstable=0, **protocol)


__all__ = ["CANARY_NAME", "canary_bytes", "canary_config", "canary_path", "canary_sha256"]
