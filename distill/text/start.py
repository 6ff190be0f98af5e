"""Students that start from their teacher's weights, as DistilBERT starts from every other layer of BERT.

The student's hidden states live in a basis ``R`` (H × h, orthonormal columns) of the teacher's: the identity at
the teacher's width, else the teacher token table's top ``h`` principal directions (:func:`principal_basis`). A
teacher matrix that reads hidden states becomes ``W R``, one that writes them ``Rᵀ W``; a LayerNorm keeps the
diagonal of ``Rᵀ diag(γ) R``, scaled by ``√(H/h)`` (a normalised h-vector is that much shorter than the H-vector it
stands for). Each student layer takes a teacher layer (:func:`start_layers`) and, of it, the strongest attention
heads and feed-forward units that fit (the norm of what reads into a unit times the norm of what it writes). A
student of the teacher's width, depth, heads and feed-forward size is the teacher itself: it reproduces its
embeddings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

LAYER_KEYS = ("attention.qkv.weight", "attention.qkv.bias", "attention.out.weight", "attention.out.bias",
              "norm1.weight", "norm1.bias", "ffn.0.weight", "ffn.0.bias", "ffn.2.weight", "ffn.2.bias",
              "norm2.weight", "norm2.bias")
"""An encoder layer's weights, named as in ``search_spaces.transformer.EncoderLayer`` (post-LayerNorm BERT layer)."""


@dataclass(frozen=True)
class TeacherWeights:
    """What a text student can start from: a BERT-style teacher's weights, read once (``HFTeacher.weights()``)."""

    tokens: torch.Tensor  # (V, H) token embedding table
    positions: torch.Tensor | None  # (P, H) position table (with the token-type-0 row added, as BERT does)
    norm: tuple[torch.Tensor, torch.Tensor] | None  # the embedding LayerNorm's (weight, bias); None: layers unused
    layers: tuple[dict[str, torch.Tensor], ...]  # one per encoder layer, keyed by LAYER_KEYS; () for embeddings only
    heads: int  # the teacher's attention heads
    basis: torch.Tensor  # (H, H) principal directions of ``tokens`` (:func:`principal_basis`)

    def __post_init__(self) -> None:
        for index, layer in enumerate(self.layers):
            if set(layer) != set(LAYER_KEYS):
                raise ValueError(f"Teacher layer {index} must hold exactly {list(LAYER_KEYS)}, but holds "
                                 f"{sorted(layer)}.")


def principal_basis(tokens: torch.Tensor) -> torch.Tensor:
    """The (H, H) orthonormal principal directions of a teacher's (V, H) token table, strongest first.
    Computed once per teacher (an SVD of the whole table) and shared by every student built from it."""
    return torch.linalg.svd(tokens - tokens.mean(0), full_matrices=False).Vh.T


def start_layers(student_layers: int, teacher_layers: int) -> list[int]:
    """The teacher layer each student layer starts from: evenly spaced from the first (DistilBERT's every k-th)."""
    return [i * teacher_layers // student_layers for i in range(student_layers)]


@torch.no_grad()
def init_from_teacher(student: nn.Module, teacher: TeacherWeights) -> None:
    """Start ``student`` (a ``search_spaces.transformer.TextStudent``) from ``teacher``'s weights, projected onto the
    basis of the module docstring. Its token and position tables always start from the teacher's (a wider one takes
    them in its first columns and keeps its random start in the rest: with 30k tokens and ~1k training sentences,
    most token rows would otherwise never move); its LayerNorms, layers and head too when it is no wider than the
    teacher and the teacher's layers are known."""
    width, embed, hidden = teacher.tokens.shape[1], student.tokens.embedding_dim, student.head.in_features
    rotate = _basis(teacher, min(embed, width))
    student.tokens.weight[:, :rotate.shape[1]].copy_(teacher.tokens[:student.tokens.num_embeddings] @ rotate)
    if teacher.positions is not None:
        rows = min(student.positions.num_embeddings, teacher.positions.shape[0])
        student.positions.weight[:rows, :rotate.shape[1]].copy_(teacher.positions[:rows] @ rotate)
    if not teacher.layers or teacher.norm is None or hidden > width or student.head.out_features != width:
        return
    r_embed, r_hidden = _basis(teacher, embed), _basis(teacher, hidden)
    if embed == hidden:
        _set_norm(student.embed_norm, *teacher.norm, r_hidden)
    else:  # normalise the embed-wide sum, then map it to the hidden states with the teacher's LayerNorm folded in
        student.embed_norm.reset_parameters()
        student.embed_proj.weight.copy_(r_hidden.T @ (teacher.norm[0][:, None] * r_embed) * math.sqrt(width / embed))
        student.embed_proj.bias.copy_(r_hidden.T @ teacher.norm[1])
    for layer, index in zip(student.layers, start_layers(len(student.layers), len(teacher.layers))):
        _init_layer(layer, teacher.layers[index], teacher.heads, r_hidden)
    student.head.weight.copy_(r_hidden)
    student.head.bias.zero_()


def _basis(teacher: TeacherWeights, dims: int) -> torch.Tensor:
    """``R``: the identity at the teacher's width, else its top ``dims`` principal directions."""
    width = teacher.basis.shape[0]
    return torch.eye(width) if dims == width else teacher.basis[:, :dims]


def _set_norm(norm: nn.LayerNorm, weight: torch.Tensor, bias: torch.Tensor, basis: torch.Tensor) -> None:
    scale = math.sqrt(basis.shape[0] / basis.shape[1])
    norm.weight.copy_(((basis * weight[:, None]) * basis).sum(0) * scale)
    norm.bias.copy_(basis.T @ bias)


def _strongest(reads: torch.Tensor, writes: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` units (rows of ``reads``, columns of ``writes``) with the largest norm products, in order."""
    return (reads.norm(dim=1) * writes.norm(dim=0)).topk(count).indices.sort().values


def _init_layer(layer: nn.Module, weights: dict[str, torch.Tensor], teacher_heads: int, basis: torch.Tensor) -> None:
    """One student encoder layer from one teacher layer (its strongest heads and feed-forward units)."""
    attention, hidden = layer.attention, basis.shape[1]
    width = basis.shape[0]
    head_dim = width // teacher_heads
    qkv_w, qkv_b = weights["attention.qkv.weight"].chunk(3), weights["attention.qkv.bias"].chunk(3)
    out_w = weights["attention.out.weight"]
    heads_needed = math.ceil(hidden / head_dim)
    per_head = (qkv_w[2].reshape(teacher_heads, head_dim * width), out_w.T.reshape(teacher_heads, head_dim * width).T)
    heads = _strongest(*per_head, heads_needed)
    dims = (heads[:, None] * head_dim + torch.arange(head_dim)).flatten()[:hidden]
    query_scale = math.sqrt(attention.head_dim / head_dim)  # scores are divided by √(student head dim)
    scales = (query_scale, 1.0, 1.0)
    attention.qkv.weight.copy_(torch.cat([w[dims] @ basis * s for w, s in zip(qkv_w, scales)]))
    attention.qkv.bias.copy_(torch.cat([b[dims] * s for b, s in zip(qkv_b, scales)]))
    attention.out.weight.copy_(basis.T @ out_w[:, dims])
    attention.out.bias.copy_(basis.T @ weights["attention.out.bias"])
    _set_norm(layer.norm1, weights["norm1.weight"], weights["norm1.bias"], basis)
    up, down = layer.ffn[0], layer.ffn[2]
    teacher_units = len(weights["ffn.0.bias"])
    units = _strongest(weights["ffn.0.weight"], weights["ffn.2.weight"], min(up.out_features, teacher_units))
    kept = len(units)  # a feed-forward wider than the teacher's: the extra units start writing nothing
    up.weight[:kept].copy_(weights["ffn.0.weight"][units] @ basis)
    up.bias[:kept].copy_(weights["ffn.0.bias"][units])
    down.weight.zero_()
    down.weight[:, :kept].copy_(basis.T @ weights["ffn.2.weight"][:, units])
    down.bias.copy_(basis.T @ weights["ffn.2.bias"])
    _set_norm(layer.norm2, weights["norm2.weight"], weights["norm2.bias"], basis)
