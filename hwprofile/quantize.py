"""Static INT8 quantization of an ONNX model by ONNX Runtime, in the QDQ format that CPUs and TensorRT consume.

The model is pre-processed first (shape inference and ONNX Runtime's graph optimisation, as ONNX Runtime
recommends: without it biases are not folded into initializers and the QDQ graph runs 2-4x slower here), then
``onnxruntime.quantization.quantize_static`` inserts QuantizeLinear/DequantizeLinear pairs with int8 weights per output
channel (symmetric), in one of two formats (:data:`INT8_FORMATS`): ``ort``, uint8 activations (asymmetric, ranges
from the calibration feeds) and int32 biases, the choice ONNX Runtime documents for x86 CPUs; or ``tensorrt``, what
TensorRT's explicit quantization takes: int8 activations, symmetric like the weights (every zero point 0), and float
biases (TensorRT takes no int32 input into a DequantizeLinear). Either way the QDQ graph's structure does not depend
on the weights or on the calibrated ranges (asymmetric activations always fold Relu and Clip into their ranges,
symmetric ones always keep them), so an untrained copy of a model has the latency of the trained one, and its size to
within a byte per activation (zero points are stored as varints).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      quant_pre_process, quantize_static)

from hwprofile.errors import InvalidModelError, InvalidOptionError
from hwprofile.graph import load_onnx

# How activation ranges are calibrated: the min and max seen, or the 0.0005th and 99.9995th percentiles (outliers
# clipped; from a histogram of the values, not of |x|: ORT's |x| histogram fails on tensors of a tiny spread).
CALIBRATION_METHODS = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
# The QDQ file's format: its activation type and the quantizer's options (ONNX Runtime's quantize_static) beyond the
# per-channel symmetric int8 weights both share. ``ort``: uint8 asymmetric activations (ONNX Runtime's x86 advice).
# ``tensorrt``: int8 symmetric activations and weights, zero points 0, biases left in float (TensorRT's explicit
# quantization rejects a DequantizeLinear of int32).
INT8_FORMATS: dict[str, dict[str, Any]] = {
    "ort": {"activation_type": QuantType.QUInt8, "extra_options": {}},
    "tensorrt": {"activation_type": QuantType.QInt8,
                 "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False}},
}


class QuantizationError(InvalidModelError):
    """A model that ONNX Runtime's static quantization cannot quantize, or whose quantized file is invalid."""


class _Feeds(CalibrationDataReader):
    """The calibration feeds (graph input name to array), one at a time, as ``quantize_static`` reads them."""

    def __init__(self, feeds: Iterable[Mapping[str, np.ndarray]]) -> None:
        self._feeds: Iterator[Mapping[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed = next(self._feeds, None)
        return None if feed is None else dict(feed)


def quantize_int8(path: str | Path, output: str | Path, calibration: Iterable[Mapping[str, np.ndarray]], *,
                  method: str = "minmax", int8_format: str = "ort") -> Path:
    """Write the static INT8 (QDQ) version of the ONNX model at ``path`` to ``output`` in ``int8_format``
    (:data:`INT8_FORMATS`), its activation ranges calibrated by ``method`` (:data:`CALIBRATION_METHODS`) on
    ``calibration``'s feeds; returns ``output``.

    Any failure of ONNX Runtime's quantizer (an operator it cannot handle, ...) or an output that fails the ONNX
    checker is a :class:`QuantizationError` naming the model.
    """
    if method not in CALIBRATION_METHODS:
        raise InvalidOptionError(f"Unknown calibration method {method!r}; choose one of "
                                 f"{', '.join(CALIBRATION_METHODS)}.")
    if int8_format not in INT8_FORMATS:
        raise InvalidOptionError(f"Unknown int8 format {int8_format!r}; choose one of {', '.join(INT8_FORMATS)}.")
    chosen = INT8_FORMATS[int8_format]
    path, output = Path(path), Path(output)
    load_onnx(path)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="hwprofile-int8-") as workdir, _quiet():
            prepared = Path(workdir) / "prepared.onnx"
            quant_pre_process(str(path), str(prepared))
            quantize_static(str(prepared), str(output), _Feeds(calibration), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=chosen["activation_type"], weight_type=QuantType.QInt8,
                            calibrate_method=CALIBRATION_METHODS[method],
                            extra_options={"CalibTensorRangeSymmetric": False,  # see CALIBRATION_METHODS
                                           **chosen["extra_options"]})
    except Exception as error:  # the quantizer raises ValueError, KeyError, AssertionError, ORT's Fail, ...
        output.unlink(missing_ok=True)
        raise QuantizationError(f"ONNX Runtime cannot quantize {str(path)!r} to int8 ({int8_format} format, {method} "
                                f"calibration): {type(error).__name__}: {error}".splitlines()[0]) from error
    try:
        load_onnx(output)
    except InvalidModelError as error:
        output.unlink()
        raise QuantizationError(f"The int8 model quantized from {str(path)!r} is invalid: {error}") from error
    return output


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The quantizer warns on the root logger (about every bias), prints its histograms' progress to stdout, and its
    numpy calls warn on degenerate tensors (which then fail it, with a message of their own)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    finally:
        root.setLevel(level)


__all__ = ["CALIBRATION_METHODS", "INT8_FORMATS", "QuantizationError", "quantize_int8"]
