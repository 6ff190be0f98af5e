"""Lower an ONNX model's float precision before a backend loads it.

TensorRT 10 and 11 build *strongly typed* networks: the precision of every layer is the type of its
tensors in the ONNX file (TensorRT 11 has no FP16 builder flag at all), so FP16 means converting
the model. NVIDIA's ModelOpt AutoCast is used when installed, else onnxconverter-common; graph inputs
and outputs keep their types, so the same fp32 feed works. A quantized (QDQ) model is refused: its precision is
already in the file, and converting its scales would change what TensorRT's explicit quantization builds.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from hwprofile.errors import BackendUnavailableError, InvalidModelError, InvalidOptionError

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def to_fp16(path: str | Path, output: str | Path) -> Path:
    """Write an FP16 version of the model at ``path`` (float32 I/O kept) to ``output``; an
    :class:`InvalidOptionError` for a quantized (QDQ) model."""
    path, output = Path(path), Path(output)
    try:
        import modelopt.onnx.autocast as autocast  # type: ignore[import-not-found]
    except ImportError:
        autocast = None
    try:
        if any(node.op_type in QDQ_OPS for node in onnx.load(str(path), load_external_data=False).graph.node):
            raise InvalidOptionError(f"precision='fp16' converts a float model, but {str(path)!r} is quantized "
                                     f"(QuantizeLinear/DequantizeLinear nodes): its precision is in the file; measure "
                                     f"it with precision='fp32', which loads it as it is.")
        if autocast is not None:
            model = autocast.convert_to_mixed_precision(onnx_path=str(path), low_precision_type="fp16",
                                                        keep_io_types=True)
        else:
            try:
                from onnxconverter_common import float16  # type: ignore[import-untyped]
            except ImportError:
                raise BackendUnavailableError(
                    "precision='fp16' converts the ONNX model and needs nvidia-modelopt or onnxconverter-common: "
                    "pip install onnxconverter-common") from None
            model = float16.convert_float_to_float16(onnx.load(str(path)), keep_io_types=True)
    except (BackendUnavailableError, InvalidOptionError):
        raise
    except Exception as error:
        raise InvalidModelError(f"Cannot convert {str(path)!r} to fp16: {error}".splitlines()[0]) from error
    onnx.save(model, str(output))
    return output
