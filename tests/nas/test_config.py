from __future__ import annotations

from pathlib import Path

import pytest

from nas.config import ConfigError, SearchConfig, load_saved_config


def test_defaults_derive_out_and_storage() -> None:
    config = SearchConfig()
    assert config.out == str(Path("runs") / "digits-mbconv")
    assert config.storage == f"sqlite:///{Path('runs/digits-mbconv').resolve() / 'study.db'}"
    assert SearchConfig(data="mnist:/data/mnist-t10k").out == str(Path("runs") / "mnist-t10k-mbconv")
    # a user's space by FILE.py:NAME names the folder by NAME, not by a path with a colon in it
    assert SearchConfig(space="examples/tiny_space.py:TinySpace").out == str(Path("runs") / "digits-tinyspace")


@pytest.mark.parametrize("data, expected", [
    ("digits", {"space": "mbconv", "epochs": 10.0, "max_steps": 500, "batch_size": 64, "lr": 1e-2, "kd": "kd"}),
    ("python-docs", {"space": "transformer", "epochs": 3.0, "max_steps": 0, "batch_size": 32, "lr": 1e-3,
                     "kd": "cosine"}),
])
def test_settings_left_to_the_data_are_resolved_by_it(data: str, expected: dict[str, object]) -> None:
    config = SearchConfig(data=data)
    assert {key: getattr(config, key) for key in expected} == expected
    assert SearchConfig(data=data, lr=0.5).lr == 0.5  # a given value is kept


def test_toml_file_then_command_line(tmp_path: Path) -> None:
    toml = tmp_path / "search.toml"
    toml.write_text('trials = 12\nsampler = "nsga2"\nlatency_budget_ms = 0.5\n')
    config = SearchConfig.from_sources(str(toml), {"trials": 20, "seed": None})
    assert (config.trials, config.sampler, config.latency_budget_ms, config.seed) == (20, "nsga2", 0.5, 0)


def test_bad_settings_are_named(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("trails = 3\n")
    with pytest.raises(ConfigError, match=r"Unknown setting\(s\) \['trails'\]"):
        SearchConfig.from_sources(str(toml), {})
    toml.write_text("trials = [\n")
    with pytest.raises(ConfigError, match="Cannot read config file"):
        SearchConfig.from_sources(str(toml), {})
    with pytest.raises(ConfigError, match="--latency-budget must be a positive"):
        SearchConfig(latency_budget_ms=-1.0)
    with pytest.raises(ConfigError, match="Unknown --sampler 'cmaes'"):
        SearchConfig(sampler="cmaes")
    with pytest.raises(ConfigError, match="--trials must be >= 1"):
        SearchConfig(trials=0)


@pytest.mark.parametrize("settings, named", [
    ({"data": "python-docs"}, "data 'python-docs'"),
    ({"teacher": "teacher.onnx"}, "teacher 'teacher.onnx'"),
    ({"kd": "kd+at:0.5"}, "--kd 'kd+at:0.5'"),
    ({"kd": "mkd"}, "--kd 'mkd'"),
    ({"search_kd": True}, "--search-kd"),
])
def test_an_online_teacher_needs_a_pytorch_image_teacher_and_a_logit_method(settings: dict[str, object],
                                                                           named: str) -> None:
    with pytest.raises(ConfigError, match="--online-teacher runs a PyTorch image teacher") as error:
        SearchConfig(teacher_cache=False, **settings)  # type: ignore[arg-type]
    assert named in str(error.value)
    assert SearchConfig(teacher_cache=False, kd="dkd").teacher_cache is False


def test_resume_requires_the_same_defining_settings(tmp_path: Path) -> None:
    stored = SearchConfig(out=str(tmp_path)).to_dict()
    SearchConfig(out=str(tmp_path), trials=99, timeout=5.0).check_resumable(stored, "storage")  # run-length settings may change
    with pytest.raises(ConfigError, match="data: study has 'digits', got 'npz:x.npz'"):
        SearchConfig(out=str(tmp_path), data="npz:x.npz").check_resumable(stored, "storage")


def test_saved_config_round_trips(tmp_path: Path) -> None:
    config = SearchConfig(out=str(tmp_path), trials=3, latency_budget_ms=0.2)
    config.save()
    assert load_saved_config(tmp_path) == config
    with pytest.raises(ConfigError, match="holds no config.json"):
        load_saved_config(tmp_path / "elsewhere")
