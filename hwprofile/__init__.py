"""Measure what a model costs on a device: ONNX export, latency, parameters, MACs, size."""

from hwprofile.errors import InvalidModelError
from hwprofile.export import export_onnx
from hwprofile.graph import ModelStats, load_onnx, model_stats
from hwprofile.ort import MeasureConfig, measure_latency
from hwprofile.stats import LatencyStats

__all__ = ["InvalidModelError", "LatencyStats", "MeasureConfig", "ModelStats", "export_onnx", "load_onnx",
           "measure_latency", "model_stats"]
