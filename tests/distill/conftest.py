from __future__ import annotations

from pathlib import Path

import pytest

import distill
from tests.conftest import TINY_LAYERS


@pytest.fixture(scope="session")
def tiny_teacher(tiny_teacher_dir: Path) -> distill.HFTeacher:
    return distill.load_hf_teacher(f"hf:{tiny_teacher_dir}")


@pytest.fixture(scope="session")
def tiny_text(tiny_teacher: distill.HFTeacher) -> distill.TextData:
    return distill.load_text_dataset(distill.BUILTIN_TEXT, tiny_teacher.tokenizer, seq_len=24, max_texts=240)


@pytest.fixture(scope="session")
def tiny_outputs(tiny_teacher: distill.HFTeacher, tiny_text: distill.TextData,
                 tmp_path_factory: pytest.TempPathFactory) -> distill.TextTeacherOutputs:
    """The tiny teacher's cached outputs on ``tiny_text``, every layer included."""
    return distill.text_teacher_outputs(tiny_teacher, tiny_text, tmp_path_factory.mktemp("text-cache"),
                                        layers=range(TINY_LAYERS))
