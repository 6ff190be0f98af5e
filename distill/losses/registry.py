"""Distillation methods by name: the :class:`KDMethod` base, ``@register_loss`` and ``--kd`` specs.

A method is an ``nn.Module`` holding what its loss needs besides the batch (projections, exit heads,
peers, an EMA copy, the cached teacher arrays it reads). A spec such as ``"kd+at:0.5"`` or a TOML list
``[{name = "dkd", beta = 4.0}, {name = "at", weight = 0.5}]`` names the methods to combine.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, Union

import numpy as np
import torch.nn as nn
from torch import Tensor

from distill.arrays import rows
from distill.features import FeatureLayer, FeaturePlan, LayerPair

KDSpec = Union[str, Sequence[Mapping[str, Any]]]


@dataclass(frozen=True)
class KDStep:
    """What one training step shows the methods."""

    indices: np.ndarray  # positions of the batch in the training split: rows of the cached teacher arrays
    inputs: Tensor
    targets: Tensor
    logits: Tensor  # the student's
    features: Mapping[str, Tensor]  # the student's outputs at the paths the methods asked for
    teacher_logits: Tensor | None  # the (primary) teacher's, when there is a teacher
    temperature: float  # this step's scheduled KD temperature


@dataclass(frozen=True)
class BuildContext:
    """What methods are built from: the student, its output shapes, the cached teacher arrays."""

    student: nn.Module
    student_shapes: Mapping[str, tuple[int, ...]]  # every submodule's output shape, without the batch dim
    num_classes: int
    plan: FeaturePlan | None
    teacher_features: Mapping[FeatureLayer, np.ndarray]  # the primary teacher's, training split
    teacher_logits: Sequence[np.ndarray]  # every teacher's training logits, the primary first
    class_weights: Tensor | None  # per class, for the per-sample KL terms
    seed: int

    def feature(self, layer: FeatureLayer, method: str) -> np.ndarray:
        if layer not in self.teacher_features:
            raise ValueError(f"Method {method!r} reads the cached teacher layer {layer.key!r}, but the teacher outputs "
                             f"hold {[known.key for known in self.teacher_features] or 'no features'}; build them with "
                             "teacher_outputs(..., features=teacher_layers(kd, plan)).")
        return self.teacher_features[layer]


class KDMethod(nn.Module):
    """A distillation term. Subclasses set ``defaults`` (every option with its default) and take them as keywords."""

    name: ClassVar[str]
    defaults: ClassVar[Mapping[str, Any]] = {}
    sample_weighted: ClassVar[bool] = False  # a per-sample KL term, which class-frequency weights apply to
    needs_plan: ClassVar[bool] = False  # reads cached teacher features, paired by a FeaturePlan

    def __init__(self) -> None:
        super().__init__()
        self.student_paths: tuple[str, ...] = ()  # student outputs to capture for this method

    @classmethod
    def teacher_layers(cls, plan: FeaturePlan | None, **options: Any) -> list[FeatureLayer]:
        """The teacher outputs this method reads from the cache."""
        return []

    def forward(self, step: KDStep) -> Tensor:
        raise NotImplementedError

    def after_step(self, student: nn.Module) -> None:
        """Called after every optimiser step (e.g. to update an EMA teacher)."""

    def cached(self, array: np.ndarray, step: KDStep) -> Tensor:
        """The batch's rows of a cached teacher array, as float32, on the student's device."""
        return rows(array, step.indices, step.logits.device)

    def teacher(self, step: KDStep) -> Tensor:
        if step.teacher_logits is None:
            raise ValueError(f"Method {self.name!r} needs teacher logits, but this run has no teacher.")
        return step.teacher_logits

    def sample_weights(self, step: KDStep, class_weights: Tensor | None) -> Tensor | None:
        return None if class_weights is None else class_weights.to(step.targets.device)[step.targets]


class UnknownLossError(ValueError):
    """A distillation method name that is not registered."""


_LOSSES: dict[str, type[KDMethod]] = {}
_M = TypeVar("_M", bound=type[KDMethod])


def register_loss(name: str) -> Callable[[_M], _M]:
    """Class decorator adding a :class:`KDMethod` to the registry under ``name``."""

    def decorator(cls: _M) -> _M:
        if name in _LOSSES or name == "none":
            raise ValueError(f"Distillation method {name!r} is already registered or reserved.")
        cls.name = name
        _LOSSES[name] = cls
        return cls

    return decorator


def get_loss(name: str) -> type[KDMethod]:
    try:
        return _LOSSES[name]
    except KeyError:
        raise UnknownLossError(f"Unknown distillation method {name!r}; known methods: {', '.join(list_losses())} "
                               "(or 'none').") from None


def list_losses() -> list[str]:
    return sorted(_LOSSES)


@dataclass(frozen=True)
class KDTerm:
    """One method of a spec, its weight in the sum and its options (the rest keep their defaults)."""

    name: str
    weight: float = 1.0
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        method = get_loss(self.name)
        if not math.isfinite(self.weight) or self.weight < 0:
            raise ValueError(f"The weight of {self.name!r} must be a finite number >= 0, but got {self.weight}.")
        unknown = sorted(set(self.options) - set(method.defaults))
        if unknown:
            raise ValueError(f"Unknown option(s) {unknown} of distillation method {self.name!r}; its options are "
                             f"{dict(method.defaults) or 'none'}.")

    @property
    def method(self) -> type[KDMethod]:
        return get_loss(self.name)

    @property
    def resolved(self) -> dict[str, Any]:
        """Every option of the method: the defaults, overridden by ``options``."""
        return {**self.method.defaults, **self.options}


def parse_kd_spec(spec: KDSpec | Sequence[KDTerm]) -> list[KDTerm]:
    """``"kd+at:0.5"`` → ``[KDTerm("kd", 1.0), KDTerm("at", 0.5)]``; ``"none"`` → ``[]`` (cross-entropy only).

    A list of mappings (a TOML array of tables) gives ``name``, optionally ``weight``, and method options.
    """
    if isinstance(spec, str):
        if spec.strip() == "none":
            return []
        terms = [KDTerm(name, weight) for name, weight in split_spec(spec)]
    else:
        terms = [item if isinstance(item, KDTerm) else _term_from_mapping(item) for item in spec]
    names = [term.name for term in terms]
    if not terms or len(set(names)) != len(names):
        raise ValueError(f"A distillation spec must name each method once and at least one (or be 'none'), but got "
                         f"{spec!r}.")
    return terms


def split_spec(spec: str) -> list[tuple[str, float]]:
    """``"kd+at:0.5"`` → ``[("kd", 1.0), ("at", 0.5)]``: the syntax of a distillation spec, names not checked."""
    pairs = []
    for part in spec.split("+"):
        name, _, weight = (text.strip() for text in part.partition(":"))
        if not name:
            raise ValueError(f"Cannot parse distillation spec {spec!r}: expected 'name[:weight]+...', e.g. "
                             "'kd+at:0.5'.")
        try:
            pairs.append((name, float(weight) if weight else 1.0))
        except ValueError:
            raise ValueError(f"The weight of {name!r} in {spec!r} must be a number, but got {weight!r}.") from None
    return pairs


def _term_from_mapping(item: Mapping[str, Any]) -> KDTerm:
    if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
        raise ValueError(f"Each entry of a distillation list must be a table with a 'name', but got {item!r}.")
    options = {key: value for key, value in item.items() if key not in ("name", "weight")}
    return KDTerm(item["name"], float(item.get("weight", 1.0)), options)


def require_maps(plan: FeaturePlan | None, method: str) -> tuple[LayerPair, ...]:
    if plan is None or not plan.maps:
        raise ValueError(f"Method {method!r} needs paired feature maps: give a FeaturePlan with maps "
                         f"(distill.plan_features), but got {plan!r}.")
    return plan.maps


def require_embedding(plan: FeaturePlan | None, method: str) -> LayerPair:
    if plan is None or plan.embedding is None:
        raise ValueError(f"Method {method!r} needs paired embeddings: give a FeaturePlan with an embedding "
                         f"(distill.plan_features), but got {plan!r}.")
    return plan.embedding
