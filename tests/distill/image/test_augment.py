from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import distill
from distill import TrainConfig, Views, teacher_outputs
from distill.image.augment import default_pad
from tests.distill.image.test_cache import CountingTeacher, _student


def _images(n: int = 64, size: int = 28) -> np.ndarray:
    return np.random.default_rng(0).integers(1, 256, (n, 2, size, size), dtype=np.uint8)  # no zero pixels


def test_padding_scales_with_the_image_size() -> None:
    assert [default_pad(s, s) for s in (8, 28, 32, 96, 224)] == [1, 4, 4, 12, 28]
    assert default_pad(28, 96) == 4  # the smaller side
    assert Views.of("none", (1, 28, 28), 8, 0) is None
    with pytest.raises(ValueError, match="Unknown augmentation 'flip'"):
        Views.of("flip", (1, 28, 28), 8, 0)


def test_a_view_is_a_deterministic_function_of_seed_sample_and_view() -> None:
    views, x, samples = Views("standard", 8, 0, 4), _images(), np.arange(64)
    first = views.apply(x, samples, 3)
    np.testing.assert_array_equal(first, Views("standard", 8, 0, 4).apply(x, samples, 3))
    np.testing.assert_array_equal(first[10:20], views.apply(x[10:20], samples[10:20], 3))  # not on the batch
    params = np.stack(views.params(samples, 3), axis=1)
    assert len({tuple(p) for p in params}) > 20  # samples differ
    for other in (views.params(samples, 4), Views("standard", 8, 1, 4).params(samples, 3)):  # views, seeds differ
        assert (np.stack(other, axis=1) != params).any(axis=1).mean() > 0.8


def test_a_view_is_a_crop_of_the_padded_image_mirrored_only_with_standard() -> None:
    x, samples = _images(200, 8), np.arange(200)
    for kind in ("crop", "standard"):
        views = Views(kind, 8, 0, 2)
        out = views.apply(x, samples, 5)
        top, left, mirrored = views.params(samples, 5)
        assert out.shape == x.shape and out.dtype == np.uint8
        assert top.min() == left.min() == 0 and top.max() == left.max() == 4  # every offset inside the padding
        padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
        for i in range(len(x)):
            crop = padded[i, :, top[i]:top[i] + 8, left[i]:left[i] + 8]
            np.testing.assert_array_equal(out[i], crop[..., ::-1] if mirrored[i] else crop)
        assert 0.35 < mirrored.mean() < 0.65 if kind == "standard" else not mirrored.any()


def test_samples_cycle_through_every_view_from_their_own_offset() -> None:
    views, samples = Views("crop", 8, 0, 4), np.arange(1000)
    seen = np.stack([views.cycle(samples, epoch) for epoch in range(8)])
    assert (np.sort(seen, axis=0) == np.arange(8)[:, None]).all()  # each sample: every view once in 8 epochs
    assert len(np.unique(seen[0])) == 8  # a single epoch already shows every view
    np.testing.assert_array_equal(views.cycle(samples, 9), seen[1])


def test_view_logits_are_computed_once_and_match_the_teacher_on_each_view(
        digits: distill.Dataset, digits_teacher: distill.Teacher, tmp_path: Path) -> None:
    teacher, views = CountingTeacher(digits_teacher), Views("crop", 3, 0, 1)
    n = len(digits.train)
    outputs = teacher_outputs(teacher, digits, tmp_path, views=views)
    assert teacher.samples == 3 * n + len(digits.val) and outputs.train.shape == (3 * n, 10)
    for _ in range(2):  # two "trials" and a second load: the teacher never runs again
        distill.distill(_student(digits), digits, teacher_outputs(teacher, digits, tmp_path, views=views),
                        TrainConfig(steps=4, kd="dkd"))
    assert teacher.samples == 3 * n + len(digits.val)
    samples = np.array([0, 7, n - 1])
    for view in range(3):
        expected = digits_teacher.logits(digits.normalise(views.apply(digits.train.x[samples], samples, view)))
        np.testing.assert_allclose(outputs.train[view * n + samples], expected, atol=1e-4)
    assert teacher_outputs(teacher, digits, tmp_path).train.shape == (n, 10)  # unaugmented: another entry
    with pytest.raises(ValueError, match="feature-based distillation needs no augmentation"):
        teacher_outputs(teacher, digits, tmp_path, [distill.FeatureLayer("features.2")], views=views)


class RecordingTargets:
    """Soft targets that record the cache rows a training step asks for and the images it trains on."""

    def __init__(self, logits: np.ndarray) -> None:
        self.logits, self.calls = logits, []

    def __call__(self, rows: np.ndarray, inputs: torch.Tensor) -> torch.Tensor:
        self.calls.append((rows.copy(), inputs.clone()))
        return torch.from_numpy(np.asarray(self.logits[rows]))


def test_a_student_trains_on_the_view_whose_cached_logits_it_reads(digits: distill.Dataset) -> None:
    views, n = Views("crop", 4, 0, 1), len(digits.train)
    targets = RecordingTargets(np.zeros((4 * n, 10), np.float32))
    config = TrainConfig(epochs=2, batch_size=256, seed=1)
    distill.train(_student(digits), digits, targets, config, views=views)
    per_epoch = -(-n // 256)
    assert len(targets.calls) == 2 * per_epoch
    for step, (rows, inputs) in enumerate(targets.calls):
        samples, view = rows % n, rows // n
        np.testing.assert_array_equal(view, views.cycle(samples, step // per_epoch))
        expected = digits.normalise(views.apply(digits.train.x[samples], samples, view))
        np.testing.assert_allclose(inputs.numpy(), expected, atol=1e-6)
    first = np.concatenate([rows for rows, _ in targets.calls[:per_epoch]])
    assert sorted(first % n) == list(range(n))  # an epoch still sees every sample once
