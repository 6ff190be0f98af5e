"""Text data: ``python-docs`` (built in) or ``text:FILE``, split and tokenised with the teacher's tokenizer.

``text:FILE`` reads ``.txt`` (one text per line), ``.csv`` or ``.jsonl`` (a ``text`` column and an optional
``label`` column). The built-in corpus is the English prose of Python's own reference documentation,
``pydoc_data.topics`` (what ``help("assignment")`` prints): it ships with every CPython, needs no network
and no package, and splits into ~1,800 sentences of 6-40 words. Its wording follows the running Python's
version, which the data's fingerprint (a hash of the texts and the tokens) tracks.

A test split, never used to choose or fit anything, is carved after validation (``test_fraction``: the validation
texts stay the same whatever the test share) or read from another text source (``test_data``), less the texts that are
also training or validation texts.

Extra texts (any text source) may join the training split only: distillation needs no labels, so more texts
labelled by the teacher teach the student more of the teacher's mapping, while the validation texts stay the
user's own. An extra text equal to one of the user's texts (test texts included) or to an earlier extra text (ignoring
case and spacing) is left out.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import DataError

BUILTIN_TEXT = "python-docs"
TEXT_SOURCES = (BUILTIN_TEXT, "text:FILE")
TEXT_SUFFIXES = (".txt", ".csv", ".jsonl")


@dataclass(frozen=True)
class TextData:
    """A seeded train/validation/test split of texts, tokenised to ``(N, seq_len)`` int64 ids and masks.

    ``seq_len`` is the longest tokenised text, capped at the length asked for: padding further would change
    nothing for a masked model and would only grow the teacher-output cache. The last ``num_extra`` training rows
    are the texts of ``extra_source`` (unlabelled, never in validation).
    """

    source: str
    train_texts: list[str] = field(repr=False)  # the source's training texts, then the extra texts
    val_texts: list[str] = field(repr=False)
    ids_train: np.ndarray = field(repr=False)  # (N_train, seq_len) int64 token ids
    mask_train: np.ndarray = field(repr=False)  # (N_train, seq_len) int64, 1 = token, 0 = padding
    ids_val: np.ndarray = field(repr=False)
    mask_val: np.ndarray = field(repr=False)
    test_texts: list[str] = field(repr=False)  # empty: no test split
    ids_test: np.ndarray = field(repr=False)  # (N_test, seq_len)
    mask_test: np.ndarray = field(repr=False)
    test_note: str  # where the test split came from, or why there is none
    y_train: np.ndarray | None = field(default=None, repr=False)  # labels indexing ``classes`` (the source's texts)
    y_val: np.ndarray | None = field(default=None, repr=False)
    classes: list[str] | None = None
    fingerprint: str = ""  # identifies the texts (the extra ones included), the split and the tokens
    extra_source: str | None = None
    num_extra: int = 0

    @property
    def seq_len(self) -> int:
        return int(self.ids_train.shape[1])

    @property
    def num_own_train(self) -> int:
        """The training texts of ``source``, without the extra ones: what an epoch of distillation counts."""
        return len(self.ids_train) - self.num_extra

    @property
    def input_shape(self) -> tuple[int]:
        return (self.seq_len,)


def trim_padding(ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(N, S)`` ids and mask less the trailing columns that are padding in every row. A masked encoder's outputs
    on the real tokens stay the same, and its cost falls with the length: a batch of short texts padded to a corpus's
    longest (up to 128 tokens) runs in a fraction of the time."""
    used = np.flatnonzero(mask.any(axis=0))
    end = int(used[-1]) + 1 if len(used) else 1
    return ids[:, :end], mask[:, :end]


def is_text_source(source: str) -> bool:
    """Whether ``source`` names text data (rather than images)."""
    return source == BUILTIN_TEXT or source.startswith("text:")


def read_texts(source: str) -> tuple[list[str], list[str] | None]:
    """The texts of ``source`` (one of :data:`TEXT_SOURCES`) and their labels, when it has a label column."""
    if source == BUILTIN_TEXT:
        return builtin_corpus(), None
    kind, _, file = source.partition(":")
    if kind != "text" or not file:
        raise DataError(f"Unknown text source {source!r}; expected one of: {', '.join(TEXT_SOURCES)}.")
    path = Path(file).expanduser()
    if not path.is_file():
        raise DataError(f"Text file {file!r} does not exist.")
    suffix = path.suffix.lower()
    if suffix not in TEXT_SUFFIXES:
        raise DataError(f"Text file {file!r} must end in one of {', '.join(TEXT_SUFFIXES)} (one text per line, or a "
                        f"table with a 'text' column), but it ends in {suffix or 'nothing'!r}.")
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"Cannot read text file {file!r} as UTF-8: {error}.") from error
    if suffix == ".txt":
        texts, labels = [line.strip() for line in content.splitlines() if line.strip()], None
    elif suffix == ".csv":
        texts, labels = _read_csv(content, file)
    else:
        texts, labels = _read_jsonl(content, file)
    if not texts:
        raise DataError(f"Text file {file!r} holds no texts.")
    return texts, labels


def _read_csv(content: str, file: str) -> tuple[list[str], list[str] | None]:
    reader = csv.DictReader(io.StringIO(content, newline=""))  # quoted fields may span lines
    if not reader.fieldnames or "text" not in reader.fieldnames:
        raise DataError(f"CSV file {file!r} must have a 'text' column (and optionally 'label'); its header is "
                        f"{reader.fieldnames or 'empty'}.")
    return _columns(list(enumerate(reader, start=2)), "label" in reader.fieldnames, file, "row")


def _read_jsonl(content: str, file: str) -> tuple[list[str], list[str] | None]:
    records: list[tuple[int, Any]] = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{file!r} line {number} is not JSON: {error}.") from error
        if not isinstance(record, dict) or "text" not in record:
            raise DataError(f"{file!r} line {number} must be a JSON object with a 'text' key (and optionally "
                            f"'label'), but got {line.strip()[:80]!r}.")
        records.append((number, record))
    has_labels = any("label" in record for _, record in records)
    return _columns(records, has_labels, file, "line")


def _columns(records: list[tuple[int, Any]], has_labels: bool, file: str,
             unit: str) -> tuple[list[str], list[str] | None]:
    texts, labels = [], []
    for number, record in records:
        text, label = record.get("text"), record.get("label")
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{file!r} {unit} {number}: 'text' must be a non-empty string, but got {text!r}.")
        if has_labels and (label is None or str(label).strip() == ""):
            raise DataError(f"{file!r} {unit} {number}: 'label' is missing or empty, but other {unit}s have one; give "
                            "every text a label or none.")
        texts.append(text.strip())
        labels.append(str(label).strip() if has_labels else "")
    return texts, labels if has_labels else None


def builtin_corpus(min_words: int = 6, max_words: int = 40) -> list[str]:
    """The distinct prose sentences of Python's reference documentation (``pydoc_data.topics``), in order.

    Grammar productions, interactive examples, tables and code are skipped; a sentence is kept when it
    starts with a capital, ends with ``.``, ``!`` or ``?``, and is mostly letters.
    """
    from pydoc_data.topics import topics

    sentences: list[str] = []
    for key in sorted(topics):
        for paragraph in re.split(r"\n\s*\n", topics[key]):
            if ">>>" in paragraph or "::=" in paragraph or "...." in paragraph:
                continue
            lines = [line.strip() for line in paragraph.splitlines()]
            if any(line.startswith(("*****", "=====", "-----", "+---", "|")) for line in lines):
                continue
            text = re.sub(r"^[*\-] ", "", " ".join(lines))
            for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z\"“(])", text):
                sentence, words = sentence.strip(), sentence.split()
                prose = sum(c.isalpha() or c.isspace() for c in sentence) > 0.85 * len(sentence)
                if (min_words <= len(words) <= max_words and sentence[0].isupper() and sentence[-1] in ".!?"
                        and prose):
                    sentences.append(sentence)
    return list(dict.fromkeys(sentences))


def load_text_dataset(source: str, tokenizer: Any, *, seq_len: int = 128, val_fraction: float = 0.2,
                      test_fraction: float = 0.0, test_data: str | None = None, seed: int = 0,
                      max_texts: int | None = None, extra: str | None = None) -> TextData:
    """Read ``source``, split it (seeded) and tokenise the splits with ``tokenizer`` (a Hugging Face one), truncating
    to ``seq_len`` tokens. ``max_texts`` keeps a seeded random subset first. The test split is the texts of the text
    source ``test_data``, else ``test_fraction`` of ``source`` carved after validation. The texts of the text source
    ``extra`` join the training split after the source's own, less those already there (ignoring case and spacing);
    the split of ``source``'s texts is the same with or without them."""
    if not 0.0 < val_fraction < 1.0 or not 0.0 <= test_fraction < 1.0:
        raise DataError(f"`0 < val_fraction < 1` and `0 <= test_fraction < 1` must hold, but got ({val_fraction=}, "
                        f"{test_fraction=}).")
    if seq_len < 2:
        raise DataError(f"`seq_len >= 2` must hold (a [CLS] and a [SEP] token at least), but got {seq_len=}.")
    texts, labels = read_texts(source)
    extra_texts = _other_texts(extra, "Extra training texts")
    test_texts = _other_texts(test_data, "Test texts")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(texts))
    if max_texts is not None:
        order = order[:max_texts]
    n_val, n_test = round(val_fraction * len(order)), 0 if test_data else round(test_fraction * len(order))
    if n_val < 2 or len(order) - n_val - n_test < 2 or (test_fraction > 0 and not test_data and n_test < 2):
        raise DataError(f"{source!r}: {len(order)} texts are too few to split with {val_fraction=}"
                        f"{'' if test_data else f' and {test_fraction=}'}; need at least 2 in each split.")
    val, carved, train = order[:n_val], order[n_val:n_val + n_test], order[n_val + n_test:]
    own = [texts[i] for i in np.concatenate([train, val])]
    if test_data:
        test_texts = _new_texts(test_texts, own)
        if len(test_texts) < 2:
            raise DataError(f"--test-data {test_data}: {len(test_texts)} texts left that are not also {source}'s "
                            "training or validation texts (ignoring case and spacing); need at least 2.")
        note = f"test split: --test-data {test_data} ({len(test_texts)} texts, none of them {source}'s)"
    else:
        test_texts = [texts[i] for i in carved]
        note = (f"test split: {test_fraction:g} of {source} ({n_test} texts), carved after validation" if n_test else
                "no test split: test_fraction is 0 and no test texts were given")
    extra_kept = _new_texts(extra_texts, own + test_texts)
    if extra is not None and not extra_kept:
        raise DataError(f"Extra training texts {extra!r} add nothing: each of its {len(extra_texts)} texts is one of "
                        f"{source!r}'s texts or a test text (ignoring case and spacing) or repeats an earlier one.")
    n = len(train) + len(extra_kept)
    encoded = tokenizer(own[:len(train)] + extra_kept + own[len(train):] + test_texts, padding="longest",
                        truncation=True, max_length=seq_len, return_tensors="np")
    ids = np.asarray(encoded["input_ids"], dtype=np.int64)
    mask = np.asarray(encoded["attention_mask"], dtype=np.int64)
    y = classes = None
    if labels is not None:
        classes, indexed = np.unique(np.array(labels), return_inverse=True)
        classes, y = [str(c) for c in classes], indexed.astype(np.int64)
    digest = hashlib.sha256()
    for item in (ids, mask, np.array([val_fraction, seed])):
        digest.update(np.ascontiguousarray(item).tobytes() + str(item.shape).encode())
    for text in own + extra_kept + test_texts:
        digest.update(text.encode() + b"\0")
    end = n + n_val
    return TextData(
        source=source, train_texts=[texts[i] for i in train] + extra_kept, val_texts=[texts[i] for i in val],
        ids_train=ids[:n], mask_train=mask[:n], ids_val=ids[n:end], mask_val=mask[n:end],
        test_texts=test_texts, ids_test=ids[end:], mask_test=mask[end:], test_note=note,
        y_train=None if y is None else y[train], y_val=None if y is None else y[val], classes=classes,
        fingerprint=digest.hexdigest()[:16], extra_source=extra, num_extra=len(extra_kept),
    )


def _other_texts(source: str | None, role: str) -> list[str]:
    """The texts of the text source ``source`` (none if None), its errors prefixed with ``role``."""
    try:
        return [] if source is None else read_texts(source)[0]
    except DataError as error:
        raise DataError(f"{role}: {error}") from None


def _new_texts(texts: list[str], known: list[str]) -> list[str]:
    """``texts`` less those equal to a ``known`` text or to an earlier one, ignoring case and spacing."""
    def key(text: str) -> str:
        return " ".join(text.casefold().split())

    first: dict[str, str] = {}
    for text in texts:
        first.setdefault(key(text), text)
    seen = set(map(key, known))
    return [text for text_key, text in first.items() if text_key not in seen]
