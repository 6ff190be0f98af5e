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


def test_the_cache_key_covers_the_extra_texts(tiny_teacher: distill.HFTeacher, tiny_text: distill.TextData,
                                              tmp_path: Path) -> None:
    (tmp_path / "extra.txt").write_text("\n".join(distill.read_texts(distill.BUILTIN_TEXT)[0][-30:]))
    more = distill.load_text_dataset(distill.BUILTIN_TEXT, tiny_teacher.tokenizer, seq_len=24, max_texts=240,
                                     extra=f"text:{tmp_path / 'extra.txt'}")
    assert more.num_extra > 20 and more.train_texts[:more.num_own_train] == tiny_text.train_texts
    cache = tmp_path / "cache"
    first = distill.text_teacher_outputs(tiny_teacher, tiny_text, cache)
    second = distill.text_teacher_outputs(tiny_teacher, more, cache)  # computed: not the first's files
    assert len(list((cache / "text").glob("*.npy"))) == 4
    assert second.train.shape == (len(tiny_text.ids_train) + more.num_extra, TINY_HIDDEN)
    np.testing.assert_allclose(second.train[:more.num_own_train], first.train, atol=1e-5)
    np.testing.assert_allclose(second.val, first.val, atol=1e-5)
