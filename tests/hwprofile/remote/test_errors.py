from __future__ import annotations

import pytest

import hwprofile
from hwprofile.remote.errors import ERRORS, error_class, kind_of


@pytest.mark.parametrize("cls", [hwprofile.InvalidModelError, hwprofile.InvalidOptionError,
                                 hwprofile.BackendUnavailableError])
def test_what_the_agent_answers_the_client_raises_again(cls: type[hwprofile.ProfileError]) -> None:
    kind = kind_of(cls("x"))
    assert error_class(kind) is cls and 400 <= ERRORS[kind][1] < 500


def test_anything_else_is_an_internal_agent_error() -> None:
    for error in (hwprofile.ProfileError("x"), hwprofile.AgentError("x"), RuntimeError("x")):
        assert kind_of(error) == "internal" and ERRORS["internal"] == (hwprofile.AgentError, 500)
    assert error_class("unauthorized") is hwprofile.AgentError and ERRORS["unauthorized"][1] == 401
    assert error_class("a kind from a newer agent") is hwprofile.AgentError
    assert error_class(None) is hwprofile.AgentError
