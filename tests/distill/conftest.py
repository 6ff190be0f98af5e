from __future__ import annotations

from pathlib import Path

import pytest

import distill

from ..conftest import TINY_HEADS, TINY_HIDDEN, TINY_LAYERS  # noqa: F401  (used by the tests here)

@pytest.fixture(scope="session")
def tiny_teacher(tiny_teacher_dir: Path) -> distill.HFTeacher:
    return distill.load_hf_teacher(f"hf:{tiny_teacher_dir}")


@pytest.fixture(scope="session")
def tiny_text(tiny_teacher: distill.HFTeacher) -> distill.TextData:
    return distill.load_text_dataset(distill.BUILTIN_TEXT, tiny_teacher.tokenizer, seq_len=24, max_texts=240)
