"""Latency across time: the canary baseline of a device, and models measured together, round-robin.

A device changes speed between measurements (a shared host, a laptop on battery, a throttling Jetson), so
latencies measured minutes apart are compared through the drift canary (:mod:`hwprofile.canary`): a
:class:`~hwprofile.CanaryBaseline` is the canary's latency at one moment, and ``profile(..., baseline=...)``
normalises a median to that moment (raw x baseline / canary now).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Sequence
from pathlib import Path

from hwprofile.cache import MeasurementCache
from hwprofile.canary import canary_config, canary_path, canary_sha256
from hwprofile.config import MeasureConfig
from hwprofile.measure import measure_local
from hwprofile.measurement import CanaryBaseline, Measurement
from hwprofile.profile import measurement_key, profile
from hwprofile.remote.client import DeviceClient

BASELINE_READINGS = 5  # the fastest of 5 readings, a short pause apart: a load only slows, and one that
BASELINE_PAUSE_S = 0.2  # passes within a second does not set the baseline (a median of 5 once read 17% slow)


def measure_baseline(config: MeasureConfig = MeasureConfig(), *, target: DeviceClient | str | None = None,
                     readings: int = BASELINE_READINGS) -> CanaryBaseline:
    """The canary's latency now with ``config``'s setup, here or on ``target``: the fastest of ``readings``
    measurements (with the default threshold and re-measurements: ``dataclasses.replace`` sets others)."""
    return _baseline_of(_fastest(_canary_measurements(config, _client(target), readings)))


def device_baseline(config: MeasureConfig = MeasureConfig(), *, cache: MeasurementCache | str | Path | None = None,
                    target: DeviceClient | str | None = None) -> CanaryBaseline:
    """The canary baseline of this device (or ``target``'s) and ``config``'s setup, kept in ``cache`` under the key
    of the canary's own measurement from the first time it was taken (stable), so that models profiled on different
    days are normalised to one moment. Without ``cache`` it is measured now."""
    client = _client(target)
    if cache is None:
        return _baseline_of(_fastest(_canary_measurements(config, client, BASELINE_READINGS)))
    cache = cache if isinstance(cache, MeasurementCache) else MeasurementCache(cache)
    short = canary_config(config)
    key = measurement_key(canary_sha256(), short, client)
    if (hit := cache.get(key)) is not None:
        return CanaryBaseline(hit["median_ms"], canary_sha256(), measured_at=hit["finished_at"])
    fastest = _fastest(_canary_measurements(config, client, BASELINE_READINGS))
    if fastest.latency.stable:
        cache.put(key, fastest.to_dict(), model_sha256=canary_sha256(), setup=short.setup())
    return _baseline_of(fastest)


def measure_together(paths: Sequence[str | Path], config: MeasureConfig, baseline: CanaryBaseline, *,
                     rounds: int = 3, target: DeviceClient | str | None = None) -> list[list[Measurement]]:
    """Measure ``paths`` round-robin ``rounds`` times (each round starting one model later), each with the canary
    beside it and normalised to ``baseline``, never from a cache and never re-measured (the rounds are the attempts:
    :func:`fastest_normalised` of them). Returns each model's measurements, one per round."""
    if rounds < 1:
        raise ValueError(f"`rounds` must be >= 1, but got {rounds=}.")
    client, once = _client(target), dataclasses.replace(baseline, attempts=1, remeasures=0)
    results: list[list[Measurement]] = [[] for _ in paths]
    for round_ in range(rounds):
        for step in range(len(paths)):
            index = (round_ + step) % len(paths)
            results[index].append(profile(paths[index], config, target=client, baseline=once))
    return results


def fastest_normalised(measurements: Sequence[Measurement]) -> float:
    """The lowest normalised latency of one model's measurements (rounds, attempts): a load the canary did not feel,
    or a slow session, only slows a measurement."""
    values = [m.normalised_ms for m in measurements if m.normalised_ms is not None]
    if not values:
        raise ValueError("No measurement was normalised to a canary baseline.")
    return min(values)


def _client(target: DeviceClient | str | None) -> DeviceClient | None:
    return target if target is None or isinstance(target, DeviceClient) else DeviceClient(target)


def _canary_measurements(config: MeasureConfig, client: DeviceClient | None, readings: int) -> list[Measurement]:
    """``readings`` measurements of the canary alone, with its protocol (as beside a model),
    :data:`BASELINE_PAUSE_S` apart."""
    if readings < 1:
        raise ValueError(f"`readings` must be >= 1, but got {readings=}.")
    path, short = canary_path(), canary_config(config)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    measurements = []
    for reading in range(readings):
        if reading:
            time.sleep(BASELINE_PAUSE_S)
        measurements.append(client.profile(path, short) if client is not None else measure_local(path, short, digest))
    return measurements


def _fastest(measurements: list[Measurement]) -> Measurement:
    return min(measurements, key=lambda m: m.latency.median_ms)


def _baseline_of(measurement: Measurement) -> CanaryBaseline:
    return CanaryBaseline(measurement.latency.median_ms, canary_sha256(), measured_at=measurement.finished_at)


__all__ = ["BASELINE_PAUSE_S", "BASELINE_READINGS", "device_baseline", "fastest_normalised", "measure_baseline", "measure_together"]
