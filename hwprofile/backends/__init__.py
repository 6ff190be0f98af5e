"""The built-in backends; importing this package registers them in :mod:`hwprofile.registry`.

``ort``: ONNX Runtime with any execution provider; ``tensorrt``: TensorRT engines built from the
ONNX file; ``torch-cuda``: PyTorch eager on a CUDA GPU (``torch.export`` programs).
"""

from hwprofile.backends import ort, tensorrt, torch_cuda

__all__ = ["ort", "tensorrt", "torch_cuda"]
