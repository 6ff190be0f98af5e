"""Static facts about an ONNX model: file size, parameter count, multiply-accumulates."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

from hwprofile.errors import InvalidModelError
from hwprofile.inputs import InputSpec
from hwprofile.measurement import ModelStats


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load and check an ONNX file, raising :class:`InvalidModelError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InvalidModelError(f"ONNX model {str(path)!r} does not exist.")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as error:  # onnx raises DecodeError, ValidationError, ...
        raise InvalidModelError(f"{str(path)!r} is not a valid ONNX model: {error}".splitlines()[0]) from error
    return model


def model_stats(path: str | Path) -> ModelStats:
    """Parameters (initializer elements), MACs of Conv/Gemm/MatMul at batch 1, and file size."""
    model = load_onnx(path)
    params = sum(math.prod(init.dims) for init in model.graph.initializer)
    return ModelStats(params=params, macs=_count_macs(model), size_bytes=Path(path).stat().st_size)


def onnx_input_specs(path: str | Path) -> list[InputSpec]:
    """The graph inputs of an ONNX file (initializers excluded) with their dims and numpy dtypes."""
    model = load_onnx(path)
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        except (KeyError, TypeError, ValueError):
            raise InvalidModelError(f"Input {value.name!r} of {str(path)!r} has element type {tensor.elem_type}, "
                                    f"which has no numpy equivalent.") from None
        specs.append(InputSpec(value.name, dims, dtype))
    return specs


def _count_macs(model: onnx.ModelProto) -> int:
    _fix_batch_dims(model)
    # Data propagation folds Shape→Gather→Concat chains, so a Reshape by a computed shape (e.g. the
    # heads split of attention, after a dynamic batch) still has a known output; without it every
    # MatMul downstream of such a Reshape would have unknown dims and count 0 MACs.
    inferred = shape_inference.infer_shapes(model, data_prop=True)
    graph = inferred.graph
    shapes = {v.name: _dims(v) for v in [*graph.value_info, *graph.input, *graph.output]}
    shapes.update({init.name: list(init.dims) for init in graph.initializer})
    for node in graph.node:  # Constant nodes carry weights in some exports
        if node.op_type == "Constant" and node.attribute and node.attribute[0].t.dims:
            shapes[node.output[0]] = list(numpy_helper.to_array(node.attribute[0].t).shape)
    total = 0
    for node in graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if not out or any(d is None for d in out):
            continue
        if node.op_type == "Conv":
            weight = shapes.get(node.input[1])
            total += math.prod(out) * math.prod(weight[1:]) if weight else 0
        elif node.op_type in ("MatMul", "Gemm"):
            a = shapes.get(node.input[0])
            if a:
                trans_a = any(att.name == "transA" and att.i for att in node.attribute)
                total += math.prod(out) * (a[0] if trans_a and node.op_type == "Gemm" else a[-1])
    return int(total)


def _dims(value: onnx.ValueInfoProto) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim]


def _fix_batch_dims(model: onnx.ModelProto) -> None:
    """Set symbolic leading dimensions of the graph inputs to 1 so that shapes infer fully."""
    initializers = {init.name for init in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        for dim in value.type.tensor_type.shape.dim[:1]:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    for value in model.graph.output:
        for dim in value.type.tensor_type.shape.dim[:1]:
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
