"""A bounded property-based fuzz of `nas search`'s inputs (issue 10): random TOML configs, --latency-budget strings and
data files either pass every check a search makes before long work (``--dry-run``, which creates nothing) or fail with
exit code 2 and one line on stderr starting with "error:" — never a traceback."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_type_hints

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nas.cli import main
from nas.config import SearchConfig

HINTS = get_type_hints(SearchConfig)
UNKNOWN_KEYS = ["trails", "budget", "Data", "latency_budget", ""]
# Strings a user would write, so that some random configs are valid and reach the checks behind the types.
PLAUSIBLE = ["digits", "builtin", "mbconv", "resnet", "transformer", "tpe", "random", "nsga2", "kd", "dkd",
             "kd+at:0.5", "none", "off", "0.25,0.5", "search", "16x16", "journal:study.journal", "sqlite:///study.db",
             "foo://bar", "http://127.0.0.1:1", "npz:missing.npz", "mnist:."]
scalars = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(), st.text(max_size=16),
                    st.sampled_from(PLAUSIBLE))
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars, max_size=2))
# Of the annotated type (small numbers near the limits, or any), so that checks past the type checks are reached too.
TYPED = {int: st.one_of(st.integers(-2, 40), st.integers(-2**63, 2**63 - 1)), float: st.one_of(st.floats(-1, 2), st.floats()),
         str: st.one_of(st.sampled_from(PLAUSIBLE), st.text(max_size=16)), bool: st.booleans()}


def _setting(key: str) -> st.SearchStrategy[tuple[str, Any]]:
    """``(key, value)``: mostly a value of the setting's annotated type, else of any type (an unknown key: any type)."""
    kinds = [kind for kind in (get_args(HINTS[key]) or (HINTS[key],)) if kind in TYPED] if key in HINTS else []
    typed = st.one_of(*(TYPED[kind] for kind in kinds)) if kinds else values
    return st.tuples(st.just(key), st.sampled_from([typed, typed, typed, values]).flatmap(lambda strategy: strategy))


configs = st.lists(st.sampled_from([*HINTS, *UNKNOWN_KEYS]).flatmap(_setting), max_size=3,
                   unique_by=lambda item: item[0]).map(dict)
budgets = st.one_of(
    st.none(), st.text(max_size=10), st.text(alphabet="0123456789.e-+muµs ", max_size=10),
    st.from_regex(r"\A[-+]?[0-9]{0,4}\.?[0-9]{1,4}(e-?[0-9]{1,4})?(ms|us|µs|s)?\Z"),
    st.sampled_from(["1e999", "inf", "nan", "-inf", "0", "1e-400", "1e306s", "2ms", "300us"]),
)
# A data file, as (kind, what to write): materialised by `_write_data` in each example's folder.
data_files = st.one_of(
    st.just(("digits", None)),
    st.tuples(st.just("npz-bytes"), st.binary(max_size=2048)),
    st.tuples(st.just("npz-truncated"), st.floats(0, 1)),
    st.tuples(st.just("npz-arrays"), st.tuples(
        st.sampled_from(["uint8", "float32", "float64", "int64", "complex64", "bool"]),
        st.sampled_from([(20, 8, 8), (20, 1, 8, 8), (20, 8, 8, 3), (20,), (0, 8, 8), (20, 2, 2, 2, 2)]),
        st.sampled_from(["labels", "float-labels", "one-class", "short"]))),
    st.tuples(st.just("mnist"), st.tuples(st.integers(0, 40), st.integers(0, 30), st.binary(max_size=4096))),
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The examples' folder, also the working directory (relative paths in a random config land there)."""
    folder = tmp_path_factory.mktemp("fuzz")
    previous = Path.cwd()
    os.chdir(folder)
    yield folder
    os.chdir(previous)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML's
    if isinstance(value, list):
        return "[" + ", ".join(map(_toml, value)) + "]"
    return "{" + ", ".join(f"{_toml(key)} = {_toml(item)}" for key, item in value.items()) + "}"


def _npz_bytes(folder: Path, **arrays: np.ndarray) -> bytes:
    np.savez(folder / "valid.npz", **arrays)
    return (folder / "valid.npz").read_bytes()


def _write_data(kind: str, spec: Any, folder: Path) -> str:
    """Write the example's data file(s) into ``folder``; returns the --data value."""
    rng = np.random.default_rng(0)
    labels = np.arange(20) % 2
    if kind == "digits":
        return "digits"
    if kind == "npz-bytes":
        (folder / "data.npz").write_bytes(spec)
    elif kind == "npz-truncated":
        whole = _npz_bytes(folder, x=rng.integers(0, 255, (20, 8, 8), dtype=np.uint8), y=labels)
        (folder / "data.npz").write_bytes(whole[:int(spec * (len(whole) - 1))])
    elif kind == "npz-arrays":
        dtype, shape, label_kind = spec
        y = {"labels": labels, "float-labels": labels + 0.5, "one-class": labels * 0, "short": labels[:3]}[label_kind]
        (folder / "data.npz").write_bytes(_npz_bytes(folder, x=(rng.random(shape) * 255).astype(dtype), y=y))
    else:  # IDX-like files in an MNIST folder: a plausible header, then random bytes
        count, size, body = spec
        mnist = folder / "mnist"
        mnist.mkdir()
        header = b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (count, size, size))
        (mnist / "train-images-idx3-ubyte").write_bytes(header + body)
        (mnist / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + count.to_bytes(4, "big") + body[:count])
        return f"mnist:{mnist}"
    return f"npz:{folder / 'data.npz'}"


def _search(folder: Path, cache: Path, *flags: str) -> None:
    """``nas search --dry-run`` with ``flags``: it passes (and creates no study) or fails in one line with exit code 2."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = main(["search", "--dry-run", "--out", str(folder / "out"), "--cache-dir", str(cache), *flags])
        except SystemExit as exit_info:  # argparse's usage errors
            code = exit_info.code
    lines = stderr.getvalue().splitlines()
    if code == 0:
        assert "The inputs are valid" in stdout.getvalue() and not any(line.startswith("error") for line in lines)
    else:
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (flags, stderr.getvalue())
    assert not (folder / "out").exists()  # a dry run creates no study


FUZZ = settings(max_examples=100, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FUZZ
@given(config=configs)
def test_random_config_files(workdir: Path, config: dict[str, Any]) -> None:
    folder = Path(tempfile.mkdtemp(dir=workdir))
    (folder / "search.toml").write_text("".join(f"{_toml(key)} = {_toml(value)}\n" for key, value in config.items()))
    _search(folder, workdir / "cache", "--config", str(folder / "search.toml"))


@settings(FUZZ, max_examples=50)
@given(budget=budgets)
def test_random_latency_budgets(workdir: Path, budget: str | None) -> None:
    folder = Path(tempfile.mkdtemp(dir=workdir))
    _search(folder, workdir / "cache", *([] if budget is None else [f"--latency-budget={budget}"]))


@FUZZ
@given(data=data_files)
def test_random_data_files(workdir: Path, data: tuple[str, Any]) -> None:
    folder = Path(tempfile.mkdtemp(dir=workdir))
    _search(folder, workdir / "cache", "--data", _write_data(*data, folder))
