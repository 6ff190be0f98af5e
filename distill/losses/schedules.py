"""Temperature schedules of the soft terms: constant or decaying over training, and the batch-size rule."""

from __future__ import annotations

TEMPERATURE_SCHEDULES = ("constant", "decay")


def batch_size_temperature(temperature: float, batch_size: int, reference_batch_size: int) -> float:
    """The batch-size rule ``T(B) = T0 · (B0 / B)^(1/4)``: a temperature ``T0`` tuned at batch size ``B0``,
    carried to batch size ``B`` (larger batches, lower temperature)."""
    if temperature <= 0 or batch_size < 1 or reference_batch_size < 1:
        raise ValueError(f"`temperature > 0`, `batch_size >= 1` and `reference_batch_size >= 1` must hold, but got "
                         f"({temperature=}, {batch_size=}, {reference_batch_size=}).")
    return temperature * (reference_batch_size / batch_size) ** 0.25


def scheduled_temperature(schedule: str, initial: float, final: float, step: int, total_steps: int) -> float:
    """The temperature at ``step`` (0-based) of ``total_steps``.

    ``constant``: ``initial`` throughout. ``decay``: linear from ``initial`` at the first step to ``final`` at
    the last, ``T(s) = T0 + (T1 − T0) · s / (S − 1)`` (annealing from soft to sharp targets).
    """
    if schedule not in TEMPERATURE_SCHEDULES:
        raise ValueError(f"Unknown temperature schedule {schedule!r}; known schedules: {', '.join(TEMPERATURE_SCHEDULES)}.")
    if not 0 <= step < total_steps:
        raise ValueError(f"`0 <= step < total_steps` must hold, but got ({step=}, {total_steps=}).")
    if schedule == "constant":
        return initial
    return initial + (final - initial) * step / max(1, total_steps - 1)
