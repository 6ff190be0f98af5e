"""Online and self-distillation: peers that teach each other, exits taught by the final head, an EMA teacher.

None of these read the cached teacher: their teachers are trained (or averaged) along with the student.
They combine with teacher-based methods, e.g. ``kd+dml``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from distill.features import stage_paths
from distill.losses.functional import weighted_kd_loss
from distill.losses.registry import BuildContext, KDMethod, KDStep, register_loss


def mutual_losses(logits: Sequence[Tensor], temperature: float, weights: Tensor | None = None) -> list[Tensor]:
    """Deep mutual learning's mimicry terms: for each network k,
    ``L_k = 1/(K−1) · Σ_{j≠k} T² · KL(p_j ‖ p_k)``, with the other networks' predictions ``p_j`` detached,
    so that each term only trains its own network."""
    if len(logits) < 2:
        raise ValueError(f"Mutual learning needs at least 2 networks, but got {len(logits)}.")
    return [torch.stack([weighted_kd_loss(own, other.detach(), weights, temperature)
                         for j, other in enumerate(logits) if j != k]).mean() for k, own in enumerate(logits)]


@torch.no_grad()
def ema_update(average: nn.Module, model: nn.Module, decay: float) -> None:
    """``θ_avg ← decay · θ_avg + (1 − decay) · θ`` for every parameter. Buffers (BatchNorm statistics) are the
    average's own: it runs in train mode, so they follow its own activations, not the student's."""
    for averaged, current in zip(average.parameters(), model.parameters()):
        averaged.mul_(decay).add_(current, alpha=1.0 - decay)


@register_loss("dml")
class MutualLearning(KDMethod):
    """Zhang et al. CVPR 2018, "Deep Mutual Learning": ``peers`` copies of the student (re-initialised) train
    alongside it, each network learning from the labels and from the others' predictions.

    The term is the student's mimicry ``L_0`` plus every peer's whole loss ``CE + L_k`` (see
    :func:`mutual_losses`): the peers' parameters are trained by it and discarded after training.
    """

    defaults = {"peers": 1, "temperature": None}
    sample_weighted = True

    def __init__(self, context: BuildContext, *, peers: int, temperature: float | None) -> None:
        super().__init__()
        if peers < 1:
            raise ValueError(f"Deep mutual learning needs `peers >= 1`, but got {peers=}.")
        self.peers = nn.ModuleList(copy.deepcopy(context.student) for _ in range(peers))
        with torch.random.fork_rng():
            for index, peer in enumerate(self.peers):
                torch.manual_seed(context.seed + 1 + index)
                for module in peer.modules():
                    if hasattr(module, "reset_parameters"):
                        module.reset_parameters()
        self.temperature, self.class_weights = temperature, context.class_weights

    def forward(self, step: KDStep) -> Tensor:
        peer_logits = [peer(step.inputs) for peer in self.peers]
        mimicry = mutual_losses([step.logits, *peer_logits], self.temperature or step.temperature,
                                self.sample_weights(step, self.class_weights))
        peers = [F.cross_entropy(logits, step.targets) + loss for logits, loss in zip(peer_logits, mimicry[1:])]
        return mimicry[0] + torch.stack(peers).sum()


@register_loss("self")
class SelfDistillation(KDMethod):
    """Zhang et al. ICCV 2019, "Be Your Own Teacher": an exit (global pool + linear classifier) after every
    stage but the last learns from the labels and from the final classifier's softened predictions;
    the term is ``mean_exits (CE + T² · KL(p_final ‖ p_exit))``. Exits are discarded after training; the
    gradients they send into the shallow stages are what the student keeps. (The paper's feature hints
    between exits are left out.)"""

    defaults = {"temperature": None}
    sample_weighted = True

    def __init__(self, context: BuildContext, *, temperature: float | None) -> None:
        super().__init__()
        self.student_paths = tuple(stage_paths(context.student)[:-1])
        if not self.student_paths:
            raise ValueError("Self-distillation needs a student with at least 2 stages (exits after all but the last).")
        self.exits = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(context.student_shapes[path][0],
                                                                           context.num_classes))
            for path in self.student_paths)
        self.temperature, self.class_weights = temperature, context.class_weights

    def forward(self, step: KDStep) -> Tensor:
        final = step.logits.detach()
        weights = self.sample_weights(step, self.class_weights)
        losses = []
        for path, head in zip(self.student_paths, self.exits):
            logits = head(step.features[path])
            losses.append(F.cross_entropy(logits, step.targets)
                          + weighted_kd_loss(logits, final, weights, self.temperature or step.temperature))
        return torch.stack(losses).mean()


@register_loss("ema")
class EMATeacher(KDMethod):
    """Self-distillation from an exponential moving average of the student's own weights (the "mean teacher"
    of Tarvainen & Valpola, NeurIPS 2017): ``T² · KL(p_ema ‖ p_s)``, the EMA updated after every step with
    ``decay`` (see :func:`ema_update`). As in the paper's code, the EMA runs in train mode: its BatchNorm
    normalises with batch statistics, since running statistics of the student's weights would not fit the
    averaged ones."""

    defaults = {"decay": 0.99, "temperature": None}
    sample_weighted = True

    def __init__(self, context: BuildContext, *, decay: float, temperature: float | None) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"The EMA teacher needs `0 <= decay < 1`, but got {decay=}.")
        self.average = copy.deepcopy(context.student).requires_grad_(False)
        self.decay, self.temperature, self.class_weights = decay, temperature, context.class_weights

    def forward(self, step: KDStep) -> Tensor:
        with torch.no_grad():
            teacher = self.average(step.inputs)  # in train mode with the criterion
        return weighted_kd_loss(step.logits, teacher, self.sample_weights(step, self.class_weights),
                                self.temperature or step.temperature)

    def after_step(self, student: nn.Module) -> None:
        ema_update(self.average, student, self.decay)
