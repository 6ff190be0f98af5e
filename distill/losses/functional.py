"""Distillation losses as plain functions, like ``torch.nn.functional``.

Each function takes student and teacher tensors of one batch and returns a scalar loss. Defaults
follow the papers; weights that the papers put in front of a whole loss (e.g. AT's β or SP's γ) are
left to the caller. Inputs are checked before any work and mismatches raise ``ValueError`` naming
both shapes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# TinyBERT's code zeroes attention scores at or below this value: they are masked positions
# (BERT adds -10000 or -inf to padded keys) whose size means nothing.
_TINYBERT_MASKED_SCORE = -100.0


def _check_same_shape(student: Tensor, teacher: Tensor, student_name: str, teacher_name: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(f"`{student_name}.shape == {teacher_name}.shape` must hold, but got "
                         f"({student_name}.shape={tuple(student.shape)}, {teacher_name}.shape={tuple(teacher.shape)}).")


def _check_same_batch(student: Tensor, teacher: Tensor, student_name: str, teacher_name: str) -> None:
    if student.ndim == 0 or teacher.ndim == 0 or student.shape[0] != teacher.shape[0]:
        raise ValueError(f"`{student_name}` and `{teacher_name}` must have the same batch size (dim 0), but got "
                         f"({student_name}.shape={tuple(student.shape)}, {teacher_name}.shape={tuple(teacher.shape)}).")


def _check_ndim(tensor: Tensor, name: str, ndim: int, layout: str) -> None:
    if tensor.ndim != ndim:
        raise ValueError(f"`{name}` must be {layout}, but got {name}.shape={tuple(tensor.shape)}.")


def _check_shape(tensor: Tensor, expected: torch.Size, name: str, layout: str) -> None:
    if tensor.shape != expected:
        raise ValueError(f"`{name}` must have shape {layout} = {tuple(expected)}, but got "
                         f"{name}.shape={tuple(tensor.shape)}.")


def masked_mean(values: Tensor, mask: Tensor | None, dim: int | None = None) -> Tensor:
    """Mean of ``values`` over the entries where the broadcast ``mask`` is non-zero (0 where there are none):
    of all entries, or along ``dim`` (e.g. mean pooling of (batch, seq, hidden) states under a (batch, seq, 1) mask)."""
    if mask is None:
        return values.mean(dim=dim)
    weights = mask.to(values.dtype).expand_as(values)
    return (values * weights).sum(dim=dim) / weights.sum(dim=dim).clamp_min(1.0)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Knowledge distillation, Hinton et al. 2015, "Distilling the Knowledge in a Neural Network".

    ``T² · mean_b KL(p_t ‖ p_s)`` with ``p = softmax(logits / T)``. The T² factor keeps the gradient
    magnitude of the soft term independent of the temperature.
    """
    _check_same_shape(student_logits, teacher_logits, "student_logits", "teacher_logits")
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature**2


def kd_divergence(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Per-sample Hinton KD of (batch, classes) logits: ``T² · KL(p_t ‖ p_s)`` of each row; :func:`kd_loss` is its mean.

    Per-sample values are what sample weights (class-frequency, per-teacher confidence) multiply.
    """
    _check_ndim(student_logits, "student_logits", 2, "(batch, classes)")
    _check_same_shape(student_logits, teacher_logits, "student_logits", "teacher_logits")
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="none", log_target=True).sum(dim=1) * temperature**2


def weighted_kd_loss(student_logits: Tensor, teacher_logits: Tensor, weights: Tensor | None = None,
                     temperature: float = 4.0) -> Tensor:
    """``mean_b w_b · kd_divergence_b``: KD with per-sample weights (e.g. inverse class frequency of each
    sample's label); without weights it is :func:`kd_loss`."""
    per_sample = kd_divergence(student_logits, teacher_logits, temperature)
    if weights is None:
        return per_sample.mean()
    _check_shape(weights, per_sample.shape, "weights", "(batch,)")
    return (weights * per_sample).mean()


def hinton_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor,
                temperature: float = 4.0, alpha: float = 0.9) -> Tensor:
    """``alpha · kd_loss + (1 − alpha) · cross_entropy(student_logits, targets)``: soft and hard targets mixed."""
    _check_same_batch(student_logits, targets, "student_logits", "targets")
    soft = kd_loss(student_logits, teacher_logits, temperature)
    hard = F.cross_entropy(student_logits, targets)
    return alpha * soft + (1.0 - alpha) * hard


def dkd_parts(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor,
              temperature: float = 4.0) -> tuple[Tensor, Tensor]:
    """The two unweighted terms of DKD, ``(T² · TCKD, T² · NCKD)``; see :func:`dkd_loss`.

    TCKD = mean_b KL(b_t ‖ b_s) with ``b = [p_target, 1 − p_target]`` of ``p = softmax(logits / T)``.
    NCKD = mean_b KL(p̂_t ‖ p̂_s) with ``p̂ = softmax`` over the non-target logits only. The paper's
    code masks the target with a −1000 logit before this softmax; here the target column is dropped,
    which is the same distribution without the constant (and exact for any logit scale).
    """
    _check_ndim(student_logits, "student_logits", 2, "(batch, classes)")
    _check_same_shape(student_logits, teacher_logits, "student_logits", "teacher_logits")
    batch, classes = student_logits.shape
    _check_shape(targets, torch.Size([batch]), "targets", "(batch,)")
    is_target = F.one_hot(targets, classes).bool()

    def binary_log_probs(logits: Tensor) -> Tensor:
        log_p = F.log_softmax(logits / temperature, dim=1)
        log_p_target = log_p[is_target].view(batch, 1)
        log_p_other = torch.logsumexp(log_p[~is_target].view(batch, classes - 1), dim=1, keepdim=True)
        return torch.cat([log_p_target, log_p_other], dim=1)

    def non_target_log_probs(logits: Tensor) -> Tensor:
        return F.log_softmax(logits[~is_target].view(batch, classes - 1) / temperature, dim=1)

    tckd = F.kl_div(binary_log_probs(student_logits), binary_log_probs(teacher_logits),
                    reduction="batchmean", log_target=True)
    nckd = F.kl_div(non_target_log_probs(student_logits), non_target_log_probs(teacher_logits),
                    reduction="batchmean", log_target=True)
    return tckd * temperature**2, nckd * temperature**2


def dkd_loss(student_logits: Tensor, teacher_logits: Tensor, targets: Tensor,
             alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> Tensor:
    """Decoupled KD, Zhao et al. CVPR 2022, "Decoupled Knowledge Distillation".

    ``T² · (alpha · TCKD + beta · NCKD)``: target-class KD (binary KL of target vs non-target
    probability) and non-target-class KD (KL among the non-target classes); see :func:`dkd_parts`.
    Defaults are the paper's CIFAR-100 settings.
    """
    tckd, nckd = dkd_parts(student_logits, teacher_logits, targets, temperature)
    return alpha * tckd + beta * nckd


def _pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b``."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_loss(student_logits: Tensor, teacher_logits: Tensor, beta: float = 1.0, gamma: float = 1.0,
              temperature: float = 1.0) -> Tensor:
    """DIST, Huang et al. NeurIPS 2022, "Knowledge Distillation from A Stronger Teacher".

    With ``P = softmax(logits / T)`` of shape (batch, classes) and ρ the Pearson correlation:
    inter = 1 − mean_b ρ(P_s[b, :], P_t[b, :]) (each sample's class ranking) and
    intra = 1 − mean_c ρ(P_s[:, c], P_t[:, c]) (each class's ranking over the batch);
    loss = ``T² · (beta · inter + gamma · intra)``. ρ uses ``cov / (σ_a σ_b + 1e-8)`` as the paper's code.
    """
    _check_ndim(student_logits, "student_logits", 2, "(batch, classes)")
    _check_same_shape(student_logits, teacher_logits, "student_logits", "teacher_logits")
    if student_logits.shape[0] < 2:
        raise ValueError(f"DIST's intra-class term correlates over the batch, so `batch >= 2` must hold, but got "
                         f"student_logits.shape={tuple(student_logits.shape)}.")
    p_student = F.softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)
    inter = 1.0 - _pearson_rows(p_student, p_teacher).mean()
    intra = 1.0 - _pearson_rows(p_student.T, p_teacher.T).mean()
    return temperature**2 * (beta * inter + gamma * intra)


def _attention_map(feature: Tensor, p: float) -> Tensor:
    return F.normalize(feature.abs().pow(p).mean(dim=1).flatten(1), dim=1)


def at_loss(student_feature: Tensor, teacher_feature: Tensor, p: float = 2.0) -> Tensor:
    """Attention transfer, Zagoruyko & Komodakis ICLR 2017, "Paying More Attention to Attention".

    For a feature ``A`` of shape (batch, channels, *spatial): ``q = mean_c |A_c|^p`` flattened to
    (batch, positions), ``Q = q / ‖q‖₂`` per sample; loss = ``mean_b ‖Q_s − Q_t‖₂²`` (in [0, 2]).
    Channels may differ, spatial sizes must match. Invariant to a positive scaling of either feature.
    The paper's β/2 weight is the caller's; its code also divides by the number of positions.
    """
    _check_same_batch(student_feature, teacher_feature, "student_feature", "teacher_feature")
    if student_feature.ndim < 3 or student_feature.shape[2:] != teacher_feature.shape[2:]:
        raise ValueError(f"`student_feature` and `teacher_feature` must be (batch, channels, *spatial) with the same "
                         f"spatial size, but got (student_feature.shape={tuple(student_feature.shape)}, "
                         f"teacher_feature.shape={tuple(teacher_feature.shape)}).")
    difference = _attention_map(student_feature, p) - _attention_map(teacher_feature, p)
    return difference.pow(2).sum(dim=1).mean()


def hint_loss(projected_student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """FitNets hint, Romero et al. ICLR 2015: MSE between the (regressor-projected) student and the teacher."""
    _check_same_shape(projected_student_feature, teacher_feature, "projected_student_feature", "teacher_feature")
    return F.mse_loss(projected_student_feature, teacher_feature)


def _pairwise_distances(embedding: Tensor) -> Tensor:
    # The norm of differences (not cdist's mm form) has a zero, not NaN, gradient on the diagonal.
    return (embedding.unsqueeze(0) - embedding.unsqueeze(1)).norm(dim=2)


def _mean_normalised(distances: Tensor, eps: float = 1e-12) -> Tensor:
    mean = distances.sum() / (distances > 0).sum().clamp_min(1)
    return distances / mean.clamp_min(eps)


def rkd_distance_loss(student_emb: Tensor, teacher_emb: Tensor) -> Tensor:
    """RKD distance term, Park et al. CVPR 2019, "Relational Knowledge Distillation".

    ``ψ(i, j) = ‖e_i − e_j‖₂ / μ`` with μ the mean distance over the non-zero pairs; loss =
    smooth-L1 (β = 1) between student and teacher ψ, averaged over all batch × batch pairs.
    Embeddings are (batch, ...) flattened to (batch, dim); the dims may differ.
    """
    _check_same_batch(student_emb, teacher_emb, "student_emb", "teacher_emb")
    student = _mean_normalised(_pairwise_distances(student_emb.flatten(1)))
    teacher = _mean_normalised(_pairwise_distances(teacher_emb.flatten(1)))
    return F.smooth_l1_loss(student, teacher)


def _angle_cosines(embedding: Tensor) -> Tensor:
    """``[i, j, k] = cos ∠(e_j, e_i, e_k)``, the angle at vertex ``e_i``; 0 where ``j`` or ``k`` is ``i``."""
    directions = F.normalize(embedding.unsqueeze(0) - embedding.unsqueeze(1), dim=2)
    return directions @ directions.transpose(1, 2)


def rkd_angle_loss(student_emb: Tensor, teacher_emb: Tensor) -> Tensor:
    """RKD angle term, Park et al. CVPR 2019: smooth-L1 (β = 1) between the cosines of the angles
    of every triplet of embeddings (averaged over all batch³ ordered triplets, as the paper's code)."""
    _check_same_batch(student_emb, teacher_emb, "student_emb", "teacher_emb")
    return F.smooth_l1_loss(_angle_cosines(student_emb.flatten(1)), _angle_cosines(teacher_emb.flatten(1)))


def rkd_loss(student_emb: Tensor, teacher_emb: Tensor, distance_weight: float = 25.0,
             angle_weight: float = 50.0) -> Tensor:
    """Relational KD, Park et al. CVPR 2019: ``distance_weight · rkd_distance_loss + angle_weight · rkd_angle_loss``.

    Defaults are the paper's classification weights. Invariant to rotation, translation and positive
    scaling of either embedding.
    """
    return (distance_weight * rkd_distance_loss(student_emb, teacher_emb)
            + angle_weight * rkd_angle_loss(student_emb, teacher_emb))


def _similarity(feature: Tensor) -> Tensor:
    flat = feature.flatten(1)
    return F.normalize(flat @ flat.T, dim=1)


def sp_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """Similarity-preserving KD, Tung & Mori ICCV 2019, "Similarity-Preserving Knowledge Distillation".

    ``G = row-L2-normalise(F Fᵀ)`` of the (batch, ...) features flattened to (batch, dim);
    loss = ``‖G_s − G_t‖_F² / batch²``. The paper's γ weight is the caller's.
    """
    _check_same_batch(student_feature, teacher_feature, "student_feature", "teacher_feature")
    batch = student_feature.shape[0]
    return (_similarity(student_feature) - _similarity(teacher_feature)).pow(2).sum() / batch**2


def contrastive_loss(student_emb: Tensor, teacher_emb: Tensor, temperature: float = 0.1) -> Tensor:
    """InfoNCE (van den Oord et al. 2018) from student to teacher embeddings of the same batch.

    With ``z = e / ‖e‖₂`` per row: ``logits[i, j] = z_s[i] · z_t[j] / T``; loss =
    ``cross_entropy(logits, targets=arange(batch))``, the positives on the diagonal, mean over rows.
    """
    _check_ndim(student_emb, "student_emb", 2, "(batch, dim)")
    _check_same_shape(student_emb, teacher_emb, "student_emb", "teacher_emb")
    logits = F.normalize(student_emb, dim=1) @ F.normalize(teacher_emb, dim=1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def similarity_kl_loss(student_emb: Tensor, teacher_emb: Tensor, temperature: float = 0.05) -> Tensor:
    """Relational distillation of embeddings over the batch (as SEED, Fang et al. ICLR 2021, against the batch
    instead of a queue): each row's cosine similarities to the other rows, divided by ``temperature`` and
    soft-maxed, are a distribution over its neighbours; loss = ``KL(P_t ‖ P_s)``, mean over rows. Teaches the
    teacher's neighbourhoods rather than its coordinates; the widths may differ; a batch of one gives 0."""
    _check_ndim(student_emb, "student_emb", 2, "(batch, dim)")
    _check_same_batch(student_emb, teacher_emb, "student_emb", "teacher_emb")
    batch = student_emb.shape[0]
    if batch < 2:
        return student_emb.sum() * 0.0
    others = ~torch.eye(batch, dtype=torch.bool, device=student_emb.device)

    def log_neighbours(embedding: Tensor) -> Tensor:
        unit = F.normalize(embedding, dim=1)
        return F.log_softmax((unit @ unit.T / temperature)[others].view(batch, batch - 1), dim=1)

    return F.kl_div(log_neighbours(student_emb), log_neighbours(teacher_emb), reduction="batchmean", log_target=True)


def cosine_embedding_loss(student_hidden: Tensor, teacher_hidden: Tensor, mask: Tensor | None = None) -> Tensor:
    """DistilBERT's cosine loss, Sanh et al. 2019: mean of ``1 − cos(h_s, h_t)`` over the vectors along
    the last dim, any leading dims. ``mask`` (the leading shape, e.g. (batch, seq)) keeps the non-zero
    positions only; an all-zero mask gives 0."""
    _check_same_shape(student_hidden, teacher_hidden, "student_hidden", "teacher_hidden")
    if mask is not None:
        _check_shape(mask, student_hidden.shape[:-1], "mask", "student_hidden.shape[:-1]")
    return masked_mean(1.0 - F.cosine_similarity(student_hidden, teacher_hidden, dim=-1), mask)


def attention_mse_loss(student_attention: Tensor, teacher_attention: Tensor, mask: Tensor | None = None) -> Tensor:
    """TinyBERT attention loss, Jiao et al. 2020: MSE between attention score matrices (batch, heads, seq, seq).

    As in TinyBERT's code, scores ``<= -100`` (BERT's additive -10000 or -inf mask of padded keys) are
    treated as 0 in both tensors. ``mask`` (batch, seq) marks valid tokens: then only the entries whose
    query and key are both valid are averaged; an all-zero mask gives 0.
    """
    _check_ndim(student_attention, "student_attention", 4, "(batch, heads, seq, seq)")
    _check_ndim(teacher_attention, "teacher_attention", 4, "(batch, heads, seq, seq)")
    if student_attention.shape[1] != teacher_attention.shape[1]:
        raise ValueError(f"student and teacher must have the same number of heads (dim 1), but got "
                         f"(student_attention.shape={tuple(student_attention.shape)}, "
                         f"teacher_attention.shape={tuple(teacher_attention.shape)}).")
    _check_same_shape(student_attention, teacher_attention, "student_attention", "teacher_attention")
    pair_mask = None
    if mask is not None:
        batch, _, seq, _ = student_attention.shape
        _check_shape(mask, torch.Size([batch, seq]), "mask", "(batch, seq)")
        valid = mask.bool()
        pair_mask = (valid.unsqueeze(2) & valid.unsqueeze(1)).unsqueeze(1)

    def unmasked(scores: Tensor) -> Tensor:
        return torch.where(scores <= _TINYBERT_MASKED_SCORE, torch.zeros_like(scores), scores)

    return masked_mean((unmasked(student_attention) - unmasked(teacher_attention)).pow(2), pair_mask)


def hidden_mse_loss(projected_student_hidden: Tensor, teacher_hidden: Tensor, mask: Tensor | None = None) -> Tensor:
    """TinyBERT hidden-state loss, Jiao et al. 2020: MSE between ``h_s W`` (the caller's learned projection)
    and ``h_t``. ``mask`` (the leading shape, e.g. (batch, seq)) keeps the non-zero positions only."""
    _check_same_shape(projected_student_hidden, teacher_hidden, "projected_student_hidden", "teacher_hidden")
    if mask is not None:
        _check_shape(mask, teacher_hidden.shape[:-1], "mask", "teacher_hidden.shape[:-1]")
    return masked_mean((projected_student_hidden - teacher_hidden).pow(2).mean(dim=-1), mask)


def attention_kl_loss(student_attention: Tensor, teacher_attention: Tensor, mask: Tensor | None = None,
                      eps: float = 1e-8) -> Tensor:
    """MiniLM's attention-distribution loss, Wang et al. 2020: ``KL(A_t ‖ A_s)`` of each query's attention
    probabilities over the keys (last dim) of (batch, heads, seq, seq) tensors, averaged over batch, heads
    and queries. ``mask`` (batch, seq) keeps the valid queries only; an all-zero mask gives 0. Probabilities
    are clamped at ``eps`` inside the logarithms, so masked keys (probability 0 in both) add nothing."""
    _check_ndim(student_attention, "student_attention", 4, "(batch, heads, seq, seq)")
    _check_same_shape(student_attention, teacher_attention, "student_attention", "teacher_attention")
    query_mask = None
    if mask is not None:
        batch, _, seq, _ = student_attention.shape
        _check_shape(mask, torch.Size([batch, seq]), "mask", "(batch, seq)")
        query_mask = mask[:, None, :]
    kl = (teacher_attention * (teacher_attention.clamp_min(eps).log() - student_attention.clamp_min(eps).log()))
    return masked_mean(kl.sum(dim=-1), query_mask)
