"""Task-agnostic distillation of text students from cached teacher outputs, and their fidelity metrics.

The loss (DistilBERT / TinyBERT / MiniLM style) sums, with the config's weights:

- ``cosine``: ``1 − cos`` between the student's pooled sentence embedding and the teacher's (DistilBERT);
- ``hidden``: MSE between each student layer's hidden states, through a learned linear projection to the
  teacher's size, and those of the teacher layer it maps to (TinyBERT);
- ``attention``: KL (or MSE) between the head-averaged attention distributions of each student layer and
  of its teacher layer (MiniLM; heads are averaged because the counts differ).

A student is any module with ``forward(input_ids, attention_mask, return_layers=True)`` returning an object
with ``embedding`` (N, D), ``hidden_states`` and ``attentions`` (one (N, S, H) and one (N, heads, S, S) per
layer), e.g. ``search_spaces.transformer.TextStudent``. Quality is measured on the validation texts: the mean
cosine of student and teacher embeddings and the top-k neighbour agreement (retrieval preserved).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn

from distill.errors import DistillError
from distill.functional import attention_kl_loss, attention_mse_loss, cosine_embedding_loss, hidden_mse_loss
from distill.text import TextData
from distill.text_cache import TextTeacherOutputs

TEXT_LOSSES = ("cosine", "hidden", "attention")


def uniform_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Student layer ``i`` → teacher layer ``round((i + 1) · L_t / L_s) − 1`` (halves up), as TinyBERT: evenly
    spread, the last onto the last."""
    if not 1 <= student_layers or not 1 <= teacher_layers:
        raise ValueError(f"Layer counts must be >= 1, but got ({student_layers=}, {teacher_layers=}).")
    return [max(0, math.floor((i + 1) * teacher_layers / student_layers + 0.5) - 1) for i in range(student_layers)]


def mapped_teacher_layers(student_depths: Sequence[int], teacher_layers: int) -> list[int]:
    """Every teacher layer that the uniform map of any of ``student_depths`` uses: the layers to cache."""
    return sorted({k for depth in student_depths for k in uniform_layer_map(depth, teacher_layers)})


@dataclass(frozen=True)
class TextDistillConfig:
    epochs: float = 3.0
    steps: int | None = None  # when set, overrides ``epochs``
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    cosine_weight: float = 1.0
    hidden_weight: float = 1.0
    attention_weight: float = 1.0
    attention_loss: str = "kl"  # or "mse" (TinyBERT's, on the probabilities)
    neighbours: int = 10  # k of the neighbour agreement
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.steps is not None and self.steps < 1) or self.epochs <= 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"The budget and learning rate must be positive, but got ({self.epochs=}, {self.steps=}, "
                             f"{self.batch_size=}, {self.lr=}).")
        if self.attention_loss not in ("kl", "mse"):
            raise ValueError(f"`attention_loss` must be 'kl' or 'mse', but got {self.attention_loss!r}.")
        if self.neighbours < 1:
            raise ValueError(f"`neighbours >= 1` must hold, but got {self.neighbours=}.")

    def total_steps(self, num_samples: int) -> int:
        return self.steps or max(1, math.ceil(self.epochs * math.ceil(num_samples / self.batch_size)))


@dataclass(frozen=True)
class TextFidelity:
    cosine: float  # mean cosine similarity of student and teacher embeddings of the same text
    neighbour_agreement: float  # mean |top-k neighbours by student ∩ by teacher| / k, among the texts
    k: int


def text_fidelity(student_embeddings: np.ndarray, teacher_embeddings: np.ndarray, k: int = 10) -> TextFidelity:
    """How well a student reproduces the teacher's embeddings (cosine) and its retrieval (neighbour agreement).

    Neighbours are by cosine similarity among the same texts, excluding the text itself; ``k`` is capped at
    ``N − 1``.
    """
    s, t = np.asarray(student_embeddings, np.float64), np.asarray(teacher_embeddings, np.float64)
    if s.ndim != 2 or t.ndim != 2 or len(s) != len(t) or len(s) < 2:
        raise ValueError(f"Student and teacher embeddings must be (N >= 2, dim) with the same N, but got "
                         f"({s.shape=}, {t.shape=}).")
    s = s / np.maximum(np.linalg.norm(s, axis=1, keepdims=True), 1e-12)
    t = t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
    cosine = float((s * t).sum(axis=1).mean()) if s.shape == t.shape else math.nan
    k = min(k, len(s) - 1)
    overlap = [len(set(a) & set(b)) for a, b in zip(_top_k(s @ s.T, k), _top_k(t @ t.T, k))]
    return TextFidelity(cosine=cosine, neighbour_agreement=float(np.mean(overlap)) / k, k=k)


def _top_k(similarity: np.ndarray, k: int) -> np.ndarray:
    np.fill_diagonal(similarity, -np.inf)
    return np.argpartition(-similarity, k - 1, axis=1)[:, :k]


@dataclass(frozen=True)
class TextDistillResult:
    cosine: float  # on the validation texts: the quality objective ("val_cosine")
    neighbour_agreement: float  # top-k, on the validation texts
    k: int
    steps: int
    seconds: float
    final_losses: dict[str, float]  # each term's value at the last step

    def to_dict(self) -> dict[str, float]:
        """The metrics, steps and seconds as one flat dict (e.g. for a trial's user attributes)."""
        flat = {key: value for key, value in asdict(self).items() if key != "final_losses"}
        return {**flat, **{f"loss_{name}": value for name, value in self.final_losses.items()}}


def principal_basis(tokens: torch.Tensor) -> torch.Tensor:
    """The (H, H) orthonormal principal directions of a teacher's (V, H) token table, strongest first.
    Computed once per teacher (an SVD of the whole table) and shared by every student built from it."""
    return torch.linalg.svd(tokens - tokens.mean(0), full_matrices=False).Vh.T


@torch.no_grad()
def init_from_teacher(student: nn.Module, tokens: torch.Tensor, positions: torch.Tensor | None,
                      basis: torch.Tensor) -> None:
    """Start ``student.tokens`` (and ``student.positions``) from the teacher's embedding tables, as DistilBERT
    starts from its teacher's weights: projected onto the tables' top principal directions (``basis``, from
    :func:`principal_basis`) when the student's embedding is narrower than the teacher's; a wider one takes
    the rotated tables in its first columns and keeps its random start in the rest. With 30k tokens and ~1k
    training sentences, most token rows would otherwise never move from their random start."""
    width = min(student.tokens.embedding_dim, tokens.shape[1])
    student.tokens.weight[:, :width].copy_(tokens[:student.tokens.num_embeddings] @ basis[:, :width])
    if positions is not None:
        rows = min(student.positions.num_embeddings, positions.shape[0])
        student.positions.weight[:rows, :width].copy_(positions[:rows] @ basis[:, :width])


@torch.no_grad()
def embed_texts(student: nn.Module, ids: np.ndarray, mask: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The student's float32 sentence embeddings, in eval mode."""
    was_training = student.training
    student.eval()
    try:
        return np.concatenate([student(torch.from_numpy(np.asarray(ids[i:i + batch_size])),
                                       torch.from_numpy(np.asarray(mask[i:i + batch_size]))).float().numpy()
                               for i in range(0, len(ids), batch_size)])
    finally:
        student.train(was_training)


class LayerwiseLoss(nn.Module):
    """The layer terms for one student and layer map; holds the learned hidden-state projections."""

    def __init__(self, student_hidden: Sequence[int], teacher_hidden: int, layer_map: Sequence[int],
                 attention_loss: str = "kl") -> None:
        super().__init__()
        self.layer_map = list(layer_map)
        self.projections = nn.ModuleList(nn.Linear(size, teacher_hidden) for size in student_hidden)
        self.attention_loss = attention_loss

    def hidden(self, student_states: Sequence[torch.Tensor], teacher_states: Sequence[torch.Tensor],
               mask: torch.Tensor) -> torch.Tensor:
        """Mean over the mapped layers of the masked MSE of projected student and teacher hidden states."""
        terms = [hidden_mse_loss(projection(s), t, mask)
                 for projection, s, t in zip(self.projections, student_states, teacher_states)]
        return torch.stack(terms).mean()

    def attention(self, student_attentions: Sequence[torch.Tensor], teacher_attentions: Sequence[torch.Tensor],
                  mask: torch.Tensor) -> torch.Tensor:
        """Mean over the mapped layers of the loss between head-averaged (N, S, S) attention distributions."""
        loss = attention_kl_loss if self.attention_loss == "kl" else attention_mse_loss
        terms = [loss(s.mean(dim=1, keepdim=True), t.unsqueeze(1), mask)
                 for s, t in zip(student_attentions, teacher_attentions)]
        return torch.stack(terms).mean()


def distill_text(student: nn.Module, data: TextData, outputs: TextTeacherOutputs, config: TextDistillConfig,
                 layer_map: Sequence[int] | None = None,
                 losses: Sequence[str] = TEXT_LOSSES) -> TextDistillResult:
    """Distil ``student`` from cached teacher outputs with the ``losses`` terms; score it on the validation split.

    ``layer_map[i]`` is the teacher layer that student layer ``i`` learns from (default: uniform over
    ``outputs.num_layers``); its teacher layers must be in ``outputs.hidden``/``outputs.attention`` for the
    ``hidden``/``attention`` terms.
    """
    unknown = sorted(set(losses) - set(TEXT_LOSSES))
    if unknown or not losses:
        raise ValueError(f"`losses` must be a non-empty subset of {TEXT_LOSSES}, but got {tuple(losses)}.")
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    ids, mask = torch.from_numpy(data.ids_train), torch.from_numpy(data.mask_train)
    with torch.no_grad():
        probe = student.eval()(ids[:2], mask[:2], return_layers=True)
    layerwise = None
    if "hidden" in losses or "attention" in losses:
        layer_map = list(layer_map) if layer_map is not None else uniform_layer_map(len(probe.hidden_states),
                                                                                    outputs.num_layers)
        if len(layer_map) != len(probe.hidden_states):
            raise ValueError(f"`layer_map` must give one teacher layer per student layer ({len(probe.hidden_states)}), "
                             f"but got {layer_map}.")
        for term, cached in (("hidden", outputs.hidden), ("attention", outputs.attention)):
            if term in losses and (missing := sorted(set(layer_map) - set(cached))):
                raise ValueError(f"The {term!r} term reads teacher layers {missing}, but the teacher outputs hold "
                                 f"layers {sorted(cached) or 'none'}; build them with text_teacher_outputs(..., "
                                 f"layers=mapped_teacher_layers(...)).")
        layerwise = LayerwiseLoss([h.shape[-1] for h in probe.hidden_states], outputs.train.shape[1], layer_map,
                                  config.attention_loss)
    params = [*student.parameters(), *(layerwise.parameters() if layerwise is not None else [])]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    total = config.total_steps(len(ids))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=total)
    weights = {"cosine": config.cosine_weight, "hidden": config.hidden_weight, "attention": config.attention_weight}
    student.train()
    start, step, terms = time.perf_counter(), 0, {}
    while step < total:
        for batch in torch.randperm(len(ids), generator=generator).split(config.batch_size):
            if step == total:
                break
            rows = np.sort(batch.numpy())  # sorted rows read the memory-mapped cache sequentially
            batch_mask = mask[rows]
            out = student(ids[rows], batch_mask, return_layers=True)
            terms = {}
            if "cosine" in losses:
                terms["cosine"] = cosine_embedding_loss(out.embedding, _cached(outputs.train, rows))
            if "hidden" in losses:
                teacher = [_cached(outputs.hidden[k], rows) for k in layer_map]
                terms["hidden"] = layerwise.hidden(out.hidden_states, teacher, batch_mask)
            if "attention" in losses:
                teacher = [_cached(outputs.attention[k], rows) for k in layer_map]
                terms["attention"] = layerwise.attention(out.attentions, teacher, batch_mask)
            loss = sum(weights[name] * value for name, value in terms.items())
            if not torch.isfinite(loss):
                raise DistillError(f"The training loss became {loss.item()} at step {step + 1} of {total} (learning "
                                   f"rate {config.lr}; terms { {n: round(v.item(), 4) for n, v in terms.items()} }); "
                                   "try a lower one.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
    seconds = time.perf_counter() - start
    fidelity = text_fidelity(embed_texts(student, data.ids_val, data.mask_val), outputs.val, config.neighbours)
    return TextDistillResult(cosine=fidelity.cosine, neighbour_agreement=fidelity.neighbour_agreement, k=fidelity.k,
                             steps=total, seconds=seconds,
                             final_losses={name: float(value.item()) for name, value in terms.items()})


def _cached(array: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array[rows])).float()
