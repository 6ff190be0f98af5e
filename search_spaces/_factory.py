"""``get_space(spec)``: a search space by registered name, Python file, importable module or installed entry point."""

from __future__ import annotations

import __future__
import hashlib
import importlib
import importlib.util
import inspect
import sys
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from search_spaces._registry import METHODS, SearchSpace, UnknownSpaceError, registered_names, registered_space

ENTRY_POINT_GROUP = "nas_kd.search_spaces"
SPEC_FORMS = ("a registered name, FILE.py:NAME, package.module:NAME, or a name that an installed package registers "
              f"under the entry-point group {ENTRY_POINT_GROUP!r}")


def list_spaces() -> list[str]:
    """The names ``get_space`` knows: the registered spaces and the installed entry points."""
    return sorted({*registered_names(), *(entry.name for entry in entry_points(group=ENTRY_POINT_GROUP))})


def get_space(spec: str) -> SearchSpace:
    """The search space ``spec`` names, checked for ``sample``, ``build``, ``smallest`` and ``largest``.

    ``spec`` is a registered name (``mbconv``, ``resnet``, ``transformer``), ``FILE.py:NAME`` (loaded by path),
    ``package.module:NAME`` (imported), or an entry point of the group ``nas_kd.search_spaces`` (a registered
    name wins over an entry point of the same name). ``NAME`` may be a class or a factory, called with no
    arguments, or an instance. A space without a ``name`` attribute is given ``spec`` as its name.
    """
    factory = registered_space(spec)
    if factory is not None:
        return _checked(factory(), spec)
    if ":" in spec:
        return _instantiate(_attribute(spec), spec)
    entry = next(iter(entry_points(group=ENTRY_POINT_GROUP, name=spec)), None)  # the first one on sys.path
    if entry is not None:
        return _instantiate(_load_entry_point(entry, spec), spec)
    raise UnknownSpaceError(f"Unknown search space {spec!r}; known spaces: {', '.join(list_spaces())}. "
                            f"A search space is given as {SPEC_FORMS}.")


def _attribute(spec: str) -> Any:
    """What ``FILE.py:NAME`` or ``package.module:NAME`` names."""
    location, _, attribute = spec.rpartition(":")
    if not location or not attribute.isidentifier():
        raise UnknownSpaceError(f"Search space {spec!r} is not of the form FILE.py:NAME or package.module:NAME.")
    if location.endswith(".py"):
        module, where = _load_file(Path(location).expanduser().resolve(), spec)
    else:
        module, where = _import(location, spec), f"the module {location!r}"
    if not hasattr(module, attribute):
        raise UnknownSpaceError(f"Search space {spec!r}: {where} has no attribute {attribute!r}; it has: "
                                f"{', '.join(_public_names(module)) or 'no public names'}.")
    return getattr(module, attribute)


def _load_entry_point(entry: EntryPoint, spec: str) -> Any:
    try:
        return entry.load()
    except Exception as error:
        raise UnknownSpaceError(f"Search space {spec!r}: the entry point {entry.value!r} (group {ENTRY_POINT_GROUP!r}) "
                                f"could not be loaded: {_reason(error)}.") from error


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _load_file(path: Path, spec: str) -> tuple[ModuleType, str]:
    """Execute the Python file ``path`` as a module, once per process (a second load returns the first)."""
    where = f"the file {str(path)!r}"
    if not path.is_file():
        raise UnknownSpaceError(f"Search space {spec!r}: {where} does not exist.")
    name = f"_nas_kd_space_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name], where
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None and module_spec.loader is not None, path  # a .py file always has a loader
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # before executing it, as import does: dataclasses look their module up there
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise UnknownSpaceError(f"Search space {spec!r}: {where} could not be loaded: {_reason(error)}.") from error
    return module, where


def _import(location: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(location)
    except Exception as error:
        raise UnknownSpaceError(f"Search space {spec!r}: the module {location!r} could not be imported: "
                                f"{_reason(error)}.") from error


def _public_names(module: ModuleType) -> list[str]:
    """The public names ``module`` defines (imported modules, classes and functions, and ``__future__`` features,
    left out)."""

    def imported(value: Any) -> bool:
        return inspect.ismodule(value) or (
            (inspect.isclass(value) or inspect.isfunction(value)) and value.__module__ != module.__name__)

    return sorted(name for name, value in vars(module).items()
                  if not name.startswith("_") and name not in __future__.all_feature_names and not imported(value))


def _instantiate(found: Any, spec: str) -> SearchSpace:
    """Call a class or a factory with no arguments; keep an instance as it is."""
    if inspect.isclass(found) or (callable(found) and not hasattr(found, "sample")):
        try:
            found = found()
        except Exception as error:
            raise UnknownSpaceError(f"Search space {spec!r}: {getattr(found, '__qualname__', found)}() failed: "
                                    f"{_reason(error)}; a space class or factory must take no arguments.") from error
    return _checked(found, spec)


def _checked(space: Any, spec: str) -> SearchSpace:
    missing = [method for method in METHODS if not callable(getattr(space, method, None))]
    if missing:
        raise UnknownSpaceError(f"Search space {spec!r} ({type(space).__name__}) lacks {', '.join(missing)}: a search "
                                "space needs the methods sample(trial), build(arch, input_shape, num_classes), "
                                "smallest() and largest().")
    if getattr(space, "name", None) is None:
        try:
            space.name = spec
        except AttributeError:  # a frozen dataclass or __slots__
            raise UnknownSpaceError(f"Search space {spec!r} ({type(space).__name__}) has no `name` and takes none; "
                                    "give it a `name` attribute.") from None
    return space
