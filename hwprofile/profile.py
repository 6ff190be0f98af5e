"""One call for a search or a CLI: measure a model here or on a device agent, through the cache."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hwprofile.backends import get_backend
from hwprofile.cache import MeasurementCache, cache_key
from hwprofile.config import MeasureConfig
from hwprofile.errors import InvalidModelError
from hwprofile.fingerprint import device_fingerprint
from hwprofile.graph import ModelStats, load_onnx
from hwprofile.measure import measure_with_setup
from hwprofile.stats import LatencyStats

if TYPE_CHECKING:
    from hwprofile.client import DeviceClient

_META = ("device", "model_sha256", "started_at", "finished_at", "target", "cached")


@dataclass(frozen=True)
class Measurement:
    """Latency statistics and model statistics of one model file, with where and how they were taken."""

    latency: LatencyStats
    model: ModelStats
    setup: dict[str, Any]  # backend, backend_version, provider, threads, spinning, batch, dims, precision, ...
    device: dict[str, Any]  # fingerprint of the machine that measured (see hwprofile.fingerprint)
    model_sha256: str
    started_at: float  # wall-clock seconds (time.time()) around the measurement, on the measuring machine
    finished_at: float
    target: str | None = None  # the device agent's URL; None when measured on this machine
    cached: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # anything else an agent reported

    def to_dict(self) -> dict[str, Any]:
        """One flat JSON object: latency fields, ``params``/``macs``/``size_bytes``, setup fields, then the rest."""
        return {**self.latency.to_dict(), **self.model.to_dict(), **self.setup, "device": self.device,
                "model_sha256": self.model_sha256, "started_at": self.started_at, "finished_at": self.finished_at,
                "target": self.target, "cached": self.cached, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> Measurement:
        """The inverse of :meth:`to_dict` (``overrides`` replace top-level fields, e.g. ``cached=True``)."""
        data = {**data, **overrides}
        latency_keys = {f.name for f in fields(LatencyStats)}
        model_keys = {f.name for f in fields(ModelStats)}
        rest = {k: v for k, v in data.items() if k not in latency_keys | model_keys | set(_META)}
        extra = {"agent": rest.pop("agent")} if "agent" in rest else {}
        return cls(latency=LatencyStats.from_dict(data), model=ModelStats(**{k: data[k] for k in model_keys}),
                   setup=rest, device=data.get("device", {}), model_sha256=data["model_sha256"],
                   started_at=data["started_at"], finished_at=data["finished_at"], target=data.get("target"),
                   cached=bool(data.get("cached", False)), extra=extra)


def profile(model_path: str | Path, config: MeasureConfig = MeasureConfig(), *,
            cache: MeasurementCache | str | Path | None = None,
            target: DeviceClient | str | None = None) -> Measurement:
    """Measure ``model_path`` with ``config`` on this machine, or on the device agent ``target``.

    With ``cache`` (a :class:`MeasurementCache` or its file), a model already measured with the same
    setup on the same kind of device is returned from it (``cached=True``) without measuring.
    ``target`` is a :class:`~hwprofile.client.DeviceClient` (reuse one across calls: it keeps the
    agent's fingerprint) or a URL, whose token then comes from ``$NAS_DEVICE_TOKEN``.
    """
    path = Path(model_path)
    if not path.is_file():
        raise InvalidModelError(f"Model {str(path)!r} does not exist.")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    client = None
    if target is not None:
        from hwprofile.client import DeviceClient

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


def measure_local(path: str | Path, config: MeasureConfig = MeasureConfig(), digest: str | None = None) -> Measurement:
    """Check the model (its statistics first: a bad file fails before any long work), then measure it here."""
    path = Path(path)
    model = get_backend(config.backend).model_stats(path)
    digest = digest or hashlib.sha256(path.read_bytes()).hexdigest()
    run = measure_with_setup(path, config)
    return Measurement(latency=run.stats, model=model, setup=run.setup, device=device_fingerprint(),
                       model_sha256=digest, started_at=run.started_at, finished_at=run.finished_at)


__all__ = ["Measurement", "measure_local", "profile"]
