"""Measure what a model costs on a device: ONNX export, latency, memory, parameters, MACs, size.

``profile(model, config, cache=..., target=...)`` is the one call: it measures here (ONNX Runtime
with any execution provider, TensorRT, or PyTorch on CUDA) or on a device agent, through a
SQLite cache; given a canary ``baseline=`` (``measure_baseline``), beside the drift canary and normalised to it.
``nas device serve`` runs the agent (``hwprofile.remote.agent``, needs the ``agent`` extra).
"""

from hwprofile import backends  # noqa: F401  (registers the built-in backends)
from hwprofile.cache import MeasurementCache, cache_key
from hwprofile.canary import canary_bytes, canary_config, canary_path, canary_sha256
from hwprofile.config import MeasureConfig, parse_dims
from hwprofile.drift import device_baseline, fastest_normalised, measure_baseline, measure_together
from hwprofile.errors import AgentError, BackendUnavailableError, InvalidModelError, InvalidOptionError, ProfileError
from hwprofile.export import export_onnx, export_onnx_inputs, export_pt2
from hwprofile.fingerprint import device_fingerprint
from hwprofile.graph import load_onnx, model_stats
from hwprofile.lock import exclusive_measurement
from hwprofile.measure import measure_latency, measure_local
from hwprofile.measurement import CanaryBaseline, CanaryReading, Drift, LatencyStats, Measurement, ModelStats
from hwprofile.profile import profile
from hwprofile.quantize import CALIBRATION_METHODS, INT8_FORMATS, QuantizationError, quantize_int8
from hwprofile.registry import Backend, Runner, available_backends, backend_names, get_backend, register_backend
from hwprofile.remote import TOKEN_ENV, DeviceClient, measure_remote, read_token

__all__ = ["AgentError", "Backend", "BackendUnavailableError", "CALIBRATION_METHODS", "CanaryBaseline", "CanaryReading", "DeviceClient",
           "Drift", "INT8_FORMATS", "InvalidModelError", "InvalidOptionError", "LatencyStats", "MeasureConfig", "Measurement",
           "MeasurementCache", "ModelStats", "ProfileError", "QuantizationError", "Runner", "TOKEN_ENV", "available_backends",
           "backend_names", "cache_key", "canary_bytes", "canary_config", "canary_path", "canary_sha256",
           "device_baseline", "fastest_normalised", "device_fingerprint", "exclusive_measurement", "export_onnx", "export_onnx_inputs",
           "export_pt2", "get_backend", "load_onnx", "measure_baseline", "measure_latency", "measure_local",
           "measure_remote", "measure_together", "model_stats", "parse_dims", "profile", "quantize_int8", "read_token",
           "register_backend"]
