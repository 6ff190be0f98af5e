"""The composite criterion: cross-entropy plus the weighted distillation terms of a spec."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distill.features import FeatureLayer, FeaturePlan, probe
from distill.losses import methods, online  # noqa: F401  (register the methods)
from distill.losses.registry import BuildContext, KDMethod, KDSpec, KDStep, get_loss, list_losses, parse_kd_spec
from distill.losses.weighting import class_frequency_weights


class KDCriterion(nn.Module):
    """``(1 − alpha) · CE + alpha · Σ_k w_k · L_k`` over the methods of a spec (just CE for ``"none"``)."""

    def __init__(self, methods: Sequence[KDMethod], weights: Sequence[float]) -> None:
        super().__init__()
        self.methods = nn.ModuleDict({method.name: method for method in methods})
        self.weights = dict(zip(self.methods, weights))

    @property
    def student_paths(self) -> list[str]:
        return list(dict.fromkeys(path for method in self.methods.values() for path in method.student_paths))

    def forward(self, step: KDStep) -> dict[str, Tensor]:
        """Every term's unweighted value: ``"ce"`` and one per method."""
        return {"ce": F.cross_entropy(step.logits, step.targets),
                **{name: method(step) for name, method in self.methods.items()}}

    def combine(self, losses: Mapping[str, Tensor], alpha: float) -> Tensor:
        if not self.methods:
            return losses["ce"]
        return (1.0 - alpha) * losses["ce"] + alpha * sum(self.weights[name] * losses[name] for name in self.methods)

    def after_step(self, student: nn.Module) -> None:
        for method in self.methods.values():
            method.after_step(student)


def build_criterion(student: nn.Module, kd: KDSpec, input_shape: tuple[int, ...], num_classes: int, *,
                    teacher_logits: Sequence[np.ndarray] = (),
                    teacher_features: Mapping[FeatureLayer, np.ndarray] | None = None,
                    plan: FeaturePlan | None = None, class_labels: np.ndarray | None = None,
                    seed: int = 0) -> KDCriterion:
    """The criterion of the methods of ``kd`` for ``student`` (inputs of ``input_shape``, without the batch dim).

    The methods read cached arrays of the training split: ``teacher_logits`` of every teacher (the primary
    first) and the primary teacher's ``teacher_features``, paired with the student's by ``plan``. With
    ``class_labels`` (the training labels), the per-sample KL terms weigh each sample by its class's inverse
    frequency in them; at least one such term must be in the spec. ``seed`` seeds the student's probe and peers.
    """
    terms = parse_kd_spec(kd)
    class_weights = None
    if class_labels is not None:
        if not any(term.method.sample_weighted for term in terms):
            raise ValueError(f"`class_weighted` weighs per-sample KL terms "
                             f"({', '.join(n for n in list_losses() if get_loss(n).sample_weighted)}), but the spec "
                             f"{kd!r} has none.")
        class_weights = class_frequency_weights(class_labels, num_classes)
    context = BuildContext(
        student=student, student_shapes=probe(student, input_shape, seed), num_classes=num_classes, plan=plan,
        teacher_features=teacher_features or {}, teacher_logits=list(teacher_logits), class_weights=class_weights,
        seed=seed)
    built = [term.method(context, **term.resolved) for term in terms]
    for method in built:
        missing = [path for path in method.student_paths if path not in context.student_shapes]
        if missing:
            raise ValueError(f"Method {method.name!r} reads student outputs {missing}, which "
                             f"{type(student).__name__} does not have.")
    return KDCriterion(built, [term.weight for term in terms])


def uses_teacher_features(kd: KDSpec) -> bool:
    """Whether a method of ``kd`` reads teacher features, so that a :class:`FeaturePlan` is needed."""
    return any(term.method.needs_plan for term in parse_kd_spec(kd))


def teacher_layers(kd: KDSpec, plan: FeaturePlan | None) -> list[FeatureLayer]:
    """The teacher outputs that ``kd`` reads through ``plan``: what ``teacher_outputs(features=...)`` must cache."""
    layers = (layer for term in parse_kd_spec(kd) for layer in term.method.teacher_layers(plan, **term.resolved))
    return list(dict.fromkeys(layers))

