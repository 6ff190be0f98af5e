from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

INPUT_NAME = "input"
OUTPUT_NAME = "output"


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path, opset: int = 17) -> Path:
    """Export ``model`` (eval mode) to ONNX with a dynamic batch dimension; returns the path.

    Uses the TorchScript exporter: it takes milliseconds where the dynamo one takes ~0.5 s, which
    matters when every trial of a search exports a student.
    """
    return export_onnx_inputs(model, {INPUT_NAME: torch.zeros(1, *input_shape)}, path, opset)


def export_onnx_inputs(model: nn.Module, inputs: Mapping[str, torch.Tensor], path: str | Path,
                       opset: int = 17) -> Path:
    """Export ``model(*inputs.values())`` (eval mode) to ONNX, with graph inputs named and typed as ``inputs``
    (e.g. int64 ``input_ids`` and ``attention_mask``), dim 0 of each one dynamic ("batch") and the other
    dims as in the examples; one output named ``output``. Returns the path."""
    if not inputs:
        raise ValueError("`inputs` must name at least one example input, but got none.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    dynamic_axes = {name: {0: "batch"} for name in [*inputs, OUTPUT_NAME]}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model, tuple(inputs.values()), str(path), dynamo=False, opset_version=opset,
                input_names=list(inputs), output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes,
            )
    finally:
        model.train(was_training)
    return path


def export_pt2(model: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> Path:
    """Export ``model`` (eval mode) with ``torch.export`` and a dynamic batch, for the torch-cuda backend."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        program = torch.export.export(model, (torch.zeros(2, *input_shape),),
                                      dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
        torch.export.save(program, str(path))
    finally:
        model.train(was_training)
    return path
