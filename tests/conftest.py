from __future__ import annotations

from pathlib import Path

import pytest

import distill

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mnist-t10k"


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One teacher/teacher-output cache for the whole run, so the built-in teacher trains once."""
    return tmp_path_factory.mktemp("nas-cache")


@pytest.fixture(scope="session")
def digits() -> distill.Dataset:
    return distill.load_dataset("digits")


@pytest.fixture(scope="session")
def digits_teacher(digits: distill.Dataset, cache_dir: Path) -> distill.Teacher:
    return distill.load_teacher("builtin", digits, cache_dir, epochs=3)


@pytest.fixture(scope="session")
def digits_outputs(digits: distill.Dataset, digits_teacher: distill.Teacher, cache_dir: Path) -> distill.TeacherOutputs:
    return distill.teacher_outputs(digits_teacher, digits, cache_dir)
