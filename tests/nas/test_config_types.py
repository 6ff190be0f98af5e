"""Every setting of a search is checked by the type it is annotated with, so that a new setting is covered too."""

from __future__ import annotations

import math
from dataclasses import fields
from pathlib import Path
from typing import Any, get_args, get_type_hints

import pytest

from nas.config import ConfigError, SearchConfig

HINTS = get_type_hints(SearchConfig)
# Values of each annotated type that are not of the type (bools are not numbers; floats must be finite).
WRONG: dict[type, list[Any]] = {int: [True, 1.5, "2", [1, 2]], float: [False, "0.5", math.inf, math.nan, {"a": 1}],
                                str: [5, 0.5, True, ["x"], "a\0b"], bool: [1, "true", None]}


def _kinds(name: str) -> tuple[type, ...]:
    return tuple(kind for kind in (get_args(HINTS[name]) or (HINTS[name],)) if kind is not type(None))


@pytest.mark.parametrize("name", [field.name for field in fields(SearchConfig)])
def test_every_setting_refuses_values_of_another_type(name: str) -> None:
    (kind,) = _kinds(name)
    for value in WRONG[kind]:
        if value is None and SearchConfig.__dataclass_fields__[name].default is None:
            continue  # a setting whose default is None takes None
        with pytest.raises(ConfigError, match=f"Setting '{name}' must be .*, but got "):
            SearchConfig(**{name: value})


def test_numbers_of_the_wider_kind_and_none_where_allowed() -> None:
    config = SearchConfig(epochs=5, latency_budget_ms=2, timeout=None, steps=None)  # an int is a float
    assert (config.epochs, config.latency_budget_ms) == (5, 2)
    with pytest.raises(ConfigError, match="Setting 'trials' must be an integer, but got None."):
        SearchConfig(trials=None)  # type: ignore[arg-type]


def test_saved_config_never_holds_infinity(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Setting 'latency_budget_ms' must be a finite number, but got inf."):
        SearchConfig(out=str(tmp_path), latency_budget_ms=math.inf)
    SearchConfig(out=str(tmp_path), latency_budget_ms=1e300).save()
    assert "Infinity" not in (tmp_path / "config.json").read_text()
