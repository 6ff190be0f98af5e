"""The distillation terms of text students, and the layer map between student and teacher layers.

The terms (DistilBERT / TinyBERT / MiniLM style), :data:`TEXT_LOSSES`, chosen by name and summed with weights:

- ``cosine``: ``1 − cos`` between the student's pooled sentence embedding and the teacher's (DistilBERT);
- ``hidden``: MSE between each student layer's hidden states, through a learned linear projection to the
  teacher's size, and those of the teacher layer it maps to (TinyBERT);
- ``attention``: KL (or MSE) between the head-averaged attention distributions of each student layer and
  of its teacher layer (MiniLM; heads are averaged because the counts differ);
- ``similarity``: KL between the teacher's and the student's distributions over each text's neighbours in the batch
  (softmax of cosine similarities): the teacher's neighbourhoods, which neighbour agreement scores.

They are not ``@register_loss`` methods: those distil classifiers (logits, labels, feature maps), these
distil encoders (embeddings, hidden states, attention), and no spec mixes the two.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from distill.arrays import rows
from distill.losses.functional import (attention_kl_loss, attention_mse_loss, cosine_embedding_loss, hidden_mse_loss,
                                       similarity_kl_loss)
from distill.losses.registry import split_spec

TEXT_LOSSES = ("cosine", "hidden", "attention", "similarity")
LAYER_LOSSES = ("hidden", "attention")  # the terms that read the teacher's layers, which its cache must then hold


def parse_text_kd(spec: str) -> dict[str, float]:
    """``"cosine+similarity:0.1"`` → ``{"cosine": 1.0, "similarity": 0.1}``: the terms of :data:`TEXT_LOSSES` and
    their weights, in the syntax of the image methods' specs."""
    pairs = split_spec(spec)
    weights = dict(pairs)
    if not set(weights) <= set(TEXT_LOSSES) or len(pairs) != len(weights):
        raise ValueError(f"A text distillation spec joins {', '.join(TEXT_LOSSES)} with '+', each once, with an "
                         f"optional ':weight' (e.g. 'cosine+similarity:0.1'), but got {spec!r}.")
    if bad := {name: w for name, w in weights.items() if not math.isfinite(w) or w < 0}:
        raise ValueError(f"The weights of a text distillation spec must be finite numbers >= 0, but got {bad}.")
    return weights


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Student layer ``i`` → teacher layer ``round((i + 1) · L_t / L_s) − 1`` (halves up), as TinyBERT: evenly
    spread, the last onto the last."""
    if not 1 <= student_layers or not 1 <= teacher_layers:
        raise ValueError(f"Layer counts must be >= 1, but got ({student_layers=}, {teacher_layers=}).")
    return [max(0, math.floor((i + 1) * teacher_layers / student_layers + 0.5) - 1) for i in range(student_layers)]


def mapped_teacher_layers(student_depths: Sequence[int], teacher_layers: int,
                          losses: Sequence[str] = TEXT_LOSSES) -> list[int]:
    """Every teacher layer that the uniform map of any of ``student_depths`` uses, when ``losses`` read layers
    (:data:`LAYER_LOSSES`): the layers to cache."""
    if not set(losses) & set(LAYER_LOSSES):
        return []
    return sorted({k for depth in student_depths for k in uniform_layer_map(depth, teacher_layers)})


class TextCriterion(nn.Module):
    """The ``losses`` terms of one text student, reading the teacher's cached arrays of the training split.

    ``layer_map[i]`` is the teacher layer that student layer ``i`` (of width ``student_hidden[i]``) learns from
    (default: :func:`uniform_layer_map` onto the teacher's ``teacher_layers``); the ``hidden`` term holds one learned projection
    per student layer, to the teacher's width.
    """

    def __init__(self, losses: Sequence[str], *, teacher_embedding: np.ndarray, student_hidden: Sequence[int] = (),
                 layer_map: Sequence[int] | None = None, teacher_layers: int = 0,
                 teacher_hidden: Mapping[int, np.ndarray] | None = None,
                 teacher_attention: Mapping[int, np.ndarray] | None = None, weights: Mapping[str, float] | None = None,
                 attention_loss: str = "kl", similarity_temperature: float = 0.05) -> None:
        super().__init__()
        unknown = sorted(set(losses) - set(TEXT_LOSSES))
        if unknown or not losses:
            raise ValueError(f"`losses` must be a non-empty subset of {TEXT_LOSSES}, but got {tuple(losses)}.")
        self.losses = tuple(losses)
        self.weights = {name: 1.0 for name in self.losses} | dict(weights or {})
        self.attention_loss = attention_loss
        self.similarity_temperature = similarity_temperature
        self.teacher_embedding = teacher_embedding
        self.teacher_hidden, self.teacher_attention = teacher_hidden or {}, teacher_attention or {}
        layered = {term: cached for term, cached in (("hidden", self.teacher_hidden),
                                                     ("attention", self.teacher_attention)) if term in self.losses}
        if layered and layer_map is None:
            layer_map = uniform_layer_map(len(student_hidden), teacher_layers)
        self.layer_map = list(layer_map or ())
        for term, cached in layered.items():
            if len(self.layer_map) != len(student_hidden):
                raise ValueError(f"`layer_map` must give one teacher layer per student layer ({len(student_hidden)}), "
                                 f"but got {self.layer_map}.")
            if missing := sorted(set(self.layer_map) - set(cached)):
                raise ValueError(f"The {term!r} term reads teacher layers {missing}, but the teacher outputs hold "
                                 f"layers {sorted(cached) or 'none'}; build them with "
                                 "text_teacher_outputs(..., layers=mapped_teacher_layers(...)).")
        width = teacher_embedding.shape[1]
        self.projections = nn.ModuleList(nn.Linear(size, width) for size in student_hidden) \
            if "hidden" in self.losses else nn.ModuleList()

    def hidden(self, student_states: Sequence[Tensor], teacher_states: Sequence[Tensor], mask: Tensor) -> Tensor:
        """Mean over the mapped layers of the masked MSE of projected student and teacher hidden states."""
        terms = [hidden_mse_loss(projection(s), t, mask)
                 for projection, s, t in zip(self.projections, student_states, teacher_states)]
        return torch.stack(terms).mean()

    def attention(self, student_attentions: Sequence[Tensor], teacher_attentions: Sequence[Tensor],
                  mask: Tensor) -> Tensor:
        """Mean over the mapped layers of the loss between head-averaged (N, S, S) attention distributions."""
        loss = attention_kl_loss if self.attention_loss == "kl" else attention_mse_loss
        terms = [loss(s.mean(dim=1, keepdim=True), t.unsqueeze(1), mask)
                 for s, t in zip(student_attentions, teacher_attentions)]
        return torch.stack(terms).mean()

    def forward(self, out: Any, mask: Tensor, indices: np.ndarray) -> dict[str, Tensor]:
        """Each chosen term's unweighted value for the student's outputs ``out`` (``embedding``, ``hidden_states``,
        ``attentions``) on the training texts ``indices``, whose token mask is ``mask``: the cached teacher layers
        are cut to its length (a batch cut to its longest text, :func:`~distill.text.data.trim_padding`)."""
        terms, seq = {}, mask.shape[1]
        if "cosine" in self.losses or "similarity" in self.losses:  # the terms of the pooled embedding
            embedding = rows(self.teacher_embedding, indices, mask.device)
            if "cosine" in self.losses:
                terms["cosine"] = cosine_embedding_loss(out.embedding, embedding)
            if "similarity" in self.losses:
                terms["similarity"] = similarity_kl_loss(out.embedding, embedding, self.similarity_temperature)
        if "hidden" in self.losses:
            teacher = [rows(self.teacher_hidden[k][:, :seq], indices, mask.device) for k in self.layer_map]
            terms["hidden"] = self.hidden(out.hidden_states, teacher, mask)
        if "attention" in self.losses:
            teacher = [rows(self.teacher_attention[k][:, :seq, :seq], indices, mask.device) for k in self.layer_map]
            terms["attention"] = self.attention(out.attentions, teacher, mask)
        return terms

    def combine(self, terms: Mapping[str, Tensor]) -> Tensor:
        """The weighted sum of the terms."""
        return sum(self.weights[name] * value for name, value in terms.items())  # type: ignore[return-value]
