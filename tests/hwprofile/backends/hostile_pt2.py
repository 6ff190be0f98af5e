"""Hostile .pt2 archives built from a real ``torch.export`` program: each carries a payload that writes a marker file
when ``torch.export.load`` deserializes it."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


class Payload:
    """Pickled, it runs code when unpickled: it writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return exec, (self.code(),)

    def code(self) -> str:
        return f"open({str(self.marker)!r}, 'w').write('the payload ran')"


def edit_archive(program: Path, output: Path, edit: Callable[[str, bytes], bytes]) -> Path:
    """A copy of the archive ``program`` whose entries pass through ``edit(name, data)``."""
    with zipfile.ZipFile(program) as source, zipfile.ZipFile(output, "w") as target:
        for info in source.infolist():
            target.writestr(info.filename, edit(info.filename, source.read(info.filename)))
    return output


def _saved(payload: Payload) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def pickled_weight(program: Path, output: Path, marker: Path) -> Path:
    """The program's bias (``1.bias``) marked ``use_pickle`` and replaced by a pickled :class:`Payload`."""

    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("data/weights/model_weights_config.json"):
            config = json.loads(data)
            config["config"]["1.bias"]["use_pickle"] = True
            return json.dumps(config).encode()
        return _saved(Payload(marker)) if name.endswith("data/weights/weight_1") else data

    return edit_archive(program, output, edit)


def pickled_sample_inputs(program: Path, output: Path, marker: Path) -> Path:
    """The program's sample inputs replaced by a pickled :class:`Payload` (a weights-only load refuses it, and
    ``torch.export.load`` then retries without ``weights_only``)."""
    return edit_archive(program, output, lambda name, data: _saved(Payload(marker))
                        if name.endswith("data/sample_inputs/model.pt") else data)


def evaluated_shape(program: Path, output: Path, marker: Path) -> Path:
    """The program's dynamic batch size written as a sympy expression that runs :class:`Payload`'s code when
    ``sympy.sympify`` evaluates it."""
    code = Payload(marker).code()
    return edit_archive(program, output, lambda name, data: data.decode().replace(
        "Symbol('s", f"Symbol(str({code}) + 's", 1).encode() if name.endswith("models/model.json") else data)


def extra_entry(program: Path, output: Path, entry: str) -> Path:
    """The program with one more (empty) entry, e.g. an AOTInductor library or a legacy pickled state dict."""
    root = zipfile.ZipFile(program).namelist()[0].partition("/")[0]
    edit_archive(program, output, lambda name, data: data)
    with zipfile.ZipFile(output, "a") as archive:
        archive.writestr(f"{root}/{entry}", b"")
    return output
