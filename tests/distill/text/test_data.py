from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import distill
from distill import DataError
from distill.text.data import trim_padding


def test_builtin_corpus_is_real_english_prose() -> None:
    texts, labels = distill.read_texts(distill.BUILTIN_TEXT)
    assert labels is None and len(texts) >= 1000 and len(set(texts)) == len(texts)
    assert all(6 <= len(t.split()) <= 40 and t[0].isupper() and t[-1] in ".!?" for t in texts)
    assert any("assignment" in t for t in texts)
    assert distill.is_text_source(distill.BUILTIN_TEXT) and distill.is_text_source("text:a.txt")
    assert not distill.is_text_source("digits")


def test_txt_csv_and_jsonl_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("first text\n\n  second text  \nthird\n")
    assert distill.read_texts(f"text:{tmp_path / 'a.txt'}") == (["first text", "second text", "third"], None)
    (tmp_path / "b.csv").write_text('id,text,label\n1,"hello, world",pos\n2,bye,neg\n')
    assert distill.read_texts(f"text:{tmp_path / 'b.csv'}") == (["hello, world", "bye"], ["pos", "neg"])
    (tmp_path / "c.csv").write_text("text\nonly text\n")
    assert distill.read_texts(f"text:{tmp_path / 'c.csv'}") == (["only text"], None)
    lines = [json.dumps({"text": "x y", "label": 1}), "", json.dumps({"text": "z", "label": 0})]
    (tmp_path / "d.jsonl").write_text("\n".join(lines))
    assert distill.read_texts(f"text:{tmp_path / 'd.jsonl'}") == (["x y", "z"], ["1", "0"])


@pytest.mark.parametrize("name, content, message", [
    ("empty.txt", "\n  \n", "holds no texts"),
    ("nocol.csv", "sentence,label\na,b\n", r"must have a 'text' column.*\['sentence', 'label'\]"),
    ("blank.csv", "text,label\n,x\n", "row 2: 'text' must be a non-empty string"),
    ("partial.csv", "text,label\na,x\nb,\n", "row 3: 'label' is missing"),
    ("bad.jsonl", '{"text": "a"}\nnot json\n', "line 2 is not JSON"),
    ("nokey.jsonl", '{"sentence": "a"}\n', "line 1 must be a JSON object with a 'text' key"),
    ("data.tsv", "a\tb\n", "must end in one of .txt, .csv, .jsonl"),
])
def test_malformed_files_raise_data_errors_naming_the_problem(tmp_path: Path, name: str, content: str,
                                                               message: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        distill.read_texts(f"text:{tmp_path / name}")


def test_unknown_or_missing_sources(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="Unknown text source 'words'"):
        distill.read_texts("words")
    with pytest.raises(DataError, match="does not exist"):
        distill.read_texts(f"text:{tmp_path / 'missing.txt'}")


def test_split_and_tokenise(tiny_teacher: distill.HFTeacher, tmp_path: Path) -> None:
    data = distill.load_text_dataset(distill.BUILTIN_TEXT, tiny_teacher.tokenizer, seq_len=24, max_texts=100, seed=1)
    assert len(data.train_texts) == 80 and len(data.val_texts) == 20 and not set(data.train_texts) & set(data.val_texts)
    assert data.ids_train.shape == data.mask_train.shape == (80, 24) and data.ids_val.shape == (20, 24)
    assert data.ids_train.dtype == np.int64 and data.input_shape == (24,)
    assert (data.mask_train[:, 0] == 1).all() and set(np.unique(data.mask_train)) <= {0, 1}
    again = distill.load_text_dataset(distill.BUILTIN_TEXT, tiny_teacher.tokenizer, seq_len=24, max_texts=100, seed=1)
    assert again.fingerprint == data.fingerprint and again.train_texts == data.train_texts
    other = distill.load_text_dataset(distill.BUILTIN_TEXT, tiny_teacher.tokenizer, seq_len=24, max_texts=100, seed=2)
    assert other.fingerprint != data.fingerprint
    # Short texts are padded to the longest, not to seq_len.
    (tmp_path / "short.csv").write_text("text,label\n" + "".join(f"word {i},{i % 2}\n" for i in range(10)))
    short = distill.load_text_dataset(f"text:{tmp_path / 'short.csv'}", tiny_teacher.tokenizer, seq_len=128)
    assert short.seq_len < 10 and short.classes == ["0", "1"] and len(short.y_train) == 8 and len(short.y_val) == 2
    with pytest.raises(DataError, match="too few to split"):
        distill.load_text_dataset(distill.BUILTIN_TEXT, tiny_teacher.tokenizer, max_texts=4)


def test_trim_padding_cuts_the_columns_padded_in_every_row() -> None:
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    ids = np.arange(10).reshape(2, 5) * mask
    trimmed_ids, trimmed_mask = trim_padding(ids, mask)
    np.testing.assert_array_equal(trimmed_mask, mask[:, :3])
    np.testing.assert_array_equal(trimmed_ids, ids[:, :3])
    assert trim_padding(ids, np.zeros_like(mask))[1].shape == (2, 1)  # a batch of empty texts keeps one column


def test_extra_texts_join_the_training_split_only(tiny_teacher: distill.HFTeacher, tmp_path: Path) -> None:
    texts = distill.read_texts(distill.BUILTIN_TEXT)[0]
    (tmp_path / "own.txt").write_text("\n".join(texts[:40]) + "\n")
    own, new = f"text:{tmp_path / 'own.txt'}", texts[40:64]
    base = distill.load_text_dataset(own, tiny_teacher.tokenizer, seq_len=64)
    # Left out: a validation text, a training text in capitals and spaced out, a repeat.
    spaced = "  ".join(base.train_texts[0].upper().split())
    (tmp_path / "extra.txt").write_text("\n".join([base.val_texts[0], spaced, *new, new[0]]))
    extra = f"text:{tmp_path / 'extra.txt'}"
    data = distill.load_text_dataset(own, tiny_teacher.tokenizer, seq_len=64, extra=extra)
    assert data.val_texts == base.val_texts and data.train_texts == base.train_texts + new
    assert (data.num_extra, data.num_own_train, data.extra_source, base.num_extra) == (24, 32, extra, 0)
    assert data.ids_train.shape == (56, data.seq_len) and data.ids_val.shape == (8, data.seq_len)
    width = base.seq_len
    np.testing.assert_array_equal(data.ids_train[:32, :width], base.ids_train)
    np.testing.assert_array_equal(data.ids_val[:, :width], base.ids_val)
    assert data.fingerprint != base.fingerprint


@pytest.mark.parametrize("extra, message", [
    ("text:{dir}/missing.txt", r"^Extra training texts: Text file '.*missing.txt' does not exist"),
    ("text:{dir}/empty.txt", r"^Extra training texts: .* holds no texts"),
    ("text:{dir}/binary.txt", r"^Extra training texts: Cannot read text file .* as UTF-8"),
    ("text:{dir}/image.png", r"^Extra training texts: .* must end in one of \.txt, \.csv, \.jsonl"),
    ("digits", r"^Extra training texts: Unknown text source 'digits'"),
    ("text:{dir}/own.txt", r"add nothing: each of its 12 texts is one of"),
])
def test_bad_extra_texts_raise_data_errors(tiny_teacher: distill.HFTeacher, tmp_path: Path, extra: str,
                                           message: str) -> None:
    (tmp_path / "own.txt").write_text("\n".join(distill.read_texts(distill.BUILTIN_TEXT)[0][:12]))
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "binary.txt").write_bytes(bytes(range(128, 256)))
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(DataError, match=message):
        distill.load_text_dataset(f"text:{tmp_path / 'own.txt'}", tiny_teacher.tokenizer,
                                  extra=extra.format(dir=tmp_path))


def test_a_test_split_is_carved_after_validation_or_read_from_another_source(tiny_teacher: distill.HFTeacher,
                                                                            tmp_path: Path) -> None:
    texts = distill.read_texts(distill.BUILTIN_TEXT)[0]
    (tmp_path / "own.txt").write_text("\n".join(texts[:50]) + "\n")
    own = f"text:{tmp_path / 'own.txt'}"
    base = distill.load_text_dataset(own, tiny_teacher.tokenizer, seq_len=64)
    assert base.test_texts == [] and len(base.ids_test) == 0 and base.test_note.startswith("no test split")
    carved = distill.load_text_dataset(own, tiny_teacher.tokenizer, seq_len=64, test_fraction=0.2)
    # The validation texts stay; the test texts come out of the training split.
    assert carved.val_texts == base.val_texts and len(carved.test_texts) == 10
    assert set(carved.test_texts) <= set(base.train_texts)
    assert carved.train_texts == [text for text in base.train_texts if text not in carved.test_texts]
    assert carved.test_note == f"test split: 0.2 of {own} (10 texts), carved after validation"
    alone = tiny_teacher.tokenizer(carved.test_texts, padding="longest", return_tensors="np")["input_ids"]
    np.testing.assert_array_equal(carved.ids_test[:, :alone.shape[1]], alone)
    assert carved.fingerprint != base.fingerprint

    # Test texts of another source: those that are --data's (in any case or spacing) are left out, and an extra
    # training text equal to a test text is left out of training.
    (tmp_path / "test.txt").write_text("\n".join([base.val_texts[0].upper(), base.train_texts[0], *texts[50:60]]))
    (tmp_path / "extra.txt").write_text("\n".join([texts[50], *texts[60:70]]))
    test = f"text:{tmp_path / 'test.txt'}"
    given = distill.load_text_dataset(own, tiny_teacher.tokenizer, seq_len=64, test_fraction=0.2, test_data=test,
                                      extra=f"text:{tmp_path / 'extra.txt'}")
    assert given.test_texts == texts[50:60] and given.val_texts == base.val_texts
    assert given.train_texts == base.train_texts + texts[60:70]  # nothing carved: the test split is given
    assert given.test_note == f"test split: --test-data {test} (10 texts, none of them {own}'s)"
    (tmp_path / "mine.txt").write_text("\n".join(texts[:50]))
    with pytest.raises(DataError, match=r"--test-data text:.*mine.txt: 0 texts left that are not also"):
        distill.load_text_dataset(own, tiny_teacher.tokenizer, test_data=f"text:{tmp_path / 'mine.txt'}")
    with pytest.raises(DataError, match=r"^Test texts: Text file '.*missing.txt' does not exist"):
        distill.load_text_dataset(own, tiny_teacher.tokenizer, test_data=f"text:{tmp_path / 'missing.txt'}")
    with pytest.raises(DataError, match="too few to split with val_fraction=0.2 and test_fraction=0.9"):
        distill.load_text_dataset(own, tiny_teacher.tokenizer, test_fraction=0.9)

