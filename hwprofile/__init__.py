"""Measure what a model costs on a device: ONNX export, latency, memory, parameters, MACs, size.

``profile(model, config, cache=..., target=...)`` is the one call: it measures here (ONNX Runtime
with any execution provider, TensorRT, or PyTorch on CUDA) or on a device agent, through a
SQLite cache. ``nas device serve`` runs the agent (``hwprofile.remote.agent``, needs the ``agent`` extra).
"""

from hwprofile import backends  # noqa: F401  (registers the built-in backends)
from hwprofile.cache import MeasurementCache, cache_key
from hwprofile.config import MeasureConfig, parse_dims
from hwprofile.errors import AgentError, BackendUnavailableError, InvalidModelError, InvalidOptionError, ProfileError
from hwprofile.export import export_onnx, export_onnx_inputs, export_pt2
from hwprofile.fingerprint import device_fingerprint
from hwprofile.graph import load_onnx, model_stats
from hwprofile.lock import exclusive_measurement
from hwprofile.measure import measure_latency, measure_local
from hwprofile.measurement import LatencyStats, Measurement, ModelStats
from hwprofile.profile import profile
from hwprofile.registry import Backend, Runner, available_backends, backend_names, get_backend, register_backend
from hwprofile.remote import TOKEN_ENV, DeviceClient, measure_remote, read_token

__all__ = ["AgentError", "Backend", "BackendUnavailableError", "DeviceClient", "InvalidModelError",
           "InvalidOptionError", "LatencyStats", "MeasureConfig", "Measurement", "MeasurementCache", "ModelStats",
           "ProfileError", "Runner", "TOKEN_ENV", "available_backends", "backend_names", "cache_key",
           "device_fingerprint", "exclusive_measurement", "export_onnx", "export_onnx_inputs", "export_pt2",
           "get_backend", "load_onnx", "measure_latency", "measure_local", "measure_remote", "model_stats",
           "parse_dims", "profile", "read_token", "register_backend"]
