"""Intermediate features: layers picked by module path, stage-to-stage matching, hooks, teacher-side reduction,
and a model's outputs over an array (:func:`predict`, :func:`extract`).

A :class:`FeaturePlan` pairs student outputs with teacher outputs by module path (``"stages.1"`` with
``"features.12"``). The teacher's side is a :class:`FeatureLayer`: a path plus how its output is reduced
before it is cached (pooled to the student's spatial size; for attention transfer, collapsed to one
channel), so the cache holds only what the distillation terms read.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distill.device import module_device
from distill.errors import TeacherError


@dataclass(frozen=True)
class FeatureLayer:
    """One teacher output to cache: the output of module ``path``, reduced.

    ``attention_p``: keep only attention transfer's map ``(mean_c |A|^p)^(1/p)`` (one channel), computed at the
    layer's resolution; ``size``: then adaptive-average-pool the spatial dims to ``size``. With ``(1, 1)`` a
    map becomes a globally pooled embedding.
    """

    path: str
    size: tuple[int, int] | None = None
    attention_p: float | None = None

    @property
    def key(self) -> str:
        """A file-name-safe identity of the layer and its reduction (part of the cache key)."""
        parts = [self.path or "output"]
        if self.size is not None:
            parts.append(f"{self.size[0]}x{self.size[1]}")
        if self.attention_p is not None:
            parts.append(f"at{self.attention_p:g}")
        return "-".join(parts)

    def reduce(self, output: Tensor) -> Tensor:
        if (self.size is not None or self.attention_p is not None) and output.ndim != 4:
            raise ValueError(f"Pooling or an attention map needs a (batch, channels, height, width) output, but "
                             f"{self.path!r} gives shape {tuple(output.shape)}.")
        if self.attention_p is not None:
            output = output.abs().pow(self.attention_p).mean(dim=1, keepdim=True)
        if self.size is not None:
            output = F.adaptive_avg_pool2d(output, self.size)
        if self.attention_p is not None:
            output = output.pow(1.0 / self.attention_p)
        return output


@dataclass(frozen=True)
class LayerPair:
    """Student output ``student`` matched to teacher output ``teacher``, pooled to ``size`` (None: as it is)."""

    student: str
    teacher: str
    size: tuple[int, int] | None = None


@dataclass(frozen=True)
class FeaturePlan:
    """Which student outputs are matched to which teacher outputs.

    ``maps``: spatial feature maps, shallow to deep, the teacher's pooled to the student's size (attention
    transfer, FitNets). ``embedding``: the penultimate vectors (RKD, similarity-preserving, contrastive).
    """

    maps: tuple[LayerPair, ...] = ()
    embedding: LayerPair | None = None


def submodule(module: nn.Module, path: str) -> nn.Module:
    """``module.get_submodule(path)`` with an error listing some of the paths that exist."""
    if isinstance(module, torch.jit.ScriptModule):
        raise ValueError(f"Features cannot be read from a TorchScript module (no hooks); give an nn.Module to use "
                         f"layer {path!r}.")
    try:
        return module.get_submodule(path)
    except AttributeError:
        known = [name for name, _ in module.named_modules() if name]
        raise ValueError(f"{type(module).__name__} has no module at path {path!r}; its paths include "
                         f"{', '.join(known[:12])}{', ...' if len(known) > 12 else ''}.") from None


@contextmanager
def hooks(module: nn.Module, callbacks: Sequence[tuple[str, Callable[[Tensor], None]]]) -> Iterator[None]:
    """Within the block, each forward pass calls ``callback(output)`` of the module at each path."""
    handles = [submodule(module, path).register_forward_hook(lambda _m, _i, output, call=callback: call(output))
               for path, callback in callbacks]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capture(module: nn.Module, paths: Sequence[str]) -> Iterator[dict[str, Tensor]]:
    """Within the block, every forward pass of ``module`` stores the outputs of ``paths`` in the yielded dict."""
    outputs: dict[str, Tensor] = {}
    with hooks(module, [(path, partial(outputs.__setitem__, path)) for path in dict.fromkeys(paths)]):
        yield outputs


@torch.no_grad()
def probe(module: nn.Module, input_shape: tuple[int, ...], seed: int = 0) -> dict[str, tuple[int, ...]]:
    """The output shape (without the batch dim) of every submodule, in the order the modules finish.

    Runs ``module`` in eval mode on two seeded random inputs. The model's own output (the logits) and
    non-tensor outputs are left out; a module called twice keeps its last shape.
    """
    names = [name for name, _ in module.named_modules() if name]
    was_training = module.training
    module.eval()
    try:
        with capture(module, names) as outputs:
            logits = module(torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(seed))
                            .to(module_device(module)))
    finally:
        module.train(was_training)
    return {name: tuple(out.shape[1:]) for name, out in outputs.items()
            if isinstance(out, Tensor) and out is not logits and out.ndim >= 2}


def stage_paths(student: nn.Module) -> list[str]:
    """``stages.0``, ``stages.1``, ...: the stages of a search-space student (an ``nn.ModuleList`` ``stages``)."""
    stages = getattr(student, "stages", None)
    if not isinstance(stages, nn.ModuleList):
        raise ValueError(f"Automatic stage matching needs a student with an nn.ModuleList `stages` (search-space "
                         f"students have one), but {type(student).__name__} has none; pass the layer pairs explicitly.")
    return [f"stages.{index}" for index in range(len(stages))]


def plan_features(student: nn.Module, teacher: nn.Module | Any, input_shape: tuple[int, int, int], *,
                  maps: Sequence[tuple[str, str]] | None = None,
                  embedding: tuple[str, str] | None = None) -> FeaturePlan:
    """Pair student and teacher outputs by module path, explicitly or automatically.

    ``teacher``: an ``nn.Module``, or a teacher holding one as ``.module`` (a PyTorch teacher; an ONNX
    teacher has no intermediate outputs to read).

    ``maps`` (``(student_path, teacher_path)`` pairs) default to stage-to-stage matching: the last feature
    map of each student stage is paired with the deepest teacher map of the smallest spatial size at least
    the student's (the same size, where the teacher has one); the teacher's map is pooled to the student's
    size. ``embedding`` defaults to each model's last 2-D output other than the logits (the penultimate
    vector); a teacher without one gives its deepest map, globally pooled. Both models are probed on two
    random inputs; the teacher only the first time (its shapes are remembered), so that planning for
    every student of a search does not run the teacher again.
    """
    module = teacher if isinstance(teacher, nn.Module) else getattr(teacher, "module", None)
    if not isinstance(module, nn.Module) or isinstance(module, torch.jit.ScriptModule):
        raise TeacherError(f"Feature-based distillation reads the teacher's intermediate outputs, which need a PyTorch "
                           f"nn.Module teacher (built in or torch.save'd), but got {type(module or teacher).__name__}.")
    student_shapes, teacher_shapes = probe(student, input_shape), _teacher_shapes(module, input_shape)
    if maps is None:
        maps = [(path, _deepest_map_covering(path, student_shapes, teacher_shapes)) for path in stage_paths(student)]
    pairs = tuple(LayerPair(s, t, _map_size(s, t, student_shapes, teacher_shapes)) for s, t in maps)
    if embedding is None:
        vectors = [name for name, shape in student_shapes.items() if len(shape) == 1]
        teacher_path = _penultimate(teacher_shapes)
        embedding = (vectors[-1], teacher_path) if vectors and teacher_path else None
    if embedding is None:
        return FeaturePlan(maps=pairs)
    student_path, teacher_path = embedding
    _shape(student_shapes, student_path, "student")
    pooled = (1, 1) if len(_shape(teacher_shapes, teacher_path, "teacher")) == 3 else None
    return FeaturePlan(maps=pairs, embedding=LayerPair(student_path, teacher_path, pooled))


_PROBED: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], dict[str, tuple[int, ...]]]] = \
    weakref.WeakKeyDictionary()


def _teacher_shapes(teacher: nn.Module, input_shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """The teacher's output shapes, probed once per module and input shape: planning a search's every
    student then never runs the teacher again."""
    known = _PROBED.setdefault(teacher, {})
    if tuple(input_shape) not in known:
        known[tuple(input_shape)] = probe(teacher, input_shape)
    return known[tuple(input_shape)]


def _shape(shapes: dict[str, tuple[int, ...]], path: str, side: str) -> tuple[int, ...]:
    if path not in shapes:
        raise ValueError(f"The {side} has no tensor output at module path {path!r}; its outputs are at "
                         f"{', '.join(list(shapes)[:12])}{', ...' if len(shapes) > 12 else ''}.")
    return shapes[path]


def _map_size(student_path: str, teacher_path: str, student_shapes: dict[str, tuple[int, ...]],
              teacher_shapes: dict[str, tuple[int, ...]]) -> tuple[int, int]:
    """The student map's spatial size, checking that both outputs are maps and the teacher's is not smaller."""
    student, teacher = _shape(student_shapes, student_path, "student"), _shape(teacher_shapes, teacher_path, "teacher")
    if len(student) != 3 or len(teacher) != 3 or teacher[1] < student[1] or teacher[2] < student[2]:
        raise ValueError(f"Paired layers must output (batch, channels, height, width) maps with the teacher's at "
                         f"least as large, but got student {student_path!r} {student} and teacher {teacher_path!r} "
                         f"{teacher} (without the batch dim).")
    return student[1], student[2]


def _deepest_map_covering(path: str, student_shapes: dict[str, tuple[int, ...]],
                          teacher_shapes: dict[str, tuple[int, ...]]) -> str:
    """The teacher map of the smallest spatial size >= the student map's; the deepest of those."""
    shape = _shape(student_shapes, path, "student")
    candidates = [(order, name, s) for order, (name, s) in enumerate(teacher_shapes.items())
                  if len(shape) == 3 and len(s) == 3 and s[1] >= shape[1] and s[2] >= shape[2]]
    if not candidates:
        raise ValueError(f"The teacher has no feature map at least as large as student stage {path!r} (output "
                         f"{shape} without the batch dim); pass the layer pairs explicitly.")
    return min(candidates, key=lambda c: (c[2][1] * c[2][2], -c[0]))[1]


def _penultimate(shapes: dict[str, tuple[int, ...]]) -> str | None:
    vectors = [name for name, shape in shapes.items() if len(shape) == 1]
    maps = [name for name, shape in shapes.items() if len(shape) == 3]
    return vectors[-1] if vectors else maps[-1] if maps else None


@torch.no_grad()
def predict(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """The model's float32 logits on ``x``, in eval mode, ``batch_size`` samples at a time, on the model's device."""
    model.eval()
    device = module_device(model)
    return np.concatenate([model(torch.from_numpy(x[i:i + batch_size]).to(device)).float().cpu().numpy()
                           for i in range(0, len(x), batch_size)])


def extract(module: nn.Module, x: np.ndarray, layers: Sequence[FeatureLayer],
            batch_size: int = 256) -> tuple[np.ndarray, dict[FeatureLayer, np.ndarray]]:
    """Run ``module`` once over ``x``: its float32 logits and each layer's reduced output as float16.

    Outputs are reduced inside the hooks, before a later in-place operation could change them.
    """
    chunks: dict[FeatureLayer, list[np.ndarray]] = {layer: [] for layer in layers}

    def keep(layer: FeatureLayer, output: Tensor) -> None:
        chunks[layer].append(layer.reduce(output.float()).half().cpu().numpy())

    with hooks(module, [(layer.path, partial(keep, layer)) for layer in layers]):
        logits = predict(module, x, batch_size)
    return logits, {layer: np.concatenate(parts) for layer, parts in chunks.items()}
