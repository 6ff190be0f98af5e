"""BERT-style encoder students for sentence embeddings: token ids in, a pooled embedding out.

A text student maps ``input_ids`` and ``attention_mask`` (both ``(N, seq_len)`` int64) to the mean of its
last hidden states over the valid tokens, projected to the teacher's embedding size. Attention is written
out by hand (no fused kernels), so the ONNX graph is plain MatMul/Softmax and the attention probabilities
are there for layer-wise distillation: ``forward(..., return_layers=True)`` gives them with the hidden states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn as nn

from search_spaces._registry import Arch, register_space

INPUT_NAMES = ("input_ids", "attention_mask")  # the graph inputs of an exported student, in order
_MASKED_SCORE = -1e4  # BERT's additive mask: exp() of it underflows to 0 in float32 softmax


class StudentLayers(NamedTuple):
    """What ``TextStudent.forward(..., return_layers=True)`` returns."""

    embedding: torch.Tensor  # (N, out_dim) pooled sentence embedding
    hidden_states: list[torch.Tensor]  # one (N, S, hidden) per encoder layer, after it
    attentions: list[torch.Tensor]  # one (N, heads, S, S) softmax probability tensor per encoder layer


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        if hidden % heads:
            raise ValueError(f"`hidden % heads == 0` must hold, but got ({hidden=}, {heads=}).")
        self.heads, self.head_dim = heads, hidden // heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, seq, hidden = x.shape
        q, k, v = (t.reshape(batch, seq, self.heads, self.head_dim).transpose(1, 2)
                   for t in self.qkv(x).chunk(3, dim=-1))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + mask_bias
        probs = scores.softmax(dim=-1)
        context = (probs @ v).transpose(1, 2).reshape(batch, seq, hidden)
        return self.out(context), probs


class EncoderLayer(nn.Module):
    """Post-LayerNorm BERT layer: attention and a GELU feed-forward, each with a residual."""

    def __init__(self, hidden: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.attention = SelfAttention(hidden, heads)
        self.norm1 = nn.LayerNorm(hidden, eps=1e-12)
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn), nn.GELU(), nn.Linear(ffn, hidden))
        self.norm2 = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attended, probs = self.attention(x, mask_bias)
        x = self.norm1(x + attended)
        return self.norm2(x + self.ffn(x)), probs


class TextStudent(nn.Module):
    """Token + position embeddings (factorised through ``embed`` < ``hidden`` dims if asked), encoder layers,
    masked mean pooling and a linear map to ``out_dim``."""

    def __init__(self, arch: Arch, max_len: int, out_dim: int, vocab_size: int) -> None:
        super().__init__()
        hidden, embed = arch["hidden"], arch["embed"]
        self.max_len = max_len
        self.tokens = nn.Embedding(vocab_size, embed)
        self.positions = nn.Embedding(max_len, embed)
        self.embed_norm = nn.LayerNorm(embed, eps=1e-12)
        self.embed_proj = nn.Linear(embed, hidden) if embed != hidden else nn.Identity()
        self.layers = nn.ModuleList(EncoderLayer(hidden, arch["heads"], hidden * arch["ffn_ratio"])
                                    for _ in range(arch["layers"]))
        self.head = nn.Linear(hidden, out_dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                return_layers: bool = False) -> torch.Tensor | StudentLayers:
        seq = input_ids.shape[1]
        if not torch.jit.is_tracing() and seq > self.max_len:
            raise ValueError(f"`seq_len <= max_len` must hold, but got input_ids.shape={tuple(input_ids.shape)} for "
                             f"a student built for sequences of at most {self.max_len} tokens.")
        x = self.embed_norm(self.tokens(input_ids) + self.positions.weight[:seq])
        x = self.embed_proj(x)
        mask = attention_mask.to(x.dtype)
        mask_bias = (1.0 - mask)[:, None, None, :] * _MASKED_SCORE
        hidden_states, attentions = [], []
        for layer in self.layers:
            x, probs = layer(x, mask_bias)
            hidden_states.append(x)
            attentions.append(probs)
        pooled = (x * mask[:, :, None]).sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp_min(1.0)
        embedding = self.head(pooled)
        if not torch.jit.is_tracing() and return_layers:  # the ONNX exporter passes the default as a tensor
            return StudentLayers(embedding, hidden_states, attentions)
        return embedding


def example_inputs(seq_len: int, batch: int = 1) -> dict[str, torch.Tensor]:
    """Inputs for tracing/export: ``input_ids`` (all 0, valid for any vocabulary) and an all-ones mask."""
    ids, mask = INPUT_NAMES
    shape = (batch, seq_len)
    return {ids: torch.zeros(shape, dtype=torch.int64), mask: torch.ones(shape, dtype=torch.int64)}


@register_space("transformer")
@dataclass(frozen=True)
class TransformerSpace:
    """Encoder depth, hidden size, attention heads, feed-forward ratio and a factorised embedding size.

    ``build(arch, (seq_len,), out_dim, vocab_size=V)``: ``seq_len`` is the longest input the student takes
    (its position table, and the length a search measures latency at); ``out_dim`` is the teacher's
    embedding size and ``vocab_size`` its tokenizer's.
    """

    name: str = "transformer"
    depths: tuple[int, ...] = (1, 2, 3, 4)
    hiddens: tuple[int, ...] = (64, 128, 192, 256, 320, 384)
    heads: tuple[int, ...] = (1, 2, 4, 8)  # all divide every hidden size above
    ffn_ratios: tuple[int, ...] = (1, 2, 3, 4)
    embed_divisors: tuple[int, ...] = (1, 2, 4)  # embed = hidden // divisor; 1: no factorisation

    def sample(self, trial: Any) -> Arch:
        hidden = trial.suggest_categorical("hidden", list(self.hiddens))
        return {
            "layers": trial.suggest_categorical("layers", list(self.depths)),
            "hidden": hidden,
            "heads": trial.suggest_categorical("heads", list(self.heads)),
            "ffn_ratio": trial.suggest_categorical("ffn_ratio", list(self.ffn_ratios)),
            "embed": hidden // trial.suggest_categorical("embed_divisor", list(self.embed_divisors)),
        }

    def smallest(self) -> Arch:
        hidden = min(self.hiddens)
        return {"layers": min(self.depths), "hidden": hidden, "heads": min(self.heads),
                "ffn_ratio": min(self.ffn_ratios), "embed": hidden // max(self.embed_divisors)}

    def largest(self) -> Arch:
        hidden = max(self.hiddens)
        return {"layers": max(self.depths), "hidden": hidden, "heads": max(h for h in self.heads if hidden % h == 0),
                "ffn_ratio": max(self.ffn_ratios), "embed": hidden // min(self.embed_divisors)}

    def build(self, arch: Arch, input_shape: tuple[int, ...], num_classes: int, *,
              vocab_size: int | None = None) -> TextStudent:
        """A :class:`TextStudent` for sequences of up to ``input_shape == (seq_len,)`` tokens, whose embedding
        has ``num_classes`` (the teacher's embedding size) dims."""
        if len(input_shape) != 1 or input_shape[0] < 1:
            raise ValueError(f"The transformer space takes input_shape=(seq_len,), but got {input_shape=}.")
        if vocab_size is None or vocab_size < 1:
            raise ValueError(f"The transformer space needs vocab_size=<the teacher tokenizer's vocabulary size>, "
                             f"but got {vocab_size=}.")
        if arch["hidden"] % arch["heads"] or not 0 < arch["embed"] <= arch["hidden"]:
            raise ValueError(f"`hidden % heads == 0` and `0 < embed <= hidden` must hold, but got {arch=}.")
        return TextStudent(arch, input_shape[0], num_classes, vocab_size)

