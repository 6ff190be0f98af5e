"""The composite criterion: cross-entropy plus the weighted distillation terms of a spec."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distill import methods, online  # noqa: F401  (register the methods)
from distill.data import Dataset
from distill.features import FeatureLayer, FeaturePlan, probe
from distill.registry import BuildContext, KDMethod, KDSpec, KDStep, get_loss, list_losses, parse_kd_spec
from distill.weighting import class_frequency_weights

if TYPE_CHECKING:
    from distill.cache import TeacherOutputs
    from distill.train import TrainConfig


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


def build_criterion(student: nn.Module, data: Dataset, config: TrainConfig, *,
                    teachers: Sequence[TeacherOutputs] = (), plan: FeaturePlan | None = None) -> KDCriterion:
    """The criterion of ``config.kd`` for ``student``, reading the cached ``teachers`` (the primary first).

    With ``config.class_weighted``, the per-sample KL terms weigh each sample by its class's inverse
    frequency in ``data.y_train``; at least one such term must be in the spec.
    """
    terms = parse_kd_spec(config.kd)
    class_weights = None
    if config.class_weighted:
        if not any(term.method.sample_weighted for term in terms):
            raise ValueError(f"`class_weighted` weighs per-sample KL terms "
                             f"({', '.join(n for n in list_losses() if get_loss(n).sample_weighted)}), but the spec "
                             f"{config.kd!r} has none.")
        class_weights = class_frequency_weights(data.y_train, data.num_classes)
    context = BuildContext(
        student=student, student_shapes=probe(student, data.input_shape, config.seed), num_classes=data.num_classes,
        plan=plan, teacher_features=teachers[0].features if teachers else {},
        teacher_logits=[teacher.train for teacher in teachers], class_weights=class_weights, seed=config.seed)
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

