from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import torch.nn as nn

Arch = dict[str, Any]


class SearchSpace(Protocol):
    """What a student can be: sampled from an Optuna trial, built into a plain module."""

    name: str

    def sample(self, trial: Any) -> Arch:
        """Draw an architecture with ``trial.suggest_*``; the result is JSON-serialisable."""

    def smallest(self) -> Arch:
        """The cheapest architecture the space allows (the latency floor of a search)."""

    def build(self, arch: Arch, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        """A ``torch.nn.Module`` mapping ``(N, *input_shape)`` images to ``(N, num_classes)`` logits."""


class UnknownSpaceError(ValueError):
    """A search-space name that is not registered."""


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


def get_space(name: str) -> SearchSpace:
    """Instantiate the registered search space ``name``."""
    try:
        return _SPACES[name]()
    except KeyError:
        raise UnknownSpaceError(f"Unknown search space {name!r}; known spaces: {', '.join(list_spaces())}.") from None


def list_spaces() -> list[str]:
    return sorted(_SPACES)
