from __future__ import annotations

import hashlib
import json
from typing import Any


def arch_hash(arch: dict[str, Any]) -> str:
    """A stable 12-hex-digit identity of an architecture (independent of key order)."""
    canonical = json.dumps(arch, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
