"""The shared training loop, alone and through both of its callers (image and text distillation)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import distill
from distill import CachedLogits, DistillError, TrainConfig, distill as run_distill, train
from distill.checkpoint import Checkpointing
from distill.image.data import Rows, row_loader
from distill.loop import LoopConfig, SeededBatches, TrainingBar, fit
from search_spaces import get_space


def _student(digits: distill.Dataset) -> nn.Module:
    torch.manual_seed(0)
    return get_space("mbconv").build(get_space("mbconv").smallest(), digits.input_shape, digits.num_classes)


def _text_student(tiny_teacher: distill.HFTeacher) -> nn.Module:
    torch.manual_seed(0)
    arch = {"layers": 2, "hidden": 32, "heads": 2, "ffn_ratio": 1, "embed": 32}
    return get_space("transformer").build(arch, (24,), tiny_teacher.hidden_size, vocab_size=tiny_teacher.vocab_size)


def test_budget_is_steps_or_epochs_of_batches() -> None:
    assert LoopConfig(epochs=2, batch_size=64).total_steps(100) == 4  # 2 batches per epoch
    assert LoopConfig(epochs=0.1, batch_size=64).total_steps(100) == 1  # at least one step
    assert LoopConfig(epochs=50, steps=7).total_steps(100) == 7
    assert LoopConfig(epochs=2, batch_size=10, max_steps=15).total_steps(100) == 15  # 20 steps, capped
    assert LoopConfig(epochs=1, batch_size=10, max_steps=15).total_steps(100) == 10  # under the cap
    assert LoopConfig(steps=40, max_steps=15).total_steps(100) == 40  # the cap is on epochs, not on steps
    with pytest.raises(ValueError, match=r"budget must be positive .* but got .*self.lr=0"):
        LoopConfig(lr=0)
    with pytest.raises(ValueError, match=r"`0 < warmup < 1` .* but got \(self.warmup=1.0"):
        LoopConfig(warmup=1.0)
    with pytest.raises(ValueError, match=r"self.rung_ema=1.0"):
        LoopConfig(rung_ema=1.0)


def _fit_rows(seed: int) -> tuple[distill.TrainResult, list[list[int]], list[tuple[int, int]]]:
    """A loop over 10 rows, 2 epochs of batches of 4: its result, the rows of every batch, the progress calls."""
    model, seen, progress = nn.Linear(1, 1), [], []

    def batch_losses(rows: np.ndarray, step: int, total: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        seen.append(rows.tolist())
        loss = model(torch.from_numpy(rows).float()[:, None]).pow(2).mean()
        return loss, {"square": loss}

    result = fit(model, LoopConfig(epochs=2, batch_size=4, seed=seed), 10, batch_losses,
                 progress=lambda step, total, loss: progress.append((step, total)))
    return result, seen, progress


def test_fit_batches_are_seeded_rows_and_progress_follows_every_step() -> None:
    result, seen, progress = _fit_rows(seed=3)
    assert result.steps == 6 and progress == [(step, 6) for step in range(1, 7)]
    assert [len(rows) for rows in seen] == [4, 4, 2] * 2
    assert sorted(sum(seen[:3], [])) == sorted(sum(seen[3:], [])) == list(range(10))  # each epoch: every row once
    assert set(result.final_losses) == {"square"} and np.isfinite(result.final_losses["square"])
    assert _fit_rows(seed=3)[1] == seen and _fit_rows(seed=4)[1] != seen  # the seed alone sets the order


def test_seeded_batches_are_one_permutation_per_epoch_from_the_seeded_generator() -> None:
    generator = torch.Generator().manual_seed(5)
    expected = [batch.tolist() for _ in range(3) for batch in torch.randperm(10, generator=generator).split(4)]
    assert [batch.tolist() for batch in SeededBatches(10, 4, 7, seed=5)] == expected[:7]
    assert len(SeededBatches(10, 4, 7, seed=5)) == 7


def test_a_data_loader_reads_the_same_seeded_batches_as_uint8_rows(digits: distill.Dataset) -> None:
    """The image side reads its batches through a DataLoader; the order is still the loop's."""
    model, plain, loaded = nn.Linear(1, 1), [], []
    config = LoopConfig(epochs=2, batch_size=100, seed=3)

    def loss() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        value = model(torch.ones(1, 1)).pow(2).mean()
        return value, {"square": value}

    def from_rows(rows: np.ndarray, step: int, total: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        plain.append(rows.tolist())
        return loss()

    def from_loader(batch: Rows, step: int, total: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loaded.append(batch.indices.tolist())
        assert batch.x.dtype == torch.uint8 and torch.equal(batch.x, torch.from_numpy(digits.train.x[batch.indices]))
        assert torch.equal(batch.y, torch.from_numpy(digits.train.y[batch.indices]))
        return loss()

    fit(model, config, len(digits.train), from_rows)
    fit(model, config, len(digits.train), from_loader, loader=lambda batches: row_loader(digits.train, batches))
    assert loaded == plain and len(loaded) == 2 * int(np.ceil(len(digits.train) / 100))
    after = torch.get_rng_state()
    torch.manual_seed(config.seed)
    assert torch.equal(after, torch.get_rng_state())  # the loader drew nothing from torch's global generator


def test_the_learning_rate_peaks_at_the_end_of_the_warmup() -> None:
    """A constant gradient makes each of Adam's steps about the learning rate (within the cycled momentum's bias): the
    weight's steps trace the schedule."""
    def steps_taken(warmup: float) -> list[float]:
        model, weights = nn.Linear(1, 1, bias=False), []
        fit(model, LoopConfig(steps=100, lr=0.1, weight_decay=0.0, warmup=warmup), 10,
            lambda rows, step, total: (model.weight.sum(), {}), after_step=lambda: weights.append(model.weight.item()))
        return list(-np.diff(weights))

    slow, fast = steps_taken(0.3), steps_taken(0.05)
    assert max(slow) == pytest.approx(0.1, rel=0.06) and max(fast) == pytest.approx(0.1, rel=0.06)
    assert slow[9] < 0.3 * max(slow) and fast[9] > 0.9 * max(fast)  # the 10th step: still rising, or near the peak
    assert 25 <= int(np.argmax(slow)) <= 35 and int(np.argmax(fast)) < 20


def test_rungs_score_the_moving_average_of_the_weights_under_rung_ema() -> None:
    """Weights that move by +1 each step: after n steps of a decay d, the average is the exponential mean of
    1..n, started at the weights before the first step (0)."""
    def scored(rung_ema: float) -> float:
        model, seen = nn.Linear(1, 1, bias=False), []
        nn.init.zeros_(model.weight)

        def batch_losses(rows: np.ndarray, step: int, total: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            return (model.weight * 0).sum(), {}

        def record(rung: int, scored_model: nn.Module) -> bool:
            seen.append(float(scored_model.weight))
            return True

        fit(model, LoopConfig(steps=9, weight_decay=0.0, rung_ema=rung_ema), 10, batch_losses,
            after_step=lambda: model.weight.data.add_(1.0), rungs=distill.Rungs((1 / 3,), record))
        assert float(model.weight) == 3.0  # stopped at the rung, after 3 steps
        return seen[0]

    assert scored(0.0) == 3.0
    assert scored(0.5) == pytest.approx(((0 * 0.5 + 1 * 0.5) * 0.5 + 2 * 0.5) * 0.5 + 3 * 0.5)


def test_image_runs_stop_at_a_rung_when_asked(digits: distill.Dataset, digits_outputs: distill.TeacherOutputs) -> None:
    asked: list[tuple[int, bool]] = []

    def stop_at_second_rung(rung: int, model: nn.Module) -> bool:
        asked.append((rung, model.training))
        return rung == 1

    rungs = distill.Rungs((1 / 9, 1 / 3), stop_at_second_rung)
    result = run_distill(_student(digits), digits, digits_outputs, TrainConfig(steps=90), rungs=rungs)
    assert asked == [(0, False), (1, False)]
    assert (result.steps, result.stopped_at_rung, result.to_dict()["stopped_at_rung"]) == (30, 1, 1)
    never = distill.Rungs((1 / 9, 1 / 3), lambda rung, model: False)
    assert run_distill(_student(digits), digits, digits_outputs, TrainConfig(steps=90), rungs=never).steps == 90


def test_text_runs_stop_at_a_rung_when_asked(tiny_teacher: distill.HFTeacher, tiny_text: distill.TextData,
                                             tiny_outputs: distill.TextTeacherOutputs) -> None:
    asked: list[tuple[int, bool]] = []
    student = _text_student(tiny_teacher)

    def stop_at_first_rung(rung: int, model: nn.Module) -> bool:
        asked.append((rung, model.training))
        assert model is student
        return True

    config = distill.TextDistillConfig(steps=12)
    result = distill.distill_text(student, tiny_text, tiny_outputs, config,
                                  rungs=distill.Rungs((1 / 4, 1 / 2), stop_at_first_rung))
    assert asked == [(0, False)]
    assert (result.steps, result.stopped_at_rung, result.to_dict()["stopped_at_rung"]) == (3, 0, 0)
    never = distill.Rungs((1 / 4, 1 / 2), lambda rung, model: False)
    result = distill.distill_text(_text_student(tiny_teacher), tiny_text, tiny_outputs, config, rungs=never)
    assert (result.steps, result.stopped_at_rung) == (12, None)


def test_image_nan_loss_stops_with_a_clear_error(digits: distill.Dataset,
                                                 digits_outputs: distill.TeacherOutputs) -> None:
    class Diverging(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1)) * float("nan")

    with pytest.raises(DistillError, match="loss became nan at step 1 of"):
        train(Diverging(), digits, CachedLogits(digits_outputs.train), TrainConfig(steps=5))


def test_text_nan_loss_stops_with_a_clear_error(tiny_teacher: distill.HFTeacher, tiny_text: distill.TextData,
                                                tiny_outputs: distill.TextTeacherOutputs) -> None:
    student = _text_student(tiny_teacher)
    with torch.no_grad():
        student.tokens.weight.fill_(float("nan"))
    with pytest.raises(DistillError, match=r"loss became nan at step 1 of 5 \(learning rate 0.001; terms "
                                           r"\{'cosine': nan\}\)"):
        distill.distill_text(student, tiny_text, tiny_outputs, distill.TextDistillConfig(steps=5), losses=("cosine",))


def _fit_dropout(checkpoint: Checkpointing | None) -> tuple[nn.Module, distill.TrainResult, list[list[int]]]:
    """3 epochs of 3 batches of a model with dropout (so torch's RNG matters), with ``checkpoint``."""
    torch.manual_seed(0)
    model, seen = nn.Sequential(nn.Linear(1, 8), nn.Dropout(0.5), nn.Linear(8, 1)), []

    def batch_losses(rows: np.ndarray, step: int, total: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        seen.append(rows.tolist())
        loss = (model(torch.from_numpy(rows).float()[:, None]) - 1).pow(2).mean()
        return loss, {"square": loss}

    result = fit(model, LoopConfig(epochs=3, batch_size=4, seed=2), 10, batch_losses, checkpoint=checkpoint)
    return model, result, seen


def test_a_run_stopped_at_its_deadline_resumes_where_it_stopped_to_the_same_weights(tmp_path: Path) -> None:
    whole, result, seen = _fit_dropout(None)
    assert result.steps == 9 and not result.stopped_at_deadline
    path = tmp_path / "run.checkpoint"
    parts = []
    for _ in range(2):  # the deadline has passed: each run takes one step, saves and stops
        _, stopped, part = _fit_dropout(Checkpointing(path, every=3, deadline=0.0))
        assert stopped.stopped_at_deadline and torch.load(path)["step"] == stopped.steps
        parts.append(part)
    assert stopped.steps == 2
    resumed, result, rest = _fit_dropout(Checkpointing(path, every=3))
    assert result.steps == 9 and not result.stopped_at_deadline
    assert parts[0] + parts[1] + rest == seen  # the same batches, in the same order
    for mine, theirs in zip(resumed.state_dict().values(), whole.state_dict().values()):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)


def test_checkpoints_are_saved_every_epoch_and_announced(tmp_path: Path) -> None:
    path, saved = tmp_path / "run.checkpoint", []

    def on_epoch(step: int, total: int) -> None:
        saved.append((step, torch.load(path)["step"] if path.is_file() else None))

    _fit_dropout(Checkpointing(path, every=3, on_epoch=on_epoch))
    assert saved == [(3, 3), (6, 6), (9, 6)]  # the last step is not saved: the caller keeps the finished model


def test_the_training_bar_shows_the_mean_loss_of_the_epoch_so_far() -> None:
    with TrainingBar("test", total=6, per_epoch=3) as bar:
        assert bar.epochs == 2 and math.isnan(bar.epoch_loss())
        for step, loss in ((1, 1.0), (2, 3.0), (3, 5.0)):
            bar(step, 6, torch.tensor(loss))
        assert bar.epoch_loss() == 3.0  # what the teacher logs at the epoch's end
        bar(4, 6, torch.tensor(10.0))
        assert bar.epoch_loss() == 10.0  # a new epoch starts afresh
    with TrainingBar("resumed", total=6, per_epoch=3) as resumed:
        resumed(4, 6, torch.tensor(2.0))  # a run resumed at its second epoch
        assert resumed.epoch_loss() == 2.0
