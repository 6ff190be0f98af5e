"""What the GPU backends share: PyTorch's CUDA runtime (buffers, streams, events)."""

from __future__ import annotations

from typing import Any

from hwprofile.errors import BackendUnavailableError


def cuda_torch() -> Any:
    """torch, checked to have a CUDA device (used for buffers, streams and events)."""
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError(f"No CUDA device is available to torch {torch.__version__} "
                                      f"(a CPU-only build, or no GPU/driver on this machine).")
    return torch
