"""Reading a ``torch.export`` archive (``.pt2``) without running what it carries.

``torch.export.load`` (torch 2.13) unpickles with ``weights_only=False`` every weight or constant
marked ``use_pickle`` in the archive's JSON configs, legacy ``data/weights/<model>.pt`` state dicts,
"opaque" constants (``pickle.loads``) and, when a weights-only load of them fails, the sample
inputs; it loads TorchBind objects and AOTInductor shared libraries; its fallback for old archives
reads entries through :mod:`zipfile`; and it evaluates the symbolic shapes of ``models/model.json``
with ``sympy.sympify`` — Python's ``eval``. :func:`check_archive` reads the entry names through
both readers, the JSON configs and the expressions, and refuses an archive that would take any of
those paths, before anything in it is deserialized; what is left is raw tensor bytes, JSON, and the
sample inputs loaded ``weights_only``.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hwprofile.errors import InvalidModelError

# What `torch.export.save` writes for one program named "model"; anything else is refused.
_ENTRY = re.compile(r"archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id|"
                    r"models/model\.json|data/sample_inputs/model\.pt|"
                    r"data/weights/model_weights_config\.json|data/weights/weight_\d+|"
                    r"data/constants/model_constants_config\.json|data/constants/tensor_\d+|extra/[\w.-]+")
_PAYLOADS = {"data/weights/model_weights_config.json": re.compile(r"weight_\d+"),
             "data/constants/model_constants_config.json": re.compile(r"tensor_\d+")}
_NAME = re.compile(r"\w+(\.\w+)*", re.ASCII)  # a parameter's or constant's dotted name
# Tokens of a sympy srepr such as "Add(Symbol('s0', integer=True), Integer(1))": no attribute access, no
# quotes inside strings, nothing but names, numbers, short literals and operators.
_TOKEN = re.compile(r"\s+|\d+(\.\d*)?([eE][-+]?\d+)?|'[\w.+-]*'|(?P<name>[A-Za-z_]\w*)(?P<keyword>\s*=(?!=))?|"
                    r"\*\*|//|[-+*/%(),<>=!&|~^]", re.ASCII)
_SYMBOL = re.compile(r"[a-z]+\d+")


def load_program(path: Path) -> Any:
    """The ``torch.export`` program in ``path``, once :func:`check_archive` has found nothing in it to run."""
    import torch

    if path.suffix != ".pt2":
        raise InvalidModelError(f"The torch-cuda backend measures torch.export programs (.pt2), but got {str(path)!r}; "
                                f"for ONNX use --backend ort --provider cuda, or --backend tensorrt.")
    if not path.is_file():
        raise InvalidModelError(f"Model {str(path)!r} does not exist.")
    check_archive(path)
    try:
        return torch.export.load(str(path))
    except Exception as error:
        raise InvalidModelError(f"{str(path)!r} is not a torch.export program: {error}".splitlines()[0]) from error


def check_archive(path: Path) -> None:
    """Raise :class:`InvalidModelError` naming the entry if loading ``path`` would unpickle, load or ``eval``
    anything but plain tensors; nothing in the archive is deserialized to find out."""
    import torch
    from torch.export.pt2_archive import PT2ArchiveReader

    label = repr(str(path))
    try:
        with zipfile.ZipFile(path) as archive:
            listed = archive.namelist()
        reader = PT2ArchiveReader(str(path))
        names = reader.get_file_names()
        roots = {name.partition("/")[0] for name in listed}
        for name in [*names, *(name.partition("/")[2] for name in listed)]:
            if not _ENTRY.fullmatch(name):
                raise InvalidModelError(f"{label} holds the entry {name!r}, which torch.export.load would unpickle or "
                                        f"run, or which torch.export.save does not write; only tensors, JSON and "
                                        f"plain sample inputs are accepted.")
        if len(roots) != 1 or len(set(listed)) != len(listed) or len(set(names)) != len(names):
            raise InvalidModelError(f"{label} has repeated entries or more than one root folder; "
                                    f"torch.export.save writes neither.")
        for config, payload in _PAYLOADS.items():
            entries = json.loads(reader.read_string(config))["config"] if config in names else {}
            for name, meta in entries.items():
                if meta.get("use_pickle") is not False or not payload.fullmatch(str(meta.get("path_name"))) \
                        or not _NAME.fullmatch(name):
                    raise InvalidModelError(f"{label}: {config} marks {name!r} as a pickled object (or names it "
                                            f"oddly); only plain tensors are accepted, never pickles.")
        for expression in _expressions(json.loads(reader.read_string("models/model.json"))):
            if not _plain_expression(expression):
                raise InvalidModelError(f"{label} has the symbolic shape {expression[:80]!r}, which is not a plain "
                                        f"sympy expression (torch.export.load would eval it).")
        inputs = reader.read_bytes("data/sample_inputs/model.pt")
    except InvalidModelError:
        raise
    except Exception as error:  # zipfile, torch's reader and json raise many types
        raise InvalidModelError(f"{label} is not a torch.export archive (.pt2): {error}".splitlines()[0]) from error
    try:
        torch.load(io.BytesIO(inputs), weights_only=True)  # as torch.export.load tries first: then it never falls back
    except Exception as error:
        raise InvalidModelError(f"{label}: its sample inputs are not plain tensors (a weights-only load refused them: "
                                f"{error}".splitlines()[0] + ").") from error


def _expressions(document: Any) -> Iterator[str]:
    """Every ``expr_str`` in the program's JSON, the strings ``torch.export.load`` hands to ``sympy.sympify``."""
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr_str":
                    yield value if isinstance(value, str) else repr(value)
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


def _plain_expression(text: str) -> bool:
    """Whether ``text`` is made only of numbers, operators, short literals, keyword names and the names of sympy's
    (or torch's sympy) expression classes: nothing ``eval`` could use to reach anything else."""
    import sympy
    import torch.utils._sympy.functions as torch_functions

    if "__" in text:
        return False
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            return False
        name = match["name"]
        if name is not None and not match["keyword"] and not _SYMBOL.fullmatch(name) and name not in ("True", "False"):
            values = [getattr(module, name, None) for module in (sympy, torch_functions)]
            if not any(isinstance(v, sympy.Basic) or isinstance(v, type) and issubclass(v, sympy.Basic)
                       for v in values):
                return False
        position = match.end()
    return True


__all__ = ["check_archive", "load_program"]
