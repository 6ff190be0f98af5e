"""Task-agnostic distillation of text students from cached teacher outputs, in the shared loop.

A student is any module with ``forward(input_ids, attention_mask, return_layers=True)`` returning an object
with ``embedding`` (N, D), ``hidden_states`` and ``attentions`` (one (N, S, H) and one (N, heads, S, S) per
layer), e.g. ``search_spaces.transformer.TextStudent``. It learns the terms of ``distill.losses.text``
(cosine, hidden, attention); quality is measured on the validation texts (``distill.text.metrics``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn as nn

from distill.device import Placement, module_device, placed
from distill.loop import LoopConfig, Rungs, TrainingBar, fit
from distill.losses.text import TEXT_LOSSES, TextCriterion
from distill.text.cache import TextTeacherOutputs
from distill.text.data import TextData, trim_padding
from distill.text.metrics import mean_cosine, text_fidelity



@dataclass(frozen=True)
class TextDistillConfig(LoopConfig):
    """The budget and optimiser (:class:`~distill.loop.LoopConfig`) and the terms' settings of a text run."""

    epochs: float = 3.0
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    cosine_weight: float = 1.0
    hidden_weight: float = 1.0
    attention_weight: float = 1.0
    similarity_weight: float = 1.0
    attention_loss: str = "kl"  # or "mse" (TinyBERT's, on the probabilities)
    similarity_temperature: float = 0.05  # of the similarity term's softmax over cosines: low, so that a text's
    # nearest neighbours in the batch carry most of the weight
    neighbours: int = 10  # k of the neighbour agreement

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.attention_loss not in ("kl", "mse"):
            raise ValueError(f"`attention_loss` must be 'kl' or 'mse', but got {self.attention_loss!r}.")
        if self.similarity_temperature <= 0:
            raise ValueError(f"`similarity_temperature > 0` must hold, but got {self.similarity_temperature=}.")
        if self.neighbours < 1:
            raise ValueError(f"`neighbours >= 1` must hold, but got {self.neighbours=}.")


@dataclass(frozen=True)
class TextDistillResult:
    cosine: float  # on the validation texts: the quality objective ("val_cosine")
    neighbour_agreement: float  # top-k, on the validation texts
    k: int
    steps: int
    seconds: float
    final_losses: dict[str, float]  # each term's value at the last step
    stopped_at_rung: int | None = None  # the rung where ``Rungs.should_stop`` ended training

    def to_dict(self) -> dict[str, float]:
        """The metrics, steps and seconds as one flat dict (e.g. for a trial's user attributes)."""
        flat = {key: value for key, value in asdict(self).items() if key != "final_losses"}
        return {**flat, **{f"loss_{name}": value for name, value in self.final_losses.items()}}


@torch.no_grad()
def embed_texts(student: nn.Module, ids: np.ndarray, mask: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The student's float32 sentence embeddings, in eval mode, on the student's device (each batch cut to its
    longest text)."""
    was_training = student.training
    student.eval()
    device = module_device(student)
    try:
        return np.concatenate([
            student(*(torch.from_numpy(array).to(device) for array in
                      trim_padding(np.asarray(ids[i:i + batch_size]), np.asarray(mask[i:i + batch_size]))))
            .float().cpu().numpy() for i in range(0, len(ids), batch_size)])
    finally:
        student.train(was_training)


def distill_text(student: nn.Module, data: TextData, outputs: TextTeacherOutputs, config: TextDistillConfig,
                 layer_map: Sequence[int] | None = None, losses: Sequence[str] = TEXT_LOSSES, *,
                 rungs: Rungs | None = None, placement: Placement = Placement(),
                 progress: bool = False) -> TextDistillResult:
    """Distil ``student`` from cached teacher outputs with the ``losses`` terms; score it on the validation split.

    An epoch is counted over the source's own training texts (``data.num_own_train``), whatever extra texts
    join them, so that extra texts do not grow the budget; every batch is drawn from all training texts.

    ``layer_map[i]`` is the teacher layer that student layer ``i`` learns from (default: uniform over
    ``outputs.num_layers``); its teacher layers must be in ``outputs.hidden``/``outputs.attention`` for the
    ``hidden``/``attention`` terms. ``rungs`` may stop the run early (the model they are shown is the student;
    :func:`validation_cosine` scores it). ``progress``: a progress bar on stderr (steps, epoch, mean loss), when
    stderr is a terminal. The student trains and is scored on ``placement.device``, then goes back to where it was.
    """
    with torch.no_grad():
        probe = student.eval()(torch.from_numpy(data.ids_train[:2]), torch.from_numpy(data.mask_train[:2]),
                               return_layers=True)
    criterion = TextCriterion(
        losses, teacher_embedding=outputs.train, student_hidden=[h.shape[-1] for h in probe.hidden_states],
        layer_map=layer_map, teacher_layers=outputs.num_layers, teacher_hidden=outputs.hidden,
        teacher_attention=outputs.attention, attention_loss=config.attention_loss,
        similarity_temperature=config.similarity_temperature,
        weights={"cosine": config.cosine_weight, "hidden": config.hidden_weight, "attention": config.attention_weight,
                 "similarity": config.similarity_weight})

    def batch_losses(indices: np.ndarray, step: int, total: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        indices = np.sort(indices)  # sorted rows read the memory-mapped cache sequentially
        batch_ids, batch_mask = (placement.put(torch.from_numpy(array)) for array in
                                 trim_padding(data.ids_train[indices], data.mask_train[indices]))
        terms = criterion(student(batch_ids, batch_mask, return_layers=True), batch_mask, indices)
        return criterion.combine(terms), terms

    steps = config.total_steps(data.num_own_train)
    bar = TrainingBar("Distilling", steps, math.ceil(data.num_own_train / config.batch_size)) \
        if progress else nullcontext()
    with placed(student, placement.device), bar as show:
        result = fit(student, replace(config, steps=steps), len(data.ids_train), batch_losses, criterion=criterion,
                     rungs=rungs, placement=placement, progress=show)
        embeddings = embed_texts(student, data.ids_val, data.mask_val)
    fidelity = text_fidelity(embeddings, outputs.val, config.neighbours)
    return TextDistillResult(cosine=fidelity.cosine, neighbour_agreement=fidelity.neighbour_agreement, k=fidelity.k,
                             steps=result.steps, seconds=result.seconds, final_losses=result.final_losses,
                             stopped_at_rung=result.stopped_at_rung)


def validation_cosine(student: nn.Module, data: TextData, outputs: TextTeacherOutputs) -> float:
    """The mean cosine of the student's and the teacher's embeddings of the validation texts (a rung's score)."""
    return mean_cosine(embed_texts(student, data.ids_val, data.mask_val), outputs.val)

