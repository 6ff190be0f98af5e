from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import distill
from distill import FeatureLayer, TeacherError, TrainConfig, plan_features, teacher_layers, teacher_outputs
from search_spaces import get_space


@dataclass
class CountingTeacher:
    """A real teacher wrapped to count how many samples it is run on."""

    inner: distill.Teacher
    samples: int = 0

    @property
    def identity(self) -> str:
        return self.inner.identity

    def logits(self, x: np.ndarray) -> np.ndarray:
        self.samples += len(x)
        return self.inner.logits(x)

    def features(self, x: np.ndarray, layers: Sequence[FeatureLayer]) -> tuple[np.ndarray, dict[FeatureLayer, np.ndarray]]:
        self.samples += len(x)
        return self.inner.features(x, layers)


def test_teacher_runs_once_per_teacher_and_data(digits: distill.Dataset, digits_teacher: distill.Teacher,
                                                tmp_path: Path) -> None:
    teacher = CountingTeacher(digits_teacher)
    first = teacher_outputs(teacher, digits, tmp_path)
    assert teacher.samples == len(digits.train) + len(digits.val)
    second = teacher_outputs(teacher, digits, tmp_path)
    assert teacher.samples == len(digits.train) + len(digits.val)  # no second run
    assert isinstance(second.train, np.memmap)
    assert second.train.shape == (len(digits.train), 10) and second.val.shape == (len(digits.val), 10)
    np.testing.assert_array_equal(first.val, second.val)
    np.testing.assert_allclose(second.val, digits_teacher.logits(digits.normalise(digits.val.x)), atol=1e-5)
    other = distill.load_dataset("digits", seed=5)
    teacher_outputs(teacher, other, tmp_path)  # another split is another key
    assert teacher.samples == 2 * (len(digits.train) + len(digits.val))


def _student(data: distill.Dataset) -> torch.nn.Module:
    space = get_space("mbconv")
    return space.build(space.smallest(), data.input_shape, data.num_classes)


def test_feature_distillation_reads_the_cache_and_never_runs_the_teacher(
        digits: distill.Dataset, digits_teacher: distill.Teacher, tmp_path: Path) -> None:
    teacher, module = CountingTeacher(digits_teacher), digits_teacher.module
    forwards: list[int] = []  # every sample the teacher module sees, however it is called
    handle = module.register_forward_pre_hook(lambda _, inputs: forwards.append(len(inputs[0])))
    try:
        plan = plan_features(_student(digits), module, digits.input_shape)  # setup: probes 2 samples
        spec = "kd+at+fitnets+rkd+sp+contrastive"
        outputs = teacher_outputs(teacher, digits, tmp_path, features=teacher_layers(spec, plan))
        once = len(digits.train) + len(digits.val)
        assert teacher.samples == once and sum(forwards) == 2 + once  # features and logits in one pass over train
        for seed in (0, 1):  # two "trials"
            distill.distill(_student(digits), digits, outputs, TrainConfig(steps=3, kd=spec, seed=seed), plan=plan)
        again = teacher_outputs(teacher, digits, tmp_path, features=teacher_layers(spec, plan))
        assert teacher.samples == once and sum(forwards) == 2 + once
    finally:
        handle.remove()
    assert set(again.features) == set(teacher_layers(spec, plan))
    for layer, array in again.features.items():
        assert isinstance(array, np.memmap) and array.dtype == np.float16 and len(array) == len(digits.train)
        np.testing.assert_array_equal(array, outputs.features[layer])
    attention = FeatureLayer("features.2", (8, 8), attention_p=2.0)
    assert again.features[attention].shape == (len(digits.train), 1, 8, 8)  # one channel, not 32
    assert again.nbytes == (again.train.nbytes + again.val.nbytes
                            + sum(a.nbytes for a in again.features.values()))


def test_features_are_keyed_by_layer_and_reduction(digits: distill.Dataset, digits_teacher: distill.Teacher,
                                                   tmp_path: Path) -> None:
    teacher = CountingTeacher(digits_teacher)
    first = FeatureLayer("features.6", (4, 4), attention_p=2.0)
    teacher_outputs(teacher, digits, tmp_path, features=[first])
    counted = teacher.samples
    pooled = FeatureLayer("features.6", (2, 2), attention_p=2.0)  # same layer, another pooling: another entry
    outputs = teacher_outputs(teacher, digits, tmp_path, features=[first, pooled])
    assert teacher.samples == counted + len(digits.train)  # only the new layer, on the training split
    full = torch.from_numpy(np.asarray(outputs.features[first], dtype=np.float32))
    np.testing.assert_allclose(outputs.features[pooled], torch.nn.functional.avg_pool2d(full.pow(2), 2).sqrt().numpy(),
                               rtol=2e-3, atol=2e-3)


def test_teachers_without_features_are_refused(digits: distill.Dataset, digits_teacher: distill.Teacher,
                                               tmp_path: Path) -> None:
    @dataclass
    class LogitsOnly:
        identity: str = "onnx-like"

        def logits(self, x: np.ndarray) -> np.ndarray:
            return digits_teacher.logits(x)

    with pytest.raises(TeacherError, match="needs the teacher's intermediate outputs, which teacher 'onnx-like' "
                                           r"\(LogitsOnly\) cannot give"):
        teacher_outputs(LogitsOnly(), digits, tmp_path, features=[FeatureLayer("features.2")])
