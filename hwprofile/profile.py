"""One call for a search or a CLI: measure a model here or on a device agent, through the cache, and (given a canary
baseline) with the drift canary beside it."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Callable
from pathlib import Path

from hwprofile.cache import MeasurementCache, cache_key
from hwprofile.config import MeasureConfig
from hwprofile.errors import InvalidModelError
from hwprofile.fingerprint import device_fingerprint
from hwprofile.graph import load_onnx
from hwprofile.measure import measure_local
from hwprofile.measurement import CanaryBaseline, CanaryReading, Measurement
from hwprofile.registry import get_backend
from hwprofile.remote.client import DeviceClient


def profile(model_path: str | Path, config: MeasureConfig = MeasureConfig(), *,
            cache: MeasurementCache | str | Path | None = None,
            target: DeviceClient | str | None = None, baseline: CanaryBaseline | None = None) -> Measurement:
    """Measure ``model_path`` with ``config`` on this machine, or on the device agent ``target``.

    With ``cache`` (a :class:`MeasurementCache` or its file), a model already measured with the same
    setup on the same kind of device is returned from it (``cached=True``) without measuring.
    ``target`` is a :class:`~hwprofile.DeviceClient` (reuse one across calls: it keeps the
    agent's fingerprint) or a URL, whose token then comes from ``$NAS_DEVICE_TOKEN``.

    With ``baseline``, the drift canary is measured interleaved with the model, block by block (in the same hold of
    the measurement lock, or the same agent request); while the canary is more than ``baseline.threshold`` away from
    the baseline (slower: a faster canary cannot be waited out), the model is measured again, up to
    ``baseline.remeasures`` times, after a wait that doubles each time (``baseline.backoff_s`` first); an attempt
    within the threshold is kept (a stable one first), else the nearest. The result's ``drift`` holds the model's
    latency normalised to the baseline (its ratio to the canary over the quiet block pairs, times the baseline) and
    ``latency_drift`` when the canary stayed off the baseline. A stable result is cached with the canary figures it
    was measured with, drifted or not, and a cached one is normalised with them (and flagged if they are off this
    baseline); one cached without them (or with another canary) is measured again.
    """
    path = Path(model_path)
    if not path.is_file():
        raise InvalidModelError(f"Model {str(path)!r} does not exist.")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    client = None
    if target is not None:
        client = target if isinstance(target, DeviceClient) else DeviceClient(target)
        if path.suffix == ".onnx":
            load_onnx(path)  # a bad file fails here, not after its upload
    key = None
    if cache is not None:
        cache = cache if isinstance(cache, MeasurementCache) else MeasurementCache(cache)
        key = measurement_key(digest, config, client)
        if (hit := cache.get(key)) is not None:
            cached = Measurement.from_dict(hit, cached=True)
            if baseline is None:
                return cached
            if cached.canary is not None and cached.canary.model_sha256 == baseline.model_sha256:
                return dataclasses.replace(cached, drift=baseline.check(cached.canary))

    def measure() -> Measurement:
        canary = baseline is not None
        return client.profile(path, config, canary=canary) if client is not None else \
            measure_local(path, config, digest, canary=canary)

    result = measure() if baseline is None else _nearest_baseline(measure, baseline)
    if cache is not None and key is not None and result.latency.stable:  # with its canary figures, drifted or not
        cache.put(key, dataclasses.replace(result, drift=None).to_dict(), model_sha256=digest, setup=config.setup())
    return result


def measurement_key(digest: str, config: MeasureConfig, client: DeviceClient | None) -> str:
    """The cache key of the model with sha256 ``digest`` measured with ``config`` here, or on ``client``'s device."""
    if client is not None:
        fingerprint, version = client.fingerprint(), client.backend_version(config.backend)
    else:
        fingerprint, version = device_fingerprint(), get_backend(config.backend).version()
    return cache_key(digest, fingerprint, config.setup(), version)


def _nearest_baseline(measure: Callable[[], Measurement], baseline: CanaryBaseline) -> Measurement:
    """Measure (with the canary) ``baseline.attempts`` times, then again, after a growing wait, while the canary
    stays slower than the fastest one met allows (:meth:`CanaryBaseline.slowed`); keep the fastest normalised
    attempt whose canary was not slowed (a stable one first), else the fastest of all."""
    attempts: list[Measurement] = []
    remeasured = 0
    while len(attempts) < baseline.attempts or (baseline.slowed(_reading(attempts[-1]))
                                                and remeasured < baseline.remeasures):
        if len(attempts) >= baseline.attempts:
            remeasured += 1
            time.sleep(baseline.wait_before(remeasured))
        attempts.append(measure())
    best = min(attempts, key=lambda attempt: (baseline.slowed(_reading(attempt)), not attempt.latency.stable,
                                              _reading(attempt).ratio))
    return dataclasses.replace(best, drift=baseline.check(_reading(best), remeasured))


def _reading(measurement: Measurement) -> CanaryReading:
    assert measurement.canary is not None, "measured with canary=True"
    return measurement.canary


__all__ = ["measurement_key", "profile"]
