from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

import distill
from distill import teacher_outputs


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


def test_teacher_runs_once_per_teacher_and_data(digits: distill.Dataset, digits_teacher: distill.Teacher,
                                                tmp_path: Path) -> None:
    teacher = CountingTeacher(digits_teacher)
    first = teacher_outputs(teacher, digits, tmp_path)
    assert teacher.samples == len(digits.x_train) + len(digits.x_val)
    second = teacher_outputs(teacher, digits, tmp_path)
    assert teacher.samples == len(digits.x_train) + len(digits.x_val)  # no second run
    assert isinstance(second.train, np.memmap)
    assert second.train.shape == (len(digits.x_train), 10) and second.val.shape == (len(digits.x_val), 10)
    np.testing.assert_array_equal(first.val, second.val)
    np.testing.assert_allclose(second.val, digits_teacher.logits(digits.x_val), atol=1e-5)
    other = distill.load_dataset("digits", seed=5)
    teacher_outputs(teacher, other, tmp_path)  # another split is another key
    assert teacher.samples == 2 * (len(digits.x_train) + len(digits.x_val))
