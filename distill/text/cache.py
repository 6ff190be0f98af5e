"""Text-teacher outputs computed once per (teacher, data, layer) and memory-mapped: no trial runs the teacher.

Pooled sentence embeddings are cached as float32 for both splits (the training split's extra texts included:
the data's fingerprint, part of every file's name, covers them). For layer-wise distillation, the hidden
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

from distill.arrays import cached_arrays
from distill.text.data import TextData
from distill.text.hf import HFTeacher

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
    layers = sorted(set(layers))
    keys = ["train", "val", *(f"hidden{k}" for k in layers), *(f"attention{k}" for k in layers)]

    def compute(missing: Sequence[str]) -> dict[str, np.ndarray]:
        computed: dict[str, np.ndarray] = {}
        hidden = [k for k in layers if f"hidden{k}" in missing]
        attention = [k for k in layers if f"attention{k}" in missing]
        if hidden or attention or "train" in missing:
            log.info("Computing teacher outputs on %d training texts%s%s (once; cached)", len(data.ids_train),
                     f" ({data.num_extra} of them extra, from {data.extra_source})" if data.num_extra else "",
                     f", layers {sorted(set(hidden + attention))}" if hidden or attention else "")
            encoded = teacher.encode(data.ids_train, data.mask_train, hidden, attention,
                                     progress="Teacher: training texts")
            computed["train"] = encoded.embedding
            computed |= {f"hidden{k}": array for k, array in encoded.hidden_states.items()}
            computed |= {f"attention{k}": array for k, array in encoded.attentions.items()}
        if "val" in missing:
            log.info("Computing teacher outputs on %d validation texts (once; cached)", len(data.ids_val))
            computed["val"] = teacher.encode(data.ids_val, data.mask_val,
                                             progress="Teacher: validation texts").embedding
        return computed

    arrays = cached_arrays({key: cache_dir / "text" / f"{stem}-{key}.npy" for key in keys}, compute)
    outputs = TextTeacherOutputs(train=arrays["train"], val=arrays["val"],
                                 hidden={k: arrays[f"hidden{k}"] for k in layers},
                                 attention={k: arrays[f"attention{k}"] for k in layers}, num_layers=teacher.num_layers)
    log.info("Text teacher cache: %d bytes (%d train, %d of them extra, %d val texts of %d tokens; layers %s)",
             outputs.nbytes, len(data.ids_train), data.num_extra, len(data.ids_val), data.seq_len, layers)
    return outputs
