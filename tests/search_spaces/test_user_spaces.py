"""Spaces written by users: loaded by file, module or entry point, checked, and searched end to end."""

from __future__ import annotations

import json
import re
import shlex
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch

from search_spaces import ENTRY_POINT_GROUP, UnknownSpaceError, get_space, list_spaces

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "tiny_space.py"
SPEC = f"{EXAMPLE}:TinySpace"


def _readme_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Write your own search space\n")
    return readme[start:readme.index("\n## ", start + 1)]


@pytest.fixture
def examples_on_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``examples/`` importable for one test; its module forgotten afterwards."""
    monkeypatch.syspath_prepend(str(EXAMPLE.parent))
    yield
    sys.modules.pop("tiny_space", None)


def _write(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(source))
    return path


def test_the_readme_shows_the_example_file_verbatim() -> None:
    blocks = re.findall(r"```python\n(.*?)```", _readme_section(), flags=re.DOTALL)
    assert blocks and blocks[0] == EXAMPLE.read_text()


def test_a_space_loads_by_file_and_by_module(examples_on_path: None, monkeypatch: pytest.MonkeyPatch) -> None:
    by_file = get_space(SPEC)
    assert type(by_file).__name__ == "TinySpace" and by_file.name == "tiny"
    assert type(get_space(SPEC)) is type(by_file)  # a file is loaded once per process, like an import
    monkeypatch.chdir(ROOT)
    assert type(get_space("examples/tiny_space.py:TinySpace")) is type(by_file)  # relative to the current directory
    by_module = get_space("tiny_space:TinySpace")
    assert type(by_module).__module__ == "tiny_space" and by_module.name == "tiny"
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for space in (by_file, by_module):
        for arch in (space.smallest(), space.largest(), space.sample(study.ask())):
            assert space.build(arch, (1, 8, 8), 10)(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_a_factory_an_instance_and_a_space_without_a_name(tmp_path: Path, examples_on_path: None) -> None:
    path = _write(tmp_path, "spaces.py", """
        from dataclasses import dataclass

        from tiny_space import TinySpace

        class Unnamed(TinySpace):
            name = None

        @dataclass(frozen=True)
        class FrozenUnnamed:
            sample = build = smallest = largest = print

        INSTANCE = TinySpace()

        def make():
            return Unnamed()
    """)
    assert get_space(f"{path}:INSTANCE").name == "tiny"
    assert get_space(f"{path}:make").name == f"{path}:make"  # named by the spec
    with pytest.raises(UnknownSpaceError, match=r"\(FrozenUnnamed\) has no `name` and takes none; give it a `name`"):
        get_space(f"{path}:FrozenUnnamed")


def test_errors_name_the_missing_method_file_attribute_or_module(tmp_path: Path) -> None:
    incomplete = _write(tmp_path, "incomplete.py", """
        class NoExtremes:
            name = "half"

            def sample(self, trial): ...

            def build(self, arch, input_shape, num_classes): ...
    """)
    with pytest.raises(UnknownSpaceError, match=re.escape(
            f"Search space '{incomplete}:NoExtremes' (NoExtremes) lacks smallest, largest: a search space needs the "
            "methods sample(trial), build(arch, input_shape, num_classes), smallest() and largest().")):
        get_space(f"{incomplete}:NoExtremes")
    missing = tmp_path / "nowhere.py"
    with pytest.raises(UnknownSpaceError, match=re.escape(f"the file '{missing}' does not exist.")):
        get_space(f"{missing}:Space")
    with pytest.raises(UnknownSpaceError, match=re.escape(
            f"Search space '{EXAMPLE}:Tiny': the file '{EXAMPLE}' has no attribute 'Tiny'; it has: DEPTHS, KERNELS, "
            "TinySpace, WIDTHS.")):
        get_space(f"{EXAMPLE}:Tiny")
    broken = _write(tmp_path, "broken.py", "class Space(:\n")
    with pytest.raises(UnknownSpaceError, match=re.escape(f"the file '{broken}' could not be loaded: SyntaxError:")):
        get_space(f"{broken}:Space")
    assert not [name for name, module in sys.modules.items() if getattr(module, "__file__", None) == str(broken)]
    needs_args = _write(tmp_path, "needs_args.py", "class Space:\n    def __init__(self, depth):\n        pass\n")
    with pytest.raises(UnknownSpaceError, match=r"Space\(\) failed: TypeError: .*must take no arguments"):
        get_space(f"{needs_args}:Space")
    with pytest.raises(UnknownSpaceError, match=re.escape(
            "Search space 'no_such_package.spaces:Space': the module 'no_such_package.spaces' could not be imported: "
            "ModuleNotFoundError: No module named 'no_such_package'.")):
        get_space("no_such_package.spaces:Space")
    with pytest.raises(UnknownSpaceError, match="is not of the form FILE.py:NAME or package.module:NAME"):
        get_space(f"{EXAMPLE}:")


def test_unknown_names_list_the_known_spaces_and_the_forms() -> None:
    with pytest.raises(UnknownSpaceError) as raised:
        get_space("resnet50")
    assert str(raised.value) == (
        "Unknown search space 'resnet50'; known spaces: mbconv, resnet, transformer. A search space is given as a "
        "registered name, FILE.py:NAME, package.module:NAME, or a name that an installed package registers under "
        "the entry-point group 'nas_kd.search_spaces'.")


def test_installed_entry_points_are_spaces(tmp_path: Path, examples_on_path: None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    info = tmp_path / "nas_kd_tiny-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: nas-kd-tiny\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\ntiny = tiny_space:TinySpace\n"
                                           "ghost = no_such_module:Space\nresnet = tiny_space:TinySpace\n")
    assert "tiny" not in list_spaces()
    monkeypatch.syspath_prepend(str(tmp_path))
    assert {"ghost", "tiny", "mbconv", "resnet", "transformer"} <= set(list_spaces())
    space = get_space("tiny")
    assert type(space).__name__ == "TinySpace" and type(space).__module__ == "tiny_space"
    assert type(get_space("resnet")).__name__ == "ResNetSpace"  # a built-in name wins
    with pytest.raises(UnknownSpaceError, match=re.escape(
            "Search space 'ghost': the entry point 'no_such_module:Space' (group 'nas_kd.search_spaces') could not be "
            "loaded: ModuleNotFoundError: No module named 'no_such_module'.")):
        get_space("ghost")


def test_the_readme_command_searches_with_the_example_space(tmp_path: Path, cache_dir: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from nas.cli import main

    [command] = [line for line in _readme_section().splitlines() if line.startswith(".venv/bin/nas search")]
    argv = shlex.split(command)[1:]
    assert argv[:3] == ["search", "--space", "examples/tiny_space.py:TinySpace"]
    monkeypatch.chdir(ROOT)  # the README's path is relative to the repository root
    out = tmp_path / "out"
    # The shared test cache and settings of tests/nas: the built-in teacher trains once, for 3 epochs.
    assert main([*argv, "--out", str(out), "--cache-dir", str(cache_dir), "--teacher-epochs", "3",
                 "--sampler", "random"]) == 0
    front = json.loads((out / "pareto.json").read_text())
    assert front and all(set(entry["arch"]) == {"depth", "width", "kernel"} for entry in front)
    assert json.loads((out / "config.json").read_text())["space"] == "examples/tiny_space.py:TinySpace"
    capsys.readouterr()
    assert main(["search", "--space", f"{EXAMPLE}:Tiny", "--out", str(tmp_path / "bad")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: Search space") and "\n" not in error
    assert error.endswith("has no attribute 'Tiny'; it has: DEPTHS, KERNELS, TinySpace, WIDTHS.")
