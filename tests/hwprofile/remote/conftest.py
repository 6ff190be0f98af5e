from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import hwprofile

TOKEN = "test-token-0123456789abcdef"
LIMIT = 256 * 1024


@pytest.fixture(scope="module")
def agent(serve_agent: Callable[..., str]) -> str:
    """The agent on a free loopback port, with a small body limit; its URL."""
    return serve_agent(TOKEN, limits=hwprofile.remote.AgentLimits(max_body_bytes=LIMIT))


def client(url: str, **kwargs: Any) -> hwprofile.DeviceClient:
    """A client of the agent at ``url`` with the test token (unless ``token=`` is given)."""
    return hwprofile.DeviceClient(url, kwargs.pop("token", TOKEN), **kwargs)
