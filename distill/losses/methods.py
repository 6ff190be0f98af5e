"""Teacher-based distillation methods: response-based, feature-based and relation-based.

Every method reads the teacher from the cache (its logits, or the features a :class:`FeaturePlan`
pairs with the student's). Options named ``temperature`` that are ``None`` follow the run's scheduled
KD temperature.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from distill.features import FeatureLayer, FeaturePlan, LayerPair
from distill.losses.functional import (at_loss, contrastive_loss, dist_loss, dkd_loss, hint_loss, kd_divergence,
                                       rkd_loss, sp_loss, weighted_kd_loss)
from distill.losses.registry import BuildContext, KDMethod, KDStep, register_loss, require_embedding, require_maps
from distill.losses.weighting import confidence_weights


@register_loss("kd")
class HintonKD(KDMethod):
    """Hinton et al. 2015, "Distilling the Knowledge in a Neural Network": ``T² · KL(p_t ‖ p_s)``, softened by T."""

    defaults = {"temperature": None}
    sample_weighted = True

    def __init__(self, context: BuildContext, *, temperature: float | None) -> None:
        super().__init__()
        self.temperature, self.class_weights = temperature, context.class_weights

    def forward(self, step: KDStep) -> Tensor:
        return weighted_kd_loss(step.logits, self.teacher(step), self.sample_weights(step, self.class_weights),
                                self.temperature or step.temperature)


@register_loss("dkd")
class DecoupledKD(KDMethod):
    """Zhao et al. CVPR 2022, "Decoupled Knowledge Distillation": ``T² · (alpha · TCKD + beta · NCKD)``."""

    defaults = {"alpha": 1.0, "beta": 8.0, "temperature": None}

    def __init__(self, context: BuildContext, *, alpha: float, beta: float, temperature: float | None) -> None:
        super().__init__()
        self.alpha, self.beta, self.temperature = alpha, beta, temperature

    def forward(self, step: KDStep) -> Tensor:
        return dkd_loss(step.logits, self.teacher(step), step.targets, self.alpha, self.beta,
                        self.temperature or step.temperature)


@register_loss("dist")
class DIST(KDMethod):
    """Huang et al. NeurIPS 2022, "Knowledge Distillation from A Stronger Teacher": Pearson correlation of the
    softened predictions, per sample (inter-class, ``beta``) and per class over the batch (intra-class, ``gamma``).
    The paper uses temperature 1 on ImageNet: pass ``temperature = 1.0`` for that."""

    defaults = {"beta": 1.0, "gamma": 1.0, "temperature": None}

    def __init__(self, context: BuildContext, *, beta: float, gamma: float, temperature: float | None) -> None:
        super().__init__()
        self.beta, self.gamma, self.temperature = beta, gamma, temperature

    def forward(self, step: KDStep) -> Tensor:
        return dist_loss(step.logits, self.teacher(step), self.beta, self.gamma, self.temperature or step.temperature)


@register_loss("mkd")
class MultiTeacherKD(KDMethod):
    """Multi-teacher KD: ``mean_b Σ_k w_bk · T² · KL(p_t_k ‖ p_s)`` over the K teachers' cached logits.

    ``weights``: fixed per-teacher weights (default 1/K each); ``confidence = true``: per-sample weights of
    CA-MKD (Zhang et al. ICASSP 2022), ``(1 − softmax_k(CE_k)) / (K − 1)``, from each teacher's
    cross-entropy on the label.
    """

    defaults = {"weights": None, "confidence": False, "temperature": None}
    sample_weighted = True

    def __init__(self, context: BuildContext, *, weights: list[float] | None, confidence: bool,
                 temperature: float | None) -> None:
        super().__init__()
        self.teachers = list(context.teacher_logits)
        count = len(self.teachers)
        if count == 0:
            raise ValueError("Method 'mkd' reads the cached logits of its teachers, but this run has none.")
        if confidence and weights is not None:
            raise ValueError(f"Method 'mkd' takes fixed `weights` or `confidence = true`, not both, but got "
                             f"({weights=}, {confidence=}).")
        if weights is not None and (len(weights) != count or any(w < 0 for w in weights)):
            raise ValueError(f"Method 'mkd' needs one weight >= 0 per teacher ({count}), but got {weights=}.")
        self.fixed = torch.tensor(weights if weights is not None else [1.0 / count] * count)
        self.confidence, self.temperature, self.class_weights = confidence, temperature, context.class_weights

    def forward(self, step: KDStep) -> Tensor:
        teachers = torch.stack([self.cached(logits, step) for logits in self.teachers], dim=1)  # (B, K, C)
        weights = confidence_weights(teachers, step.targets) if self.confidence else \
            self.fixed.to(teachers.device).expand(len(teachers), -1)
        temperature = self.temperature or step.temperature
        per_teacher = torch.stack([kd_divergence(step.logits, teachers[:, k], temperature)
                                   for k in range(teachers.shape[1])], dim=1)
        per_sample = (weights * per_teacher).sum(dim=1)
        sample_weights = self.sample_weights(step, self.class_weights)
        return (per_sample if sample_weights is None else sample_weights * per_sample).mean()


@register_loss("fitnets")
class FitNets(KDMethod):
    """Romero et al. ICLR 2015, "FitNets: Hints for Thin Deep Nets": ``MSE(r(F_s), F_t)`` with a learned
    regressor ``r`` (1×1 conv for maps, linear for vectors) on one hint pair: ``plan.maps[pair]`` (default
    the deepest), or the embedding pair when the plan has no maps."""

    defaults = {"pair": -1}
    needs_plan = True

    def __init__(self, context: BuildContext, *, pair: int) -> None:
        super().__init__()
        hint = self._pair(context.plan, pair)
        (layer,) = self.teacher_layers(context.plan, pair=pair)
        self.student_paths, self.target = (hint.student,), context.feature(layer, self.name)
        student, teacher = context.student_shapes[hint.student], self.target.shape[1:]
        if len(student) == 3:
            if len(teacher) != 3 or teacher[1:] != student[1:]:
                raise ValueError(f"FitNets pairs student {hint.student!r} {student} with teacher {layer.key!r} "
                                 f"{teacher}: spatial sizes must match (without the batch dim).")
            self.regressor: nn.Module = nn.Conv2d(student[0], teacher[0], 1, bias=False)
        else:
            self.regressor = nn.Linear(math.prod(student), math.prod(teacher))

    @staticmethod
    def _pair(plan: FeaturePlan | None, pair: int) -> LayerPair:
        if plan is not None and not plan.maps and plan.embedding is not None:
            return plan.embedding
        maps = require_maps(plan, "fitnets")
        if not -len(maps) <= pair < len(maps):
            raise ValueError(f"FitNets' `pair` must index the plan's {len(maps)} map pairs, but got {pair=}.")
        return maps[pair]

    @classmethod
    def teacher_layers(cls, plan: FeaturePlan | None, **options: Any) -> list[FeatureLayer]:
        hint = cls._pair(plan, options["pair"])
        return [FeatureLayer(hint.teacher, hint.size)]

    def forward(self, step: KDStep) -> Tensor:
        student = step.features[self.student_paths[0]]
        if isinstance(self.regressor, nn.Linear):
            return hint_loss(self.regressor(student.flatten(1)), self.cached(self.target, step).flatten(1))
        return hint_loss(self.regressor(student), self.cached(self.target, step))


@register_loss("at")
class AttentionTransfer(KDMethod):
    """Zagoruyko & Komodakis ICLR 2017, "Paying More Attention to Attention": the mean over the plan's map pairs
    of ``mean_b ‖Q_s − Q_t‖²``, ``Q = normalise(mean_c |A_c|^p)``. The teacher side is cached as its
    one-channel attention map only."""

    defaults = {"p": 2.0}
    needs_plan = True

    def __init__(self, context: BuildContext, *, p: float) -> None:
        super().__init__()
        self.p = p
        self.student_paths = tuple(pair.student for pair in require_maps(context.plan, self.name))
        self.targets = [context.feature(layer, self.name) for layer in self.teacher_layers(context.plan, p=p)]

    @classmethod
    def teacher_layers(cls, plan: FeaturePlan | None, **options: Any) -> list[FeatureLayer]:
        return [FeatureLayer(pair.teacher, pair.size, attention_p=options["p"]) for pair in require_maps(plan, "at")]

    def forward(self, step: KDStep) -> Tensor:
        losses = [at_loss(step.features[path], self.cached(target, step), self.p)
                  for path, target in zip(self.student_paths, self.targets)]
        return torch.stack(losses).mean()


class _EmbeddingMethod(KDMethod):
    """A relation-based method on the plan's embedding pair (student vector, globally pooled teacher output)."""

    needs_plan = True

    def __init__(self, context: BuildContext) -> None:
        super().__init__()
        (layer,) = self.teacher_layers(context.plan)
        self.student_paths = (require_embedding(context.plan, self.name).student,)
        self.target = context.feature(layer, self.name)

    @classmethod
    def teacher_layers(cls, plan: FeaturePlan | None, **options: Any) -> list[FeatureLayer]:
        pair = require_embedding(plan, cls.name)
        return [FeatureLayer(pair.teacher, pair.size)]

    def embeddings(self, step: KDStep) -> tuple[Tensor, Tensor]:
        return step.features[self.student_paths[0]].flatten(1), self.cached(self.target, step).flatten(1)


@register_loss("rkd")
class RelationalKD(_EmbeddingMethod):
    """Park et al. CVPR 2019, "Relational Knowledge Distillation": ``distance_weight · RKD-D + angle_weight · RKD-A``
    on the embeddings (the paper's weights 25 and 50)."""

    defaults = {"distance_weight": 25.0, "angle_weight": 50.0}

    def __init__(self, context: BuildContext, *, distance_weight: float, angle_weight: float) -> None:
        super().__init__(context)
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def forward(self, step: KDStep) -> Tensor:
        return rkd_loss(*self.embeddings(step), self.distance_weight, self.angle_weight)


@register_loss("sp")
class SimilarityPreserving(_EmbeddingMethod):
    """Tung & Mori ICCV 2019, "Similarity-Preserving Knowledge Distillation": ``‖G_s − G_t‖_F² / b²`` of the
    row-normalised batch similarity matrices of the embeddings."""

    def forward(self, step: KDStep) -> Tensor:
        return sp_loss(*self.embeddings(step))


@register_loss("contrastive")
class Contrastive(_EmbeddingMethod):
    """InfoNCE (van den Oord et al. 2018) between linear projections to ``dim`` of the student and teacher
    embeddings, as CRD (Tian et al. ICLR 2020) but with in-batch negatives instead of a memory bank;
    ``temperature`` is InfoNCE's τ (0.1)."""

    defaults = {"dim": 128, "temperature": 0.1}

    def __init__(self, context: BuildContext, *, dim: int, temperature: float) -> None:
        super().__init__(context)
        self.temperature = temperature
        self.student_projection = nn.Linear(math.prod(context.student_shapes[self.student_paths[0]]), dim)
        self.teacher_projection = nn.Linear(math.prod(self.target.shape[1:]), dim)

    def forward(self, step: KDStep) -> Tensor:
        student, teacher = self.embeddings(step)
        return contrastive_loss(self.student_projection(student), self.teacher_projection(teacher), self.temperature)
