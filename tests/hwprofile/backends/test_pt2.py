"""Loading .pt2 uploads: every path by which ``torch.export.load`` would run what an archive carries is refused before
anything in it is deserialized, and each payload below is shown to run under a plain ``torch.export.load``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import hwprofile
from hwprofile.backends.pt2 import check_archive, load_program
from tests.hwprofile.backends.hostile_pt2 import evaluated_shape, extra_entry, pickled_sample_inputs, pickled_weight
from tests.hwprofile.conftest import mlp


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hwprofile.export_pt2(mlp(16, 1), (1, 8, 8), tmp_path_factory.mktemp("pt2") / "program.pt2")


def test_a_plain_program_loads(program: Path) -> None:
    check_archive(program)
    (spec,) = hwprofile.get_backend("torch-cuda").input_specs(program)
    assert spec.name == "input" and isinstance(spec.dims[0], str) and spec.dims[1:] == (1, 8, 8)  # a dynamic batch
    assert hwprofile.get_backend("torch-cuda").model_stats(program).params == 64 * 16 + 16 + 16 * 10 + 10


@pytest.mark.parametrize(("build", "message"), [
    (pickled_weight, "marks '1.bias' as a pickled object"),
    (pickled_sample_inputs, "its sample inputs are not plain tensors"),
    (evaluated_shape, "which is not a plain sympy expression"),
])
def test_payloads_never_run(build: Callable[[Path, Path, Path], Path], message: str, program: Path,
                            tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    hostile = build(program, tmp_path / "hostile.pt2", marker)
    with pytest.raises(hwprofile.InvalidModelError, match=message):
        load_program(hostile)
    with pytest.raises(hwprofile.InvalidModelError, match=message):
        hwprofile.get_backend("torch-cuda").model_stats(hostile)
    assert not marker.exists()
    try:  # the payload is real: torch.export.load runs it
        torch.export.load(str(hostile))
    except Exception:  # noqa: BLE001 - some fail once the payload has run
        pass
    assert marker.read_text() == "the payload ran"


@pytest.mark.parametrize("entry", ["data/aotinductor/model/model.so", "data/weights/model.pt",
                                   "data/constants/opaque_obj_0", "data/constants/custom_obj_0", "models/other.json"])
def test_entries_torch_export_save_does_not_write_are_refused(entry: str, program: Path, tmp_path: Path) -> None:
    with pytest.raises(hwprofile.InvalidModelError, match=f"holds the entry '{entry}'"):
        load_program(extra_entry(program, tmp_path / "extra.pt2", entry))


def test_not_an_archive_is_an_invalid_model(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt2"
    garbage.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(hwprofile.InvalidModelError, match="garbage.pt2' is not a torch.export archive"):
        load_program(garbage)
