from __future__ import annotations

import pytest

import distill
from distill import KDTerm, UnknownLossError, parse_kd_spec, register_loss
from distill.losses.registry import KDMethod


def test_spec_strings_parse_to_names_and_weights() -> None:
    assert parse_kd_spec("kd+at:0.5") == [KDTerm("kd", 1.0), KDTerm("at", 0.5)]
    assert parse_kd_spec(" dkd : 2 + rkd ") == [KDTerm("dkd", 2.0), KDTerm("rkd", 1.0)]
    assert parse_kd_spec("none") == []


def test_toml_lists_give_weights_and_options() -> None:
    terms = parse_kd_spec([{"name": "dkd", "beta": 4.0}, {"name": "at", "weight": 0.5}])
    assert terms == [KDTerm("dkd", 1.0, {"beta": 4.0}), KDTerm("at", 0.5)]
    assert terms[0].resolved == {"alpha": 1.0, "beta": 4.0, "temperature": None}


def test_unknown_names_list_the_known_methods() -> None:
    with pytest.raises(UnknownLossError, match=r"Unknown distillation method 'kdd'; known methods: at, contrastive, "
                                               r"dist, dkd, dml, ema, fitnets, kd, mkd, rkd, self, sp \(or 'none'\)"):
        parse_kd_spec("kdd+at")


@pytest.mark.parametrize(("spec", "message"), [
    ("kd:x", r"The weight of 'kd' in 'kd:x' must be a number, but got 'x'"),
    ("kd:-1", r"The weight of 'kd' must be a finite number >= 0, but got -1.0"),
    ("kd++at", r"expected 'name\[:weight\]\+...'"),
    ("kd+kd:2", r"must name each method once"),
    ([], r"must name each method once and at least one"),
    ([{"weight": 1.0}], r"must be a table with a 'name'"),
    ([{"name": "at", "q": 1}], r"Unknown option\(s\) \['q'\] of distillation method 'at'; its options are \{'p': 2.0\}"),
])
def test_bad_specs_say_what_is_wrong(spec: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_kd_spec(spec)  # type: ignore[arg-type]


def test_train_config_checks_its_spec_early() -> None:
    with pytest.raises(UnknownLossError, match="Unknown distillation method 'nope'"):
        distill.TrainConfig(kd="nope")


def test_names_register_once() -> None:
    with pytest.raises(ValueError, match="'kd' is already registered or reserved"):
        register_loss("kd")(type("Again", (KDMethod,), {}))
    assert distill.get_loss("dkd").defaults == {"alpha": 1.0, "beta": 8.0, "temperature": None}
