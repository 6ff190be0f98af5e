from __future__ import annotations

import collections
import re
from pathlib import Path

import pytest

import distill

TINY_LAYERS, TINY_HIDDEN, TINY_HEADS = 3, 32, 4


@pytest.fixture(scope="session")
def tiny_teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (random-weight) 3-layer BERT saved with its WordPiece tokenizer, as ``hf:PATH`` expects."""
    transformers = pytest.importorskip("transformers")
    directory = tmp_path_factory.mktemp("tiny-bert")
    words = collections.Counter(w for text in distill.read_texts(distill.BUILTIN_TEXT)[0]
                                for w in re.findall(r"[a-z]+|[^\sa-z]", text.lower()))
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]  # unknown words split into letters, not [UNK]
    common = sorted({w for w, _ in words.most_common(300)} - set(letters))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *(f"##{c}" for c in letters), *common]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizer(vocab_file=str(directory / "vocab.txt"))
    tokenizer.save_pretrained(str(directory))
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=TINY_HIDDEN, num_hidden_layers=TINY_LAYERS,
                                     num_attention_heads=TINY_HEADS, intermediate_size=64, max_position_embeddings=64)
    transformers.set_seed(0)
    transformers.BertModel(config).save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="session")
def tiny_teacher(tiny_teacher_dir: Path) -> distill.HFTeacher:
    return distill.load_hf_teacher(f"hf:{tiny_teacher_dir}")


@pytest.fixture(scope="session")
def tiny_text(tiny_teacher: distill.HFTeacher) -> distill.TextData:
    return distill.load_text_dataset(distill.BUILTIN_TEXT, tiny_teacher.tokenizer, seq_len=24, max_texts=240)
