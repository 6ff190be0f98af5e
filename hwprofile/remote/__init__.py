"""Measuring on another machine: the device agent (``hwprofile.remote.agent``, ``nas device serve``; needs the
``agent`` extra), the limits it puts on every request, and its standard-library client, which share one table of
error answers (``errors``)."""

from hwprofile.remote.client import TOKEN_ENV, DeviceClient, measure_remote, read_token
from hwprofile.remote.limits import AgentLimits

__all__ = ["AgentLimits", "DeviceClient", "TOKEN_ENV", "measure_remote", "read_token"]
