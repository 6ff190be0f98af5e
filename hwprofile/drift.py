"""Latency across time: the canary baseline of a device, and models measured together, round-robin.

A device changes speed between measurements (a shared host, a laptop on battery, a throttling Jetson), so
latencies measured minutes apart are compared through the drift canary (:mod:`hwprofile.canary`): a
:class:`~hwprofile.CanaryBaseline` is the canary's latency at one moment, and ``profile(..., baseline=...)``
normalises a median to that moment (raw x baseline / canary now).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

from hwprofile.cache import MeasurementCache
from hwprofile.canary import canary_config, canary_path, canary_sha256
from hwprofile.config import MeasureConfig
from hwprofile.measure import measure_local
from hwprofile.measurement import CanaryBaseline, Measurement
from hwprofile.profile import measurement_key, profile
from hwprofile.remote.client import DeviceClient

BASELINE_READINGS = 5  # the median of 5: one reading at a busy moment does not set the baseline


def measure_baseline(config: MeasureConfig = MeasureConfig(), *, target: DeviceClient | str | None = None,
                     readings: int = BASELINE_READINGS) -> CanaryBaseline:
    """The canary's latency now with ``config``'s setup, here or on ``target``: the median of ``readings``
    measurements (with the default threshold and re-measurements: ``dataclasses.replace`` sets others)."""
    return _baseline_of(_median(_canary_measurements(config, _client(target), readings)))


def device_baseline(config: MeasureConfig = MeasureConfig(), *, cache: MeasurementCache | str | Path | None = None,
                    target: DeviceClient | str | None = None) -> CanaryBaseline:
    """The canary baseline of this device (or ``target``'s) and ``config``'s setup, kept in ``cache`` under the key
    of the canary's own measurement from the first time it was taken (stable), so that models profiled on different
    days are normalised to one moment. Without ``cache`` it is measured now."""
    client = _client(target)
    if cache is None:
        return _baseline_of(_median(_canary_measurements(config, client, BASELINE_READINGS)))
    cache = cache if isinstance(cache, MeasurementCache) else MeasurementCache(cache)
    short = canary_config(config)
    key = measurement_key(canary_sha256(), short, client)
    if (hit := cache.get(key)) is not None:
        return CanaryBaseline(hit["median_ms"], canary_sha256(), measured_at=hit["finished_at"])
    median = _median(_canary_measurements(config, client, BASELINE_READINGS))
    if median.latency.stable:
        cache.put(key, median.to_dict(), model_sha256=canary_sha256(), setup=short.setup())
    return _baseline_of(median)


def measure_together(paths: Sequence[str | Path], config: MeasureConfig, baseline: CanaryBaseline, *,
                     rounds: int = 3, target: DeviceClient | str | None = None) -> list[list[Measurement]]:
    """Measure ``paths`` round-robin ``rounds`` times (each round starting one model later), each with the canary
    beside it and normalised to ``baseline``, never from a cache and never re-measured (the median over the rounds
    absorbs a drifted one). Returns each model's measurements, one per round."""
    if rounds < 1:
        raise ValueError(f"`rounds` must be >= 1, but got {rounds=}.")
    client, once = _client(target), dataclasses.replace(baseline, remeasures=0)
    results: list[list[Measurement]] = [[] for _ in paths]
    for round_ in range(rounds):
        for step in range(len(paths)):
            index = (round_ + step) % len(paths)
            results[index].append(profile(paths[index], config, target=client, baseline=once))
    return results


def _client(target: DeviceClient | str | None) -> DeviceClient | None:
    return target if target is None or isinstance(target, DeviceClient) else DeviceClient(target)


def _canary_measurements(config: MeasureConfig, client: DeviceClient | None, readings: int) -> list[Measurement]:
    """``readings`` measurements of the canary alone, with its protocol (as beside a model)."""
    if readings < 1:
        raise ValueError(f"`readings` must be >= 1, but got {readings=}.")
    path, short = canary_path(), canary_config(config)
    if client is not None:
        return [client.profile(path, short) for _ in range(readings)]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return [measure_local(path, short, digest) for _ in range(readings)]


def _median(measurements: list[Measurement]) -> Measurement:
    """The measurement with the median latency (the upper one of an even count)."""
    return sorted(measurements, key=lambda m: m.latency.median_ms)[len(measurements) // 2]


def _baseline_of(measurement: Measurement) -> CanaryBaseline:
    return CanaryBaseline(measurement.latency.median_ms, canary_sha256(), measured_at=measurement.finished_at)


__all__ = ["BASELINE_READINGS", "device_baseline", "measure_baseline", "measure_together"]
