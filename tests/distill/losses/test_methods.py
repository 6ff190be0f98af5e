"""Each method wrapper against values computed by hand or in closed form, on fixed inputs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn

from distill import FeatureLayer, FeaturePlan, KDTerm, LayerPair
from distill.losses.functional import dist_loss, dkd_loss, kd_loss
from distill.losses.registry import BuildContext, KDMethod, KDStep


def _context(*, plan: FeaturePlan | None = None, features: Mapping[FeatureLayer, np.ndarray] | None = None,
             teachers: Sequence[np.ndarray] = (), shapes: Mapping[str, tuple[int, ...]] | None = None,
             class_weights: torch.Tensor | None = None) -> BuildContext:
    return BuildContext(student=nn.Identity(), student_shapes=shapes or {}, num_classes=2, plan=plan,
                        teacher_features=features or {}, teacher_logits=list(teachers), class_weights=class_weights,
                        seed=0)


def _make(name: str, context: BuildContext, **options: Any) -> KDMethod:
    term = KDTerm(name, options=options)
    return term.method(context, **term.resolved)


def _step(logits: torch.Tensor, targets: list[int], *, teacher: torch.Tensor | None = None,
          features: Mapping[str, torch.Tensor] | None = None, indices: list[int] | None = None,
          temperature: float = 2.0) -> KDStep:
    return KDStep(indices=np.array(indices if indices is not None else range(len(logits))), inputs=torch.zeros(0),
                  targets=torch.tensor(targets), logits=logits, features=features or {}, teacher_logits=teacher,
                  temperature=temperature)


# KL(p_t ‖ p_s) · T² for p_t = softmax([2, 0] / 2) = [σ(1), 1 − σ(1)] and p_s uniform, T = 2.
_P = 1 / (1 + math.exp(-1))
_KD_2_0 = (_P * math.log(_P / 0.5) + (1 - _P) * math.log((1 - _P) / 0.5)) * 4


def test_kd_weighs_each_sample_by_its_class_weight() -> None:
    student, teacher = torch.tensor([[0.0, 0.0], [1.0, 3.0]]), torch.tensor([[2.0, 0.0], [1.0, 3.0]])
    step = _step(student, [1, 0], teacher=teacher)  # sample 1 matches its teacher: KL 0
    assert _make("kd", _context())(step).item() == pytest.approx(_KD_2_0 / 2, rel=1e-6)
    weighted = _make("kd", _context(class_weights=torch.tensor([0.5, 3.0])))
    assert weighted(step).item() == pytest.approx(3.0 * _KD_2_0 / 2, rel=1e-6)  # sample 0 is class 1: weight 3


def test_temperature_option_overrides_the_schedule() -> None:
    student, teacher = torch.randn(4, 3), torch.randn(4, 3)
    step = _step(student, [0, 1, 2, 0], teacher=teacher, temperature=2.0)
    assert _make("kd", _context())(step).item() == pytest.approx(kd_loss(student, teacher, 2.0).item(), rel=1e-6)
    assert _make("kd", _context(), temperature=5.0)(step).item() == pytest.approx(
        kd_loss(student, teacher, 5.0).item(), rel=1e-6)


def test_dkd_and_dist_pass_their_options_on() -> None:
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    targets = [0, 4, 2, 2, 1, 3]
    step = _step(student, targets, teacher=teacher, temperature=3.0)
    assert _make("dkd", _context(), beta=2.0)(step).item() == pytest.approx(
        dkd_loss(student, teacher, torch.tensor(targets), 1.0, 2.0, 3.0).item(), rel=1e-6)
    assert _make("dist", _context(), gamma=0.5, temperature=1.0)(step).item() == pytest.approx(
        dist_loss(student, teacher, 1.0, 0.5, 1.0).item(), rel=1e-6)


def test_methods_without_a_teacher_say_so() -> None:
    with pytest.raises(ValueError, match="Method 'kd' needs teacher logits, but this run has no teacher"):
        _make("kd", _context())(_step(torch.zeros(2, 2), [0, 1]))


def test_multi_teacher_fixed_weights() -> None:
    # Teacher 0 = [2, 0] (KL · T² = _KD_2_0 from a uniform student), teacher 1 uniform (KL 0), T = 2.
    teachers = [np.array([[2.0, 0.0]], np.float32), np.array([[0.0, 0.0]], np.float32)]
    step = _step(torch.zeros(1, 2), [0])
    method = _make("mkd", _context(teachers=teachers), weights=[0.25, 0.75])
    assert method(step).item() == pytest.approx(0.25 * _KD_2_0, rel=1e-5)
    assert _make("mkd", _context(teachers=teachers))(step).item() == pytest.approx(0.5 * _KD_2_0, rel=1e-5)
    with pytest.raises(ValueError, match=r"one weight >= 0 per teacher \(2\), but got weights=\[1.0\]"):
        _make("mkd", _context(teachers=teachers), weights=[1.0])


def test_multi_teacher_confidence_weights() -> None:
    # Label 0: teacher 0 gives it 1/2 (CE ln 2), teacher 1 gives 1/4 (CE ln 4) → weights 2/3, 1/3.
    # The student is uniform: KL to teacher 0 (uniform) is 0, to teacher 1 it is .25 ln .5 + .75 ln 1.5; T = 1.
    teachers = [np.log(np.array([[0.5, 0.5]], np.float32)), np.log(np.array([[0.25, 0.75]], np.float32))]
    method = _make("mkd", _context(teachers=teachers), confidence=True)
    expected = (0.25 * math.log(0.5) + 0.75 * math.log(1.5)) / 3
    assert method(_step(torch.zeros(1, 2), [0], temperature=1.0)).item() == pytest.approx(expected, rel=1e-5)


def _map_plan(*pairs: tuple[str, str, tuple[int, int]]) -> FeaturePlan:
    return FeaturePlan(maps=tuple(LayerPair(*pair) for pair in pairs))


def test_fitnets_regresses_the_student_map_onto_the_cached_teacher_rows() -> None:
    plan = _map_plan(("s", "t", (1, 2)))
    teacher = np.arange(16, dtype=np.float16).reshape(4, 2, 1, 2)  # 4 samples, 2 channels, 1x2 maps
    method = _make("fitnets", _context(plan=plan, features={FeatureLayer("t", (1, 2)): teacher}, shapes={"s": (3, 1, 2)}))
    assert isinstance(method.regressor, nn.Conv2d) and method.regressor.weight.shape == (2, 3, 1, 1)
    with torch.no_grad():
        method.regressor.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).view(2, 3, 1, 1))
    student = torch.zeros(2, 3, 1, 2)
    student[1, 2] = 5.0  # the third channel is dropped by the regressor
    # Rows 2 and 0 of the cache: values 8..11 and 0..3, against zeros: mean of squares.
    value = method(_step(torch.zeros(2, 2), [0, 1], features={"s": student}, indices=[2, 0]))
    assert value.item() == pytest.approx(np.mean(np.r_[8:12, 0:4] ** 2.0))


def test_fitnets_uses_a_linear_regressor_on_embeddings_and_checks_sizes() -> None:
    plan = FeaturePlan(embedding=LayerPair("head", "fc"))
    method = _make("fitnets", _context(plan=plan, features={FeatureLayer("fc"): np.ones((3, 4), np.float16)},
                                       shapes={"head": (2,)}))
    assert isinstance(method.regressor, nn.Linear) and method.regressor.weight.shape == (4, 2)
    with pytest.raises(ValueError, match=r"spatial sizes must match"):
        _make("fitnets", _context(plan=_map_plan(("s", "t", (2, 2))),
                                  features={FeatureLayer("t", (2, 2)): np.zeros((1, 2, 1, 1), np.float16)},
                                  shapes={"s": (3, 2, 2)}))


def test_attention_transfer_averages_the_pairs() -> None:
    # Pair a: the hand example of the functional tests, 2 − √2. Pair b: proportional maps, 0. Mean: (2 − √2) / 2.
    plan = _map_plan(("sa", "ta", (1, 2)), ("sb", "tb", (1, 1)))
    teacher_a, teacher_b = torch.tensor([[[[1.0, -1.0]]]]), torch.tensor([[[[2.0]], [[0.0]]]])
    layers = [FeatureLayer("ta", (1, 2), attention_p=2.0), FeatureLayer("tb", (1, 1), attention_p=2.0)]
    features = {layers[0]: layers[0].reduce(teacher_a).half().numpy(), layers[1]: layers[1].reduce(teacher_b).half().numpy()}
    method = _make("at", _context(plan=plan, features=features))
    assert method.student_paths == ("sa", "sb")
    step = _step(torch.zeros(1, 2), [0], features={"sa": torch.tensor([[[[3.0, 0.0]], [[-1.0, 0.0]]]]),
                                                   "sb": torch.tensor([[[[7.0]]]])})
    assert method(step).item() == pytest.approx((2 - math.sqrt(2)) / 2, rel=1e-4)


_RIGHT = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
_EQUILATERAL = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, math.sqrt(3) / 2]], np.float32)


def _embedding_method(name: str, teacher: np.ndarray, **options: Any) -> KDMethod:
    plan = FeaturePlan(embedding=LayerPair("head", "fc"))
    return _make(name, _context(plan=plan, features={FeatureLayer("fc"): teacher}, shapes={"head": (2,)}), **options)


def test_rkd_on_the_embedding_pair() -> None:
    # Distances 3, 4, 5 over their mean vs equal sides: 1/72 (see the functional tests).
    method = _embedding_method("rkd", _EQUILATERAL.astype(np.float16), distance_weight=1.0, angle_weight=0.0)
    assert method(_step(torch.zeros(3, 2), [0, 1, 0], features={"head": _RIGHT})).item() == pytest.approx(1 / 72, rel=1e-3)


def test_sp_on_the_embedding_pair() -> None:
    # G_s = I, G_t = rows [1, 1]/√2: (2 − √2) / 2.
    method = _embedding_method("sp", np.array([[1.0, 0.0], [1.0, 0.0]], np.float16))
    value = method(_step(torch.zeros(2, 2), [0, 1], features={"head": torch.eye(2)}))
    assert value.item() == pytest.approx((2 - math.sqrt(2)) / 2, rel=1e-6)


def test_contrastive_projects_both_embeddings() -> None:
    # Identity projections: z_s = I, z_t = [[1, 1]/√2, [0, 1]], τ = 1/2 → the functional tests' hand value.
    method = _embedding_method("contrastive", np.array([[1.0, 1.0], [0.0, 2.0]], np.float16), dim=2, temperature=0.5)
    with torch.no_grad():
        for projection in (method.student_projection, method.teacher_projection):
            projection.weight.copy_(torch.eye(2))
            projection.bias.zero_()
    r = math.sqrt(2)
    expected = ((math.log(math.exp(r) + 1) - r) + (math.log(math.exp(r) + math.exp(2)) - 2)) / 2
    value = method(_step(torch.zeros(2, 2), [0, 1], features={"head": torch.eye(2)}))
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_feature_methods_need_a_plan_and_the_cached_layers() -> None:
    with pytest.raises(ValueError, match=r"Method 'at' needs paired feature maps: give a FeaturePlan with maps"):
        _make("at", _context())
    with pytest.raises(ValueError, match=r"Method 'rkd' needs paired embeddings"):
        _make("rkd", _context(plan=_map_plan(("s", "t", (1, 1)))))
    with pytest.raises(ValueError, match=r"reads the cached teacher layer 'fc', but the teacher outputs hold no features"):
        _make("sp", _context(plan=FeaturePlan(embedding=LayerPair("head", "fc"))))
