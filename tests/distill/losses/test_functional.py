from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill.losses.functional import (at_loss, attention_kl_loss, attention_mse_loss, contrastive_loss,
                                       cosine_embedding_loss, dist_loss, dkd_loss, dkd_parts, hidden_mse_loss,
                                       hinton_loss, hint_loss, kd_divergence, kd_loss, masked_mean, rkd_angle_loss,
                                       rkd_distance_loss, rkd_loss, similarity_kl_loss, sp_loss,
                                       weighted_kd_loss)


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# KD (Hinton et al. 2015)

def test_kd_is_zero_for_equal_logits() -> None:
    logits = _randn(8, 5)
    assert kd_loss(logits, logits.clone(), temperature=3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_gradient_is_t_times_softened_difference_over_batch() -> None:
    student, teacher = _randn(3, 4, seed=1).requires_grad_(), _randn(3, 4, seed=2)
    for temperature in (1.0, 4.0):
        (grad,) = torch.autograd.grad(kd_loss(student, teacher, temperature), student)
        expected = temperature * (F.softmax(student / temperature, -1) - F.softmax(teacher / temperature, -1)) / 3
        torch.testing.assert_close(grad, expected.detach())


def test_kd_matches_the_closed_form_on_two_classes() -> None:
    # p_t = softmax([2, 0] / 2) = sigmoid(1); p_s = softmax([0, 0]) = 1/2; KL * T² with T = 2.
    p = 1 / (1 + math.exp(-1))
    expected = (p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)) * 4
    value = kd_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]]), temperature=2.0)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_kd_is_a_batch_mean() -> None:
    s, t = _randn(4, 6, seed=1), _randn(4, 6, seed=2)
    per_sample = [kd_loss(s[i:i + 1], t[i:i + 1], 2.0) for i in range(4)]
    assert kd_loss(s, t, 2.0).item() == pytest.approx(torch.stack(per_sample).mean().item(), rel=1e-5)


def test_kd_divergence_is_per_sample_and_weighted_kd_its_weighted_mean() -> None:
    s, t = _randn(4, 6, seed=1), _randn(4, 6, seed=2)
    per_sample = kd_divergence(s, t, 2.0)
    expected = torch.stack([kd_loss(s[i:i + 1], t[i:i + 1], 2.0) for i in range(4)])
    torch.testing.assert_close(per_sample, expected)
    weights = torch.tensor([0.0, 1.0, 2.0, 3.0])
    assert weighted_kd_loss(s, t, weights, 2.0).item() == pytest.approx((weights * expected).mean().item(), rel=1e-6)
    assert weighted_kd_loss(s, t, None, 2.0).item() == pytest.approx(kd_loss(s, t, 2.0).item(), rel=1e-6)
    with pytest.raises(ValueError, match=r"`weights` must have shape \(batch,\) = \(4,\), but got weights.shape=\(3,\)"):
        weighted_kd_loss(s, t, weights[:3])


def test_hinton_loss_mixes_soft_and_hard_terms_by_alpha() -> None:
    s, t, y = _randn(5, 3, seed=3), _randn(5, 3, seed=4), torch.tensor([0, 1, 2, 1, 0])
    soft, hard = kd_loss(s, t, 4.0), F.cross_entropy(s, y)
    assert hinton_loss(s, t, y, 4.0, alpha=0.7).item() == pytest.approx((0.7 * soft + 0.3 * hard).item(), rel=1e-6)
    assert hinton_loss(s, t, y, 4.0, alpha=0.0).item() == pytest.approx(hard.item(), rel=1e-6)


def test_kd_rejects_mismatched_logits() -> None:
    with pytest.raises(ValueError, match=r"student_logits.shape=\(2, 3\), teacher_logits.shape=\(2, 4\)"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4))


# DKD (Zhao et al. 2022)

def test_dkd_is_alpha_tckd_plus_beta_nckd() -> None:
    student, teacher, targets = _randn(6, 5, seed=1), _randn(6, 5, seed=2), torch.tensor([0, 4, 2, 2, 1, 3])
    tckd, nckd = dkd_parts(student, teacher, targets, temperature=2.0)
    for alpha, beta in ((1.0, 8.0), (0.5, 0.0), (0.0, 2.0)):
        value = dkd_loss(student, teacher, targets, alpha=alpha, beta=beta, temperature=2.0)
        assert value.item() == pytest.approx((alpha * tckd + beta * nckd).item(), rel=1e-6)
    assert dkd_loss(student, teacher, targets).item() == pytest.approx(
        sum(w * part for w, part in zip((1.0, 8.0), dkd_parts(student, teacher, targets, 4.0))).item(), rel=1e-6)


def test_tckd_is_the_binary_kl_of_target_vs_rest() -> None:
    # T = 2: p_t = softmax([2 ln 2, 0, 0] / 2) = [1/2, 1/4, 1/4] -> b_t = [1/2, 1/2]; p_s uniform -> b_s = [1/3, 2/3].
    # The non-target parts are both uniform, so NCKD = 0.
    student, teacher = torch.zeros(1, 3), torch.tensor([[2 * math.log(2.0), 0.0, 0.0]])
    tckd, nckd = dkd_parts(student, teacher, torch.tensor([0]), temperature=2.0)
    expected = (0.5 * math.log(0.5 / (1 / 3)) + 0.5 * math.log(0.5 / (2 / 3))) * 4
    assert tckd.item() == pytest.approx(expected, rel=1e-5)
    assert nckd.item() == pytest.approx(0.0, abs=1e-6)


def test_nckd_is_the_kl_among_non_target_classes_whatever_the_target_logit() -> None:
    # Target 0; non-target teacher softmax([ln 3, 0]) = [3/4, 1/4], student [1/2, 1/2]; T = 1.
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    teacher = torch.tensor([[0.0, math.log(3.0), 0.0]])
    for target_logit in (0.0, 7.0, -30.0):
        _, nckd = dkd_parts(torch.tensor([[target_logit, 0.0, 0.0]]), teacher, torch.tensor([0]), temperature=1.0)
        assert nckd.item() == pytest.approx(expected, rel=1e-5)


def test_dkd_rejects_targets_of_another_batch() -> None:
    with pytest.raises(ValueError, match=r"`targets` must have shape \(batch,\) = \(2,\), but got "
                                         r"targets.shape=\(3,\)"):
        dkd_loss(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 1, 2]))


# DIST (Huang et al. 2022)

def test_dist_is_zero_when_student_equals_teacher() -> None:
    logits = _randn(4, 5)  # not exactly 0: ρ divides by σ_a σ_b + 1e-8, as the paper's code
    assert dist_loss(logits, logits.clone(), temperature=2.0).item() == pytest.approx(0.0, abs=1e-5)


def test_dist_matches_a_hand_computed_2x3_example() -> None:
    # Logits T·ln(p) give softmax(logits / T) = p.
    # Rows: ρ([.5,.25,.25], [.25,.5,.25]) = -1/2 and ρ(row, row) = 1 -> inter = 1 - 1/4 = 3/4.
    # Columns of two samples correlate ±1 by the sign of their differences: +1, -1, +1 -> intra = 2/3.
    p_student = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]])
    p_teacher = torch.tensor([[0.25, 0.5, 0.25], [0.2, 0.3, 0.5]])
    for temperature in (1.0, 2.0):
        student, teacher = temperature * p_student.log(), temperature * p_teacher.log()
        assert dist_loss(student, teacher, temperature=temperature).item() == pytest.approx(
            temperature**2 * (0.75 + 2 / 3), rel=1e-5)
    assert dist_loss(p_student.log(), p_teacher.log(), beta=2.0, gamma=0.5).item() == pytest.approx(
        2.0 * 0.75 + 0.5 * 2 / 3, rel=1e-5)


def test_dist_needs_two_samples() -> None:
    with pytest.raises(ValueError, match=r"`batch >= 2` must hold, but got student_logits.shape=\(1, 3\)"):
        dist_loss(torch.zeros(1, 3), torch.zeros(1, 3))


# AT (Zagoruyko & Komodakis 2017)

def test_at_matches_a_hand_example() -> None:
    # Student: channel-mean of squares [(9+1)/2, 0] -> [1, 0]; teacher [1, 1] -> [1, 1]/√2.
    # ‖[1 - 1/√2, -1/√2]‖² = 2 - √2.
    student = torch.tensor([[[[3.0, 0.0]], [[-1.0, 0.0]]]])
    teacher = torch.tensor([[[[1.0, -1.0]]]])
    assert at_loss(student, teacher).item() == pytest.approx(2 - math.sqrt(2), rel=1e-6)


def test_at_is_invariant_to_positive_scaling_and_zero_for_proportional_features() -> None:
    student, teacher = _randn(3, 4, 5, 5, seed=1), _randn(3, 8, 5, 5, seed=2)
    for p in (1.0, 2.0):
        value = at_loss(student, teacher, p=p)
        assert at_loss(7.0 * student, 0.01 * teacher, p=p).item() == pytest.approx(value.item(), rel=1e-5)
    assert at_loss(student, -3.0 * student).item() == pytest.approx(0.0, abs=1e-6)


def test_at_rejects_other_spatial_sizes() -> None:
    with pytest.raises(ValueError, match=r"student_feature.shape=\(2, 3, 4, 4\), teacher_feature.shape=\(2, 3, 8, 8\)"):
        at_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 8, 8))


# FitNets (Romero et al. 2015)

def test_hint_is_mse() -> None:
    student, teacher = _randn(2, 3, 4, 4, seed=1), _randn(2, 3, 4, 4, seed=2)
    assert hint_loss(student, teacher).item() == pytest.approx(F.mse_loss(student, teacher).item(), rel=1e-6)
    with pytest.raises(ValueError, match=r"projected_student_feature.shape=\(2, 3\), teacher_feature.shape=\(2, 4\)"):
        hint_loss(torch.zeros(2, 3), torch.zeros(2, 4))


# RKD (Park et al. 2019)

_RIGHT_TRIANGLE = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
_EQUILATERAL = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]])


def test_rkd_distance_matches_a_hand_example() -> None:
    # Sides 3, 4, 5 over their mean 4 -> .75, 1, 1.25 vs 1, 1, 1: four off-diagonal entries differ by .25,
    # smooth-L1 = .5 · .25² each, averaged over the 3 x 3 matrix: 4 · .03125 / 9 = 1/72.
    assert rkd_distance_loss(_RIGHT_TRIANGLE, _EQUILATERAL).item() == pytest.approx(1 / 72, rel=1e-5)


def test_rkd_angle_matches_a_hand_example() -> None:
    # Right isosceles triangle: cosines 0, √2/2, √2/2 at the vertices vs 1/2 everywhere; each vertex has two
    # ordered (j, k) pairs; smooth-L1 .5 x², averaged over all 3³ triplets.
    student = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    expected = (2 * 0.5 * 0.5**2 + 4 * 0.5 * (math.sqrt(2) / 2 - 0.5) ** 2) / 27
    assert rkd_angle_loss(student, _EQUILATERAL).item() == pytest.approx(expected, rel=1e-5)


def test_rkd_is_weighted_sum_and_zero_for_identical_embeddings() -> None:
    student, teacher = _randn(6, 4, seed=1), _randn(6, 3, seed=2)
    expected = 2.0 * rkd_distance_loss(student, teacher) + 3.0 * rkd_angle_loss(student, teacher)
    assert rkd_loss(student, teacher, 2.0, 3.0).item() == pytest.approx(expected.item(), rel=1e-6)
    assert rkd_loss(student, student.clone()).item() == pytest.approx(0.0, abs=1e-5)


def test_rkd_is_invariant_to_a_common_rotation_scaling_and_translation() -> None:
    student, teacher = _randn(6, 4, seed=1), _randn(6, 4, seed=2)
    rotation, _ = torch.linalg.qr(_randn(4, 4, seed=3))
    value = rkd_loss(student, teacher)
    moved = rkd_loss(2.5 * student @ rotation + 1.0, 0.2 * teacher @ rotation)
    assert moved.item() == pytest.approx(value.item(), rel=1e-4)


def test_rkd_gradient_is_finite_for_repeated_points() -> None:
    student = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]], requires_grad=True)
    (grad,) = torch.autograd.grad(rkd_loss(student, _EQUILATERAL), student)
    assert torch.isfinite(grad).all()


def test_rkd_rejects_batches_of_different_sizes() -> None:
    with pytest.raises(ValueError, match=r"student_emb.shape=\(3, 2\), teacher_emb.shape=\(4, 2\)"):
        rkd_loss(torch.zeros(3, 2), torch.zeros(4, 2))


# SP (Tung & Mori 2019)

def test_sp_matches_a_hand_example() -> None:
    # G_s = I; G_t = all ones -> rows [1, 1]/√2; each row differs by 2 - √2 squared; / b² = 4.
    student, teacher = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert sp_loss(student, teacher).item() == pytest.approx((2 - math.sqrt(2)) / 2, rel=1e-6)


def test_sp_is_invariant_to_scaling_and_zero_for_equal_features() -> None:
    student, teacher = _randn(4, 3, 5, 5, seed=1), _randn(4, 6, 2, 2, seed=2)
    value = sp_loss(student, teacher)
    assert sp_loss(4.0 * student, 0.5 * teacher).item() == pytest.approx(value.item(), rel=1e-5)
    assert sp_loss(student, 3.0 * student).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="same batch size"):
        sp_loss(torch.zeros(4, 3), torch.zeros(5, 3))


# Contrastive (InfoNCE)

def test_contrastive_matches_a_hand_2x2_example() -> None:
    # z_s = I, z_t = [[1, 1]/√2, [0, 1]], T = 1/2: logits [[√2, 0], [√2, 2]], positives on the diagonal.
    student, teacher = torch.eye(2), torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    r = math.sqrt(2)
    expected = ((math.log(math.exp(r) + 1) - r) + (math.log(math.exp(r) + math.exp(2)) - 2)) / 2
    assert contrastive_loss(student, teacher, temperature=0.5).item() == pytest.approx(expected, rel=1e-6)
    assert contrastive_loss(student, student, temperature=1.0).item() == pytest.approx(
        math.log(1 + math.exp(-1)), rel=1e-6)


def test_contrastive_prefers_matching_pairs() -> None:
    embeddings = 5.0 * torch.eye(6, 8)
    shuffled = embeddings[torch.tensor([1, 2, 3, 4, 5, 0])]
    assert contrastive_loss(embeddings, embeddings).item() < 1e-3
    assert contrastive_loss(embeddings, shuffled).item() > 5.0
    with pytest.raises(ValueError, match=r"student_emb.shape=\(6, 8\), teacher_emb.shape=\(6, 4\)"):
        contrastive_loss(embeddings, torch.zeros(6, 4))


# DistilBERT cosine

def test_cosine_is_zero_for_parallel_and_one_for_orthogonal_vectors() -> None:
    hidden = _randn(2, 3, 4)
    assert cosine_embedding_loss(hidden, 2.0 * hidden).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_embedding_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])).item() == pytest.approx(1.0)


def test_cosine_averages_only_masked_positions() -> None:
    # Position 0 parallel (loss 0), position 1 opposite (loss 2): mean 1, masked mean over position 0 only = 0.
    student, teacher = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]]), torch.tensor([[[2.0, 0.0], [-1.0, 0.0]]])
    assert cosine_embedding_loss(student, teacher).item() == pytest.approx(1.0)
    assert cosine_embedding_loss(student, teacher, mask=torch.tensor([[1, 0]])).item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match=r"`mask` must have shape .* = \(1, 2\), but got mask.shape=\(2,\)"):
        cosine_embedding_loss(student, teacher, mask=torch.tensor([1, 0]))


def test_similarity_kl_teaches_neighbourhoods_not_coordinates() -> None:
    teacher = _randn(16, 8)
    rotation, _ = torch.linalg.qr(_randn(8, 8, seed=1))
    # A rotated, rescaled and wider copy has the same neighbourhoods: loss 0 (its cosine loss would not be).
    wider = torch.cat([3.0 * teacher @ rotation, torch.zeros(16, 4)], dim=1)
    assert similarity_kl_loss(wider, teacher).item() == pytest.approx(0.0, abs=1e-5)
    # Rows swapped: each text's neighbours are now others' neighbours.
    shuffled = teacher[torch.randperm(16, generator=torch.Generator().manual_seed(2))]
    assert similarity_kl_loss(shuffled, teacher).item() > 0.5
    # A sharper temperature weighs the nearest neighbours more: a larger divergence for the same mismatch.
    assert similarity_kl_loss(shuffled, teacher, temperature=0.02) > similarity_kl_loss(shuffled, teacher, 0.5)
    assert similarity_kl_loss(teacher[:1], teacher[:1]).item() == 0.0  # no neighbours in a batch of one
    student = shuffled.clone().requires_grad_()
    similarity_kl_loss(student, teacher).backward()
    assert student.grad is not None and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="student_emb"):
        similarity_kl_loss(teacher[:4], teacher)


# TinyBERT attention and hidden states

def test_attention_mse_treats_masked_scores_as_zero() -> None:
    # Key 1 is padded: BERT adds -10000 (student) or -inf (teacher) there; both count as 0.
    student = torch.tensor([[[[1.0, -10000.0], [3.0, -10000.0]]]])
    teacher = torch.tensor([[[[0.0, -math.inf], [1.0, -math.inf]]]])
    value = attention_mse_loss(student, teacher)
    assert value.item() == pytest.approx((1.0 + 0.0 + 4.0 + 0.0) / 4)
    assert attention_mse_loss(student, teacher.clone().fill_(0.5)).item() == pytest.approx(
        (0.25 + 0.25 + 6.25 + 0.25) / 4)


def test_attention_mse_with_a_token_mask_averages_valid_query_key_pairs() -> None:
    student, teacher = _randn(2, 3, 4, 4, seed=1), _randn(2, 3, 4, 4, seed=2)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    squared = (student - teacher).pow(2)
    expected = torch.cat([squared[0, :, :3, :3].flatten(), squared[1, :, :2, :2].flatten()]).mean()
    assert attention_mse_loss(student, teacher, mask=mask).item() == pytest.approx(expected.item(), rel=1e-6)
    assert attention_mse_loss(student, teacher).item() == pytest.approx(F.mse_loss(student, teacher).item(), rel=1e-6)


def test_attention_mse_rejects_other_head_counts() -> None:
    with pytest.raises(ValueError, match=r"number of heads .*student_attention.shape=\(1, 2, 3, 3\), "
                                         r"teacher_attention.shape=\(1, 4, 3, 3\)"):
        attention_mse_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 4, 3, 3))


def test_hidden_mse_is_mse_and_respects_the_mask() -> None:
    student, teacher = _randn(2, 3, 4, seed=1), _randn(2, 3, 4, seed=2)
    assert hidden_mse_loss(student, teacher).item() == pytest.approx(F.mse_loss(student, teacher).item(), rel=1e-6)
    mask = torch.tensor([[1, 0, 1], [0, 0, 1]]).bool()
    expected = F.mse_loss(student[mask], teacher[mask])
    assert hidden_mse_loss(student, teacher, mask=mask).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match=r"projected_student_hidden.shape=\(2, 3, 4\), "
                                         r"teacher_hidden.shape=\(2, 3, 5\)"):
        hidden_mse_loss(student, torch.zeros(2, 3, 5))


# MiniLM attention KL

def test_attention_kl_loss_values() -> None:
    p = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])
    q = torch.tensor([[[[0.25, 0.75], [1.0, 0.0]]]])
    assert attention_kl_loss(p, p).item() == 0.0
    kl_row = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert attention_kl_loss(q, p).item() == pytest.approx(kl_row / 2, rel=1e-5)  # row 2 adds 0
    assert attention_kl_loss(q, p, mask=torch.tensor([[1, 0]])).item() == pytest.approx(kl_row, rel=1e-5)
    assert attention_kl_loss(q, p, mask=torch.tensor([[0, 0]])).item() == 0.0
    with pytest.raises(ValueError, match="must have shape"):
        attention_kl_loss(q, p, mask=torch.ones(1, 3))


# Masked mean (the pooling of sentence embeddings and the masked text losses)

def test_masked_mean_over_everything_and_along_a_dim() -> None:
    values = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]], [[5.0, 6.0], [7.0, 8.0], [9.0, 9.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # Along the sequence: row 0 averages its first two tokens, row 1 keeps its first.
    pooled = masked_mean(values, mask[:, :, None], dim=1)
    torch.testing.assert_close(pooled, torch.tensor([[2.0, 3.0], [5.0, 6.0]]))
    # Over everything: the 6 kept entries 1, 2, 3, 4, 5, 6.
    assert masked_mean(values, mask[:, :, None]).item() == pytest.approx(3.5)
    assert masked_mean(values, None).item() == pytest.approx(values.mean().item())
    assert masked_mean(values, torch.zeros(2, 3, 1)).item() == 0.0  # nothing kept: 0, not NaN
