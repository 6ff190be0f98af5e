from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import distill
from tests.conftest import TINY_HIDDEN, TINY_LAYERS


def test_teacher_outputs_are_cached_once(tiny_teacher: distill.HFTeacher, tiny_text: distill.TextData,
                                         tiny_outputs: distill.TextTeacherOutputs, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert tiny_outputs.train.shape == (len(tiny_text.ids_train), TINY_HIDDEN)
    assert sorted(tiny_outputs.hidden) == sorted(tiny_outputs.attention) == list(range(TINY_LAYERS))
    assert tiny_outputs.hidden[0].dtype == np.float16 and isinstance(tiny_outputs.hidden[0], np.memmap)
    cache = tmp_path / "cache"
    first = distill.text_teacher_outputs(tiny_teacher, tiny_text, cache, layers=[2])
    monkeypatch.setattr(type(tiny_teacher), "encode", lambda *a, **k: pytest.fail("the teacher ran again"))
    second = distill.text_teacher_outputs(tiny_teacher, tiny_text, cache, layers=[2])
    np.testing.assert_array_equal(first.val, second.val)
    assert second.nbytes == first.nbytes > 0
