from __future__ import annotations


class InvalidModelError(ValueError):
    """An ONNX file that is missing, unreadable or not a valid model."""
