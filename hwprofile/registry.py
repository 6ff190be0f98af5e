"""Backends that run a model file on this machine: a small protocol plus a registry by name.

A :class:`Backend` opens a model into a :class:`Runner` whose inputs are already bound; the
measurement protocol (warm-up, timed runs, statistics) lives in :mod:`hwprofile.measure` and is
the same for every backend. Heavy imports (TensorRT, torch) happen inside ``open``/``version``,
so listing backends is cheap and a missing package is an error only when its backend is used.
Importing :mod:`hwprofile` registers the built-in ones (:mod:`hwprofile.backends`).

A leaf that plugins import: :class:`~hwprofile.MeasureConfig` validates its ``backend`` against this
registry, so ``open`` takes the config untyped here (``Any``) and subclasses annotate it.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from hwprofile.errors import BackendUnavailableError
from hwprofile.graph import model_stats, onnx_input_specs
from hwprofile.inputs import InputSpec
from hwprofile.measurement import ModelStats


class Runner(abc.ABC):
    """A loaded model with its inputs bound, ready to run again and again."""

    @abc.abstractmethod
    def run(self) -> float:
        """Run one inference to completion; return its latency in milliseconds."""

    def describe(self) -> dict[str, Any]:
        """What was actually used (e.g. the execution provider), for the measurement's record."""
        return {}

    def peak_gpu_memory_bytes(self) -> int | None:
        """Device memory the model took, on GPU backends."""
        return None

    def close(self) -> None:
        """Release the session; the runner is not used afterwards."""


class Backend(abc.ABC):
    """Something that turns a model file into a :class:`Runner`."""

    name: ClassVar[str]
    suffix: ClassVar[str] = ".onnx"  # the model file format it reads

    @abc.abstractmethod
    def version(self) -> str:
        """The runtime's version; raises :class:`BackendUnavailableError` if it is not installed."""

    @abc.abstractmethod
    def open(self, path: Path, config: Any) -> Runner:
        """Create a session for the model at ``path`` with the setup of ``config`` (a
        :class:`~hwprofile.MeasureConfig`) and bind random inputs."""

    def providers(self) -> list[str]:
        """Execution providers this backend can use here (ONNX Runtime's; others have none)."""
        return []

    def model_stats(self, path: Path) -> ModelStats:
        """Parameters, MACs and size of the model file (an ONNX file, unless a backend reads another format)."""
        return model_stats(path)

    def input_specs(self, path: Path) -> list[InputSpec]:
        """The model's inputs as declared in the file (read from the ONNX graph, unless a backend reads another
        format): what a measurement will feed, known before anything is allocated."""
        return onnx_input_specs(path)


B = TypeVar("B", bound=Backend)
_REGISTRY: dict[str, Callable[[], Backend]] = {}


def register_backend(name: str) -> Callable[[type[B]], type[B]]:
    """Class decorator: make a :class:`Backend` available as ``MeasureConfig(backend=name)``."""

    def decorate(cls: type[B]) -> type[B]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def unregister_backend(name: str) -> None:
    """Forget the backend registered as ``name`` (e.g. a test's, once the test is over); unknown names are ignored."""
    _REGISTRY.pop(name, None)


def backend_names() -> list[str]:
    return list(_REGISTRY)


def get_backend(name: str) -> Backend:
    """The backend registered as ``name``; unknown names raise with the list of known ones."""
    if name not in _REGISTRY:
        raise BackendUnavailableError(f"Unknown backend {name!r}; known backends: {', '.join(_REGISTRY)}.")
    return _REGISTRY[name]()


def available_backends() -> dict[str, dict[str, Any]]:
    """For each backend: ``{"available": True, "version": ..., "providers": [...]}`` or why it is not usable."""
    report: dict[str, dict[str, Any]] = {}
    for name in _REGISTRY:
        backend = get_backend(name)
        try:
            report[name] = {"available": True, "version": backend.version(), "providers": backend.providers()}
        except BackendUnavailableError as error:
            report[name] = {"available": False, "reason": str(error)}
    return report


__all__ = ["Backend", "Runner", "available_backends", "backend_names", "get_backend", "register_backend",
           "unregister_backend"]
