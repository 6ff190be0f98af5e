"""The search-space protocol and the registry of built-in names (a leaf: plugins import it, it imports none)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import torch.nn as nn

Arch = dict[str, Any]
METHODS = ("sample", "build", "smallest", "largest")  # what ``get_space`` checks a loaded space for


class SearchSpace(Protocol):
    """What a student can be: sampled from an Optuna trial, built into a plain module."""

    @property
    def name(self) -> str:
        """The space's name in records and default output folders."""

    def sample(self, trial: Any) -> Arch:
        """Draw an architecture with ``trial.suggest_*``; the result is JSON-serialisable."""

    def build(self, arch: Arch, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        """A ``torch.nn.Module`` mapping ``(N, *input_shape)`` images to ``(N, num_classes)`` logits."""

    def smallest(self) -> Arch:
        """The cheapest architecture the space allows (the latency floor of a search)."""

    def largest(self) -> Arch:
        """The most expensive architecture the space allows (the latency ceiling of a search)."""


class UnknownSpaceError(ValueError):
    """A search-space spec that names no known space, or a space that cannot be loaded or lacks a method."""


_SPACES: dict[str, Callable[[], SearchSpace]] = {}
_S = TypeVar("_S", bound=Callable[[], SearchSpace])


def register_space(name: str) -> Callable[[_S], _S]:
    """Class decorator adding a search space to the registry under ``name``."""

    def decorator(factory: _S) -> _S:
        if name in _SPACES:
            raise ValueError(f"Search space {name!r} is already registered.")
        _SPACES[name] = factory
        return factory

    return decorator


def registered_space(name: str) -> Callable[[], SearchSpace] | None:
    """The factory registered as ``name``, or None."""
    return _SPACES.get(name)


def registered_names() -> list[str]:
    return sorted(_SPACES)
