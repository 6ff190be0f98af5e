"""One call for a search or a CLI: measure a model here or on a device agent, through the cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

from hwprofile.cache import MeasurementCache, cache_key
from hwprofile.config import MeasureConfig
from hwprofile.errors import InvalidModelError
from hwprofile.fingerprint import device_fingerprint
from hwprofile.graph import load_onnx
from hwprofile.measure import measure_local
from hwprofile.measurement import Measurement
from hwprofile.registry import get_backend
from hwprofile.remote.client import DeviceClient


def profile(model_path: str | Path, config: MeasureConfig = MeasureConfig(), *,
            cache: MeasurementCache | str | Path | None = None,
            target: DeviceClient | str | None = None) -> Measurement:
    """Measure ``model_path`` with ``config`` on this machine, or on the device agent ``target``.

    With ``cache`` (a :class:`MeasurementCache` or its file), a model already measured with the same
    setup on the same kind of device is returned from it (``cached=True``) without measuring.
    ``target`` is a :class:`~hwprofile.DeviceClient` (reuse one across calls: it keeps the
    agent's fingerprint) or a URL, whose token then comes from ``$NAS_DEVICE_TOKEN``.
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
        if client is not None:
            fingerprint, version = client.fingerprint(), client.backend_version(config.backend)
        else:
            fingerprint, version = device_fingerprint(), get_backend(config.backend).version()
        key = cache_key(digest, fingerprint, config.setup(), version)
        if (hit := cache.get(key)) is not None:
            return Measurement.from_dict(hit, cached=True)
    result = client.profile(path, config) if client is not None else measure_local(path, config, digest)
    if cache is not None and key is not None and result.latency.stable:
        cache.put(key, result.to_dict(), model_sha256=digest, setup=config.setup())
    return result


__all__ = ["profile"]
