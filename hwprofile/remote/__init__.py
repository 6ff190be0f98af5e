"""Measuring on another machine: the device agent (``hwprofile.remote.agent``, ``nas device serve``; needs the
``agent`` extra) and its standard-library client, which share one table of error answers (``errors``)."""

from hwprofile.remote.client import TOKEN_ENV, DeviceClient, measure_remote, read_token

__all__ = ["DeviceClient", "TOKEN_ENV", "measure_remote", "read_token"]
