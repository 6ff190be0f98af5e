"""The built-in teacher, a small ResNet trained once per dataset and cached, and :func:`load_teacher`, which picks it
or a model file.

Its training is designed for accuracy per CPU-second (bench/teacher.py measures it): early downsampling, BatchNorm,
channels that grow as the maps shrink, one residual block where the maps are smallest; augmented views of the
training images (:mod:`distill.image.augment`: crops, and mirrors when the run's augmentation is ``standard``),
AdamW with a one-cycle schedule on batches of 128 (fewer for small data sets), in channels-last format and under
bf16 autocast wherever the device computes bf16 natively (a CUDA GPU, or a CPU with AVX512-BF16 or AMX). No label
smoothing: it would flatten the soft targets that students learn from (Müller et al., "When does label smoothing
help?", NeurIPS 2019). It shows a progress bar
(epoch, loss, validation accuracy), saves a checkpoint every epoch and stops at a deadline with its checkpoint saved;
the next run resumes it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from distill.arrays import write_atomically
from distill.checkpoint import Checkpointing
from distill.device import Placement, placed
from distill.errors import DeadlineReached
from distill.image.augment import Views, default_pad
from distill.image.data import Dataset, Rows, row_loader
from distill.image.teachers import Teacher, TorchTeacher, check_teacher, file_teacher
from distill.image.train import evaluate
from distill.loop import LoopConfig, TrainingBar, fit

log = logging.getLogger(__name__)
TEACHER_EPOCHS = 15  # the default budget (bench/teacher.py: Fashion-MNIST test accuracy by epochs)
_VERSION = "r4"  # of the architecture and the recipe, in the cache key: a new version trains a new teacher
_RECIPE = LoopConfig(batch_size=128, lr=4e-3, weight_decay=0.05)
_MIN_STEPS_PER_EPOCH = 32  # small data sets take smaller batches (down to 16), so that a few epochs still train
_MIN_CROP_SIZE = 16  # smaller images are not cropped for the teacher's training
_MAX_STEM_SIZE = 32  # stride-2 stem convolutions halve larger images down to at most this many pixels


def _conv(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class Residual(nn.Module):
    """``x + f(x)`` with ``f`` two 3x3 convolutions with BatchNorm (the second's ReLU after the sum)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv(channels, channels), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(channels))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.body(x))


class TeacherCNN(nn.Module):
    """The built-in teacher, for any image size: stride-2 convolutions halve images larger than 32 px, a 3x3 stem
    convolution of ``width`` channels, two stages that (while the maps are at least 8 px) max-pool and double the
    channels, a residual block, global average pooling and a linear classifier (Fashion-MNIST: 0.4M parameters,
    22M multiply-adds). With ``mirror_average`` (for data whose mirror images keep their class), its outputs in eval
    mode are the mean of its logits on the image and on its mirror: the outputs students learn from and the accuracy
    it reports."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: int = 32,
                 mirror_average: bool = False) -> None:
        super().__init__()
        self.mirror_average = mirror_average
        channels, size = input_shape[0], min(input_shape[1:])
        layers: list[nn.Module] = []
        while size > _MAX_STEM_SIZE:
            layers += _conv(channels, width, stride=2)
            channels, size = width, math.ceil(size / 2)
        layers += _conv(channels, width)
        channels = width
        for stage_width in (2 * width, 4 * width):
            if size >= 8:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            layers += _conv(channels, stage_width)
            channels = stage_width
        layers.append(Residual(channels))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.features(x))
        if self.mirror_average and not self.training:  # test-time augmentation: the image and its mirror
            logits = (logits + self.classifier(self.features(x.flip(-1)))) / 2
        return logits


def load_teacher(spec: str, data: Dataset, cache_dir: Path, *, epochs: int = TEACHER_EPOCHS, seed: int = 0,
                 placement: Placement = Placement(), augment: str = "none", deadline: float | None = None) -> Teacher:
    """``builtin`` (trained on ``data`` once, on ``placement``'s device, cached under ``cache_dir``; see
    :func:`builtin_teacher` for ``augment`` and ``deadline``) or a path to a model file.

    The teacher is run on two samples to check that it maps the data's images to its classes.
    """
    teacher = builtin_teacher(data, cache_dir, epochs, seed, placement, augment=augment, deadline=deadline) \
        if spec == "builtin" else file_teacher(Path(spec).expanduser())
    check_teacher(teacher, data, spec)
    return teacher


def builtin_teacher(data: Dataset, cache_dir: Path, epochs: int = TEACHER_EPOCHS, seed: int = 0,
                    placement: Placement = Placement(), *, augment: str = "none",
                    deadline: float | None = None) -> TorchTeacher:
    """A :class:`TeacherCNN` trained on ``data`` for ``epochs`` on ``placement``'s device (it is kept on the CPU;
    bf16 autocast where the device computes bf16 natively), loaded from ``cache_dir`` when it was trained before (on
    any device).

    It trains on crops of the training images, mirrored too when ``augment`` is ``standard`` (a crop never changes
    a class; a mirror may), and then averages its outputs over each image and its mirror; images smaller than 16 px
    are not cropped (a 1-px shift of an 8x8 digit is an eighth of it, which slows the teacher's training more than
    it helps). Its training saves a checkpoint every epoch and resumes from one; when ``deadline`` (a ``time.time()``
    value) passes first, it stops with its checkpoint saved and raises :class:`DeadlineReached`.
    """
    height, width = data.input_shape[1:]
    pad = default_pad(height, width) if min(height, width) >= _MIN_CROP_SIZE else 0
    views = Views("standard" if augment == "standard" else "crop", epochs, seed, pad)
    identity = f"builtin-{_VERSION}-{data.fingerprint}-{views.kind}-p{pad}-e{epochs}-s{seed}"
    path = cache_dir / "teachers" / f"{identity}.pt"
    torch.manual_seed(seed)  # the same data and seed give the same teacher
    module = TeacherCNN(data.input_shape, data.num_classes, mirror_average=views.kind == "standard")
    if path.is_file():
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        log.info("Loaded the cached built-in teacher %s", path)
        return TorchTeacher(module, identity)
    checkpoint = path.with_suffix(".checkpoint")
    log.info("Training the built-in teacher on %s for %d epochs (once; cached; checkpoint %s)", data.source, epochs,
             checkpoint)
    with placed(module, placement.device):
        batch_size = max(16, min(_RECIPE.batch_size, len(data.train) // _MIN_STEPS_PER_EPOCH))
        stopped = train_teacher(module, data, views, replace(_RECIPE, epochs=epochs, seed=seed, batch_size=batch_size),
                                checkpoint, deadline, placement.with_native_bf16())
    if stopped is not None:
        raise DeadlineReached(f"The deadline passed while the built-in teacher trained: stopped at epoch "
                              f"{stopped:.2f} of {epochs}, checkpoint saved in {checkpoint}; run the same command "
                              "again to resume it.")
    write_atomically(path, lambda tmp: torch.save(module.state_dict(), tmp))
    checkpoint.unlink(missing_ok=True)
    return TorchTeacher(module, identity)


def train_teacher(module: nn.Module, data: Dataset, views: Views, config: LoopConfig, checkpoint: Path,
                  deadline: float | None = None, placement: Placement = Placement()) -> float | None:
    """Train ``module`` with cross-entropy on ``views`` of ``data.train`` (sample ``i`` takes view
    ``(epoch + offset_i) mod views.count``), with a progress bar on stderr, resuming from and saving to ``checkpoint``
    every epoch; returns the epoch where ``deadline`` (a ``time.time()`` value) stopped it (None: it finished)."""
    per_epoch = math.ceil(len(data.train) / config.batch_size)
    bar = TrainingBar("Teacher", config.total_steps(len(data.train)), per_epoch)
    bar.shown["val_acc"] = "-"  # the last epoch's validation accuracy

    def batch_losses(batch: Rows, step: int, total: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        x, _ = views.of_epoch(batch.x, batch.indices, step // per_epoch)
        logits = module(placement.put(data.normalise_tensor(x)))
        loss = F.cross_entropy(logits, placement.put(batch.y))
        return loss, {"ce": loss}

    def on_epoch(step: int, total: int) -> None:
        accuracy = evaluate(module, data).accuracy
        module.train()
        bar.shown["val_acc"] = f"{accuracy:.4f}"
        log.info("Teacher epoch %d of %d: training loss %.4f, validation accuracy %.4f", math.ceil(step / per_epoch),
                 bar.epochs, bar.epoch_loss(), accuracy)

    with bar:
        result = fit(module, config, len(data.train), batch_losses,
                     loader=lambda batches: row_loader(data.train, batches), progress=bar, placement=placement,
                     checkpoint=Checkpointing(checkpoint, per_epoch, deadline, on_epoch))
    return result.steps / per_epoch if result.stopped_at_deadline else None
