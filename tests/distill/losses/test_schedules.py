from __future__ import annotations

import pytest

from distill import TrainConfig
from distill.losses.schedules import batch_size_temperature, scheduled_temperature


def test_batch_size_rule_is_the_fourth_root_of_the_batch_ratio() -> None:
    # T(B) = T0 · (B0 / B)^(1/4): 16x the batch halves T; 1/16 of it doubles T.
    assert batch_size_temperature(4.0, 1024, 64) == pytest.approx(2.0)
    assert batch_size_temperature(4.0, 4, 64) == pytest.approx(8.0)
    assert batch_size_temperature(3.0, 128, 128) == 3.0
    assert batch_size_temperature(4.0, 128, 64) == pytest.approx(4.0 / 2**0.25)
    with pytest.raises(ValueError, match=r"but got \(temperature=4.0, batch_size=0, reference_batch_size=64\)"):
        batch_size_temperature(4.0, 0, 64)


def test_decay_is_linear_from_the_initial_to_the_final_temperature() -> None:
    # 5 steps from 4 to 1: 4, 3.25, 2.5, 1.75, 1.
    values = [scheduled_temperature("decay", 4.0, 1.0, step, 5) for step in range(5)]
    assert values == pytest.approx([4.0, 3.25, 2.5, 1.75, 1.0])
    assert scheduled_temperature("decay", 4.0, 1.0, 0, 1) == 4.0  # a single step keeps the initial value
    assert [scheduled_temperature("constant", 4.0, 1.0, s, 3) for s in range(3)] == [4.0, 4.0, 4.0]


def test_schedule_errors_name_the_values() -> None:
    with pytest.raises(ValueError, match="Unknown temperature schedule 'cosine'; known schedules: constant, decay"):
        scheduled_temperature("cosine", 4.0, 1.0, 0, 5)
    with pytest.raises(ValueError, match=r"`0 <= step < total_steps` must hold, but got \(step=5, total_steps=5\)"):
        scheduled_temperature("decay", 4.0, 1.0, 5, 5)
    with pytest.raises(ValueError, match="Unknown temperature schedule 'cosine'"):
        TrainConfig(temperature_schedule="cosine")


def test_train_config_combines_the_schedule_and_the_batch_size_rule() -> None:
    config = TrainConfig(temperature=4.0, final_temperature=2.0, temperature_schedule="decay", batch_size=256,
                         reference_batch_size=16)
    # Decay 4 → 2 over 3 steps, each scaled by (16 / 256)^(1/4) = 1/2.
    assert [config.temperature_at(step, 3) for step in range(3)] == pytest.approx([2.0, 1.5, 1.0])
    assert TrainConfig(temperature=3.0).temperature_at(7, 10) == 3.0
