"""Text-teacher outputs computed once per (teacher, data, layer) and memory-mapped: no trial runs the teacher.

Pooled sentence embeddings are cached as float32 for both splits. For layer-wise distillation, the hidden
states and the head-averaged attention probabilities of the asked teacher layers are cached for the
training split as float16, one file per layer. Averaging the heads keeps the cache independent of the
students' head counts and 1/heads the size: with MiniLM (384 dims) at 64 tokens a sample costs
49 KB of hidden states and 8 KB of attention per layer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.cache import _save
from distill.hf import HFTeacher
from distill.text import TextData

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextTeacherOutputs:
    train: np.ndarray  # (N_train, D) float32 pooled embeddings, memory-mapped
    val: np.ndarray  # (N_val, D)
    hidden: Mapping[int, np.ndarray] = field(default_factory=dict)  # layer -> (N_train, S, D) float16
    attention: Mapping[int, np.ndarray] = field(default_factory=dict)  # layer -> (N_train, S, S) float16, head mean
    num_layers: int = 0  # the teacher's encoder layers, for layer maps

    @property
    def nbytes(self) -> int:
        """Bytes of every cached array: what memory-mapping them can page in."""
        return (self.train.nbytes + self.val.nbytes + sum(a.nbytes for a in self.hidden.values())
                + sum(a.nbytes for a in self.attention.values()))


def text_teacher_outputs(teacher: HFTeacher, data: TextData, cache_dir: Path,
                         layers: Sequence[int] = ()) -> TextTeacherOutputs:
    """Load the cached teacher embeddings (and the hidden states and attention of ``layers``) on ``data``,
    computing what is missing in one pass over each split.

    ``layers`` should be every teacher layer any student of the search maps to, e.g.
    ``mapped_teacher_layers(space.depths, teacher.num_layers)``.
    """
    stem = f"{teacher.identity}-{data.fingerprint}"
    paths = {split: cache_dir / "text" / f"{stem}-{split}.npy" for split in ("train", "val")}
    layers = sorted(set(layers))
    hidden_paths = {k: cache_dir / "text" / f"{stem}-hidden{k}.npy" for k in layers}
    attention_paths = {k: cache_dir / "text" / f"{stem}-attention{k}.npy" for k in layers}
    missing_hidden = [k for k, p in hidden_paths.items() if not p.is_file()]
    missing_attention = [k for k, p in attention_paths.items() if not p.is_file()]
    if missing_hidden or missing_attention or not paths["train"].is_file():
        log.info("Computing teacher outputs on %d training texts%s (once; cached)", len(data.ids_train),
                 f", layers {sorted(set(missing_hidden + missing_attention))}" if missing_hidden or missing_attention
                 else "")
        encoded = teacher.encode(data.ids_train, data.mask_train, missing_hidden, missing_attention)
        for k, array in encoded.hidden_states.items():
            _save(hidden_paths[k], array)
        for k, array in encoded.attentions.items():
            _save(attention_paths[k], array)
        if not paths["train"].is_file():
            _save(paths["train"], encoded.embedding)
    if not paths["val"].is_file():
        log.info("Computing teacher outputs on %d validation texts (once; cached)", len(data.ids_val))
        _save(paths["val"], teacher.encode(data.ids_val, data.mask_val).embedding)
    outputs = TextTeacherOutputs(
        train=np.load(paths["train"], mmap_mode="r"), val=np.load(paths["val"], mmap_mode="r"),
        hidden={k: np.load(p, mmap_mode="r") for k, p in hidden_paths.items()},
        attention={k: np.load(p, mmap_mode="r") for k, p in attention_paths.items()},
        num_layers=teacher.num_layers,
    )
    log.info("Text teacher cache: %d bytes (%d train, %d val texts of %d tokens; layers %s)", outputs.nbytes,
             len(data.ids_train), len(data.ids_val), data.seq_len, layers)
    return outputs
