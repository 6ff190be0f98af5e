from __future__ import annotations


class ProfileError(Exception):
    """Base of hwprofile's errors; each message names the input and what was expected."""


class InvalidModelError(ProfileError, ValueError):
    """An ONNX file that is missing, unreadable or not a valid model."""


class InvalidOptionError(ProfileError, ValueError):
    """A measurement option out of range or unknown (threads, batch, dims, ...)."""


class BackendUnavailableError(ProfileError, RuntimeError):
    """A backend or execution provider that is unknown or not usable on this machine."""


class AgentError(ProfileError, RuntimeError):
    """A device agent that cannot be reached, rejects the token, or fails."""
