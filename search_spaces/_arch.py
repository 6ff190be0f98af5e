"""An architecture's identity (its hash) and its seeded build."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
import torch.nn as nn

from search_spaces._registry import Arch, SearchSpace


def arch_hash(arch: Arch) -> str:
    """A stable 12-hex-digit identity of an architecture (independent of key order)."""
    canonical = json.dumps(arch, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def seeded_build(space: SearchSpace, arch: Arch, seed: int, *args: Any, **kwargs: Any) -> nn.Module:
    """``space.build(arch, *args, **kwargs)`` with torch seeded by ``seed`` and the arch's hash: the same arch and
    seed give the same initial weights, whichever trial, process or benchmark builds it."""
    torch.manual_seed(seed + int(arch_hash(arch), 16) % 2**31)
    return space.build(arch, *args, **kwargs)
