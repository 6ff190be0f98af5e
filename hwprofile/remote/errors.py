"""The agent's error answers, one table read by both ends: kind <-> exception class <-> HTTP status.

The agent answers ``{"error": message, "kind": kind}`` with the kind's status (or a more precise one:
413 for a body over the limit, 415 for a wrong content type); the client raises the kind's class.
``time_limit`` and ``memory_limit`` are models the agent would not finish measuring within its
limits; ``timeout`` is a body that did not arrive in time.
"""

from __future__ import annotations

from hwprofile.errors import (AgentError, BackendUnavailableError, InvalidModelError, InvalidOptionError,
                              ProfileError)

ERRORS: dict[str, tuple[type[ProfileError], int]] = {  # the first entry whose class an error is gives its kind
    "invalid_model": (InvalidModelError, 422),
    "invalid_option": (InvalidOptionError, 400),
    "backend_unavailable": (BackendUnavailableError, 400),
    "internal": (AgentError, 500),  # a bug or a runtime crash on the device
    "unauthorized": (AgentError, 401),
    "not_found": (AgentError, 404),
    "time_limit": (InvalidModelError, 422),
    "memory_limit": (InvalidModelError, 422),
    "timeout": (AgentError, 408),
    "bad_request": (AgentError, 400),  # not HTTP the agent can read
    "headers_too_large": (AgentError, 431),
    "busy": (AgentError, 503),  # max_pending requests held already: the client retries with backoff
}


def kind_of(error: Exception) -> str:
    """The kind the agent answers ``error`` with (``internal`` for an error not in the table)."""
    return next((kind for kind, (cls, _) in ERRORS.items() if isinstance(error, cls)), "internal")


def error_class(kind: object) -> type[ProfileError]:
    """The exception the client raises for an answer of ``kind`` (:class:`AgentError` for a kind not in the table)."""
    return ERRORS[kind][0] if isinstance(kind, str) and kind in ERRORS else AgentError


__all__ = ["ERRORS", "error_class", "kind_of"]
