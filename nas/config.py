"""The settings of one search: a dataclass filled from defaults, a TOML file and the command line."""

from __future__ import annotations

import json
import math
import os
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import distill
import hwprofile
from nas.early_stop import DEFAULT_RUNGS, parse_rungs

SAMPLERS = ("tpe", "nsga2", "gp", "random")
REFINE_DEFAULT = 8  # front students refined at most (nas.refine)
CONFIG_FILE = "config.json"  # written into the output directory; `nas pareto`/`nas export` read it
# Settings that change what a trial's numbers mean: a resumed study must keep them.
# A trial's budget is capped in steps so that it does not grow with the data set (10 epochs of Fashion-MNIST's 48,000
# training images would be 7,500 steps).
IMAGE_DEFAULTS = {"space": "mbconv", "epochs": 10.0, "max_steps": 500, "batch_size": 64, "lr": 1e-2, "kd": "kd"}
# Text: the cosine loss alone, which beat cosine + hidden + attention at a search's budgets (BENCHMARKS.md).
TEXT_DEFAULTS = {"space": "transformer", "epochs": 3.0, "max_steps": 0, "batch_size": 32, "lr": 1e-3, "kd": "cosine"}
FROZEN = ("data", "teacher", "space", "val_fraction", "test_fraction", "test_data", "image_size", "latency_budget_ms",
          "threads", "epochs", "steps", "max_steps", "temperature", "alpha", "lr", "batch_size", "kd", "search_kd",
          "seq_len", "precision", "calibration", "int8_format", "size_budget_bytes", "memory_budget_bytes", "augment",
          "views", "objectives", "extra_text")
PRECISIONS = ("fp32", "int8", "search")  # search: each trial chooses fp32 or int8
FOOTPRINTS = ("size", "memory")  # a third objective: the ONNX file's bytes, or the peak memory's


# The default of a setting derived from the others (the data's modality, the output directory): ``__post_init__``
# replaces it, so after construction every field holds the type it is annotated with.
_DERIVED: Any = None


class ConfigError(ValueError):
    """Settings that are invalid or contradict the study being resumed."""


def default_cache_dir() -> str:
    return os.environ.get("NAS_CACHE_DIR", str(Path("~/.cache/nas-kd").expanduser()))


@dataclass
class SearchConfig:
    data: str = "digits"
    teacher: str = "builtin"  # text data: hf:minilm
    space: str = _DERIVED  # mbconv for images, transformer for text
    trials: int = 30
    timeout: float | None = None  # seconds for this run
    latency_budget_ms: float | None = None
    size_budget_bytes: int | None = None  # the ONNX file at the trial's precision
    memory_budget_bytes: int | None = None  # peak memory as hwprofile measures it
    precision: str = "fp32"  # fp32 | int8 (ONNX Runtime static quantization after distillation) | search
    calibration: str = "minmax"  # int8: how activation ranges are calibrated (hwprofile.CALIBRATION_METHODS)
    int8_format: str = "ort"  # int8: the QDQ file's format, ort (uint8 activations) | tensorrt (hwprofile.INT8_FORMATS)
    objectives: str = _DERIVED  # "accuracy,latency" (text: "cosine,latency"), optionally ",size" or ",memory"
    sampler: str = "tpe"
    seed: int = 0
    sampler_seed: int | None = None  # the sampler's alone (default: seed): another search of the same data split,
    # teacher and student initialisations
    threads: int = 1  # ONNX Runtime threads when measuring latency
    epochs: float = _DERIVED  # distillation budget of one trial: 10 (images), 3 (text)
    steps: int | None = None  # overrides `epochs`
    max_steps: int = _DERIVED  # caps an `epochs` budget: 500 (images), 0 = none (text)
    batch_size: int = _DERIVED  # 64 (images), 32 (text)
    lr: float = _DERIVED  # 1e-2 (images), 1e-3 (text)
    temperature: float = 4.0
    alpha: float = 0.9
    kd: str = _DERIVED  # images: "kd", "dkd", "kd+at:0.5", ... (distill.parse_kd_spec); text: "cosine[+hidden][+attention]"
    seq_len: int = 128  # text: the sequence length students are built and measured at
    extra_text: str | None = None  # text: a text source whose texts join the training split only (not validation)
    search_kd: bool = False  # let each trial also choose the method, temperature and alpha
    early_stop: str = DEFAULT_RUNGS  # rungs as fractions of the budget, or "off"
    train_over_budget: bool = False  # distil students over a budget too (recorded, kept off the front by constraints)
    refine: int = REFINE_DEFAULT  # front students distilled again, longer, before the outputs are written; 0: none
    val_fraction: float = 0.2
    test_fraction: float = 0.2  # the test share carved when the data has no test split of its own; 0: none
    test_data: str | None = None  # a data source that is the test split (of --data's kind)
    image_size: str | None = None  # folder: data: "H" or "HxW" (default: the first image's size)
    skip_bad_images: bool = False  # folder: data: leave unreadable images out (logged) instead of failing
    teacher_epochs: int = distill.TEACHER_EPOCHS
    teacher_cache: bool = True  # images: False runs the teacher on every training batch (what the cache saves)
    augment: str = "none"  # images: training views of the students (and the built-in teacher): none | crop | standard
    views: int = 8  # augmented views of every training image whose teacher logits are cached
    device: str = "auto"  # where teacher and students train: auto | cpu | cuda | cuda:N (not frozen: resume anywhere)
    train_threads: int | None = None  # CPU training threads; default: this host's share (nas.cores)
    out: str = _DERIVED  # default: runs/<data>-<space>
    storage: str = _DERIVED  # default: sqlite:///<out>/study.db
    study: str = "search"
    workers: int = 1  # local worker processes on the study
    heartbeat_s: int = 10  # database storages: a trial silent for 3 heartbeats is failed and retried
    target: str | None = None  # device agent URL (nas device serve); None measures on this machine
    token_file: str | None = None  # the agent's bearer token; default $NAS_DEVICE_TOKEN
    measure_cache: bool = True  # reuse measurements of identical ONNX files on the same device and setup
    cache_dir: str = ""

    def __post_init__(self) -> None:
        _check_types(self)
        text = distill.is_text_source(self.data)
        defaults = TEXT_DEFAULTS if text else IMAGE_DEFAULTS
        for key, value in defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if text and self.teacher == "builtin":
            self.teacher = f"hf:{distill.MINILM}"
        self.out = self.out or str(Path("runs") / f"{_slug(self.data)}-{_slug(self.space)}")
        self.storage = self.storage or f"sqlite:///{Path(self.out).resolve() / 'study.db'}"
        self.cache_dir = self.cache_dir or default_cache_dir()
        if self.trials < 1:
            raise ConfigError(f"--trials must be >= 1, but got {self.trials}.")
        if self.latency_budget_ms is not None and not self.latency_budget_ms > 0:
            raise ConfigError(f"--latency-budget must be a positive number of milliseconds, but got {self.latency_budget_ms}.")
        self._check_precision(text)
        self.objectives = self.objectives or ("cosine" if text else "accuracy") + ",latency"
        self._check_objectives(text)
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"Unknown --sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}.")
        if self.threads < 1 or self.workers < 1 or self.heartbeat_s < 1 or self.teacher_epochs < 1:
            raise ConfigError(f"--threads, --workers, --heartbeat and --teacher-epochs must be >= 1, but got "
                              f"({self.threads=}, {self.workers=}, {self.heartbeat_s=}, {self.teacher_epochs=}).")
        if self.refine < 0:
            raise ConfigError(f"--refine must be >= 0 (0: no refinement), but got {self.refine}.")
        if self.train_threads is not None and self.train_threads < 1:
            raise ConfigError(f"--train-threads must be >= 1, but got {self.train_threads}.")
        try:
            distill.check_device_spec(self.device)
        except distill.DeviceError as error:
            raise ConfigError(f"--device: {error}") from None
        for flag, seed in (("--seed", self.seed), ("--sampler-seed", self.sampler_seed)):
            if seed is not None and not 0 <= seed < 2**32:
                raise ConfigError(f"{flag} must be in 0..2**32-1 (NumPy's range), but got {seed}.")
        if self.timeout is not None and not self.timeout > 0:
            raise ConfigError(f"--timeout must be a positive number of seconds, but got {self.timeout}.")
        self._check_distillation(text)
        self._check_data(text)
        try:
            parse_rungs(self.early_stop)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if self.workers > 1 and self.storage.startswith("sqlite"):
            raise ConfigError(f"SQLite is unsafe with concurrent writers: with --workers {self.workers}, pass "
                              f"--storage postgresql://USER@HOST/DB or --storage journal:{Path(self.out) / 'study.journal'} "
                              "(Optuna's journal file).")

    def _check_objectives(self, text: bool) -> None:
        first = "cosine" if text else "accuracy"
        allowed = [f"{first},latency", *(f"{first},latency,{footprint}" for footprint in FOOTPRINTS)]
        if self.objectives not in allowed:
            raise ConfigError(f"--objectives must be one of {', '.join(allowed)}, but got {self.objectives!r}.")

    @property
    def footprint(self) -> str | None:
        """The third objective (``size`` or ``memory``, in bytes, minimised), or None."""
        parts = self.objectives.split(",")
        return parts[2] if len(parts) == 3 else None

    def _check_precision(self, text: bool) -> None:
        for flag, budget in (("--size-budget", self.size_budget_bytes), ("--memory-budget", self.memory_budget_bytes)):
            if budget is not None and budget < 1:
                raise ConfigError(f"{flag} must be a positive number of bytes, but got {budget}.")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"Unknown --precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}.")
        if self.calibration not in hwprofile.CALIBRATION_METHODS:
            raise ConfigError(f"Unknown --calibration {self.calibration!r}; choose one of "
                              f"{', '.join(hwprofile.CALIBRATION_METHODS)}.")
        if self.int8_format not in hwprofile.INT8_FORMATS:
            raise ConfigError(f"Unknown --int8-format {self.int8_format!r}; choose one of "
                              f"{', '.join(hwprofile.INT8_FORMATS)}.")
        if text and self.precision != "fp32":
            raise ConfigError(f"--precision {self.precision} quantizes image classifiers; text students are fp32.")

    def _check_data(self, text: bool) -> None:
        if not 0 <= self.test_fraction < 1:
            raise ConfigError(f"--test-fraction must be in [0, 1), but got {self.test_fraction}.")
        if text and self.image_size is not None:
            raise ConfigError("--image-size is for image data, not text.")
        if self.test_data is not None and distill.is_text_source(self.test_data) != text:
            raise ConfigError(f"--test-data must be the same kind of data as --data (text: "
                              f"{', '.join(distill.TEXT_SOURCES)}; else images), but got --test-data "
                              f"{self.test_data!r} with --data {self.data!r}.")
        if self.extra_text is not None and not (text and distill.is_text_source(self.extra_text)):
            raise ConfigError(f"--extra-text adds training texts to text data, so it must be a text source "
                              f"({', '.join(distill.TEXT_SOURCES)}) and --data text, but got --extra-text "
                              f"{self.extra_text!r} with --data {self.data!r}.")
        if self.image_size is not None:
            try:
                distill.parse_image_size(self.image_size)
            except distill.DataError as error:
                raise ConfigError(f"--image-size: {error}") from None

    def _check_distillation(self, text: bool) -> None:
        if text:
            try:
                distill.parse_text_kd(self.kd)
            except ValueError as error:
                raise ConfigError(f"--kd for text students: {error}") from None
            if self.search_kd:
                raise ConfigError("--search-kd chooses among image distillation methods; text students use --kd.")
            if self.seq_len < 2:
                raise ConfigError(f"--seq-len must be >= 2, but got {self.seq_len}.")
            if self.augment != "none":
                raise ConfigError(f"--augment is for image data; text data takes none, but got {self.augment!r}.")
        else:
            try:
                distill.parse_kd_spec(self.kd)
            except ValueError as error:
                raise ConfigError(f"--kd {self.kd!r}: {error}") from None
        if self.augment not in distill.AUGMENTATIONS or self.views < 1:
            raise ConfigError(f"--augment must be one of {', '.join(distill.AUGMENTATIONS)} and --views >= 1, but got "
                              f"({self.augment=}, {self.views=}).")
        if not self.teacher_cache:
            self._check_online_teacher(text)
        if self.augment != "none" and not text and distill.uses_teacher_features(self.kd):
            raise ConfigError(f"--kd {self.kd!r} reads teacher features, which are cached for unaugmented images "
                              f"only: it needs --augment none (or a logit method: kd, dkd, dist, ...).")
        budget = {"epochs": self.epochs, "steps": self.steps, "max_steps": self.max_steps or None,
                  "batch_size": self.batch_size, "lr": self.lr}
        try:  # the training loop's own checks, before any long work
            if text:
                distill.TextDistillConfig(**budget)
            else:
                distill.TrainConfig(**budget, temperature=self.temperature, alpha=self.alpha, kd=self.kd)
        except ValueError as error:
            raise ConfigError(f"Invalid distillation settings: {error}") from None

    def _check_online_teacher(self, text: bool) -> None:
        """An online teacher gives the logits of each batch: methods reading cached arrays (features, the logits of
        several teachers) and a teacher file ONNX Runtime runs cannot train from it."""
        names = {method.name for method in distill.parse_kd_spec(self.kd)} if not text else set()
        if text or self.search_kd or self.teacher.endswith(".onnx") or distill.uses_teacher_features(self.kd) \
                or "mkd" in names:
            raise ConfigError(f"--online-teacher runs a PyTorch image teacher on every batch for a logit method (kd, "
                              f"dkd, dist) without --search-kd, but got data {self.data!r}, teacher {self.teacher!r}, "
                              f"--kd {self.kd!r}{', --search-kd' if self.search_kd else ''}.")

    @classmethod
    def from_sources(cls, toml_file: str | None, overrides: dict[str, Any]) -> SearchConfig:
        """Defaults, then the TOML file's keys, then the command line's (non-None) values."""
        values: dict[str, Any] = {}
        if toml_file:
            try:
                values.update(tomllib.loads(Path(toml_file).read_text()))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
                raise ConfigError(f"Cannot read config file {toml_file!r}: {error}") from None
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls.from_values(values)

    @classmethod
    def from_values(cls, values: Mapping[str, Any], where: str = "") -> SearchConfig:
        """The config of ``values`` (settings by name); an unknown name or a bad value is a :class:`ConfigError`,
        which starts with ``where`` when given."""
        prefix = f"{where}: " if where else ""
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(values) - known):
            raise ConfigError(f"{prefix}Unknown setting(s) {unknown}; known: {sorted(known)}.")
        try:
            return cls(**values)
        except ConfigError as error:
            raise ConfigError(f"{prefix}{error}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check_resumable(self, stored: dict[str, Any], where: str) -> None:
        """Raise if a setting that defines the study differs from the one it was created with; ``where`` names the
        storage as errors show it (without a password)."""
        defaults = SearchConfig(data=self.data).to_dict()  # a setting newer than the study: its default
        changed = [f"{key}: study has {stored.get(key, defaults[key])!r}, got {getattr(self, key)!r}"
                   for key in FROZEN if stored.get(key, defaults[key]) != getattr(self, key)]
        if changed:
            raise ConfigError(f"Study {self.study!r} in {where} was created with other settings "
                              f"({'; '.join(changed)}). Use another --out/--study, or the same settings.")

    def save(self) -> None:
        path = Path(self.out) / CONFIG_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")


def load_saved_config(out_dir: str | Path) -> SearchConfig:
    """The settings a search in ``out_dir`` ran with."""
    path = Path(out_dir) / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{str(out_dir)!r} holds no {CONFIG_FILE}: is it the --out directory of a `nas search`?")
    try:
        values = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:  # unreadable, not UTF-8, not JSON
        raise ConfigError(f"Cannot read {str(path)!r} as JSON: {error}".splitlines()[0]) from None
    if not isinstance(values, dict):
        raise ConfigError(f"{str(path)!r} must hold a JSON object of settings, but holds {type(values).__name__}.")
    return SearchConfig.from_values(values, repr(str(path)))


# How a type check names what a setting must hold.
_EXPECTED = {int: "an integer", float: "a finite number", str: "a string", bool: "true or false"}


def _check_types(config: SearchConfig) -> None:
    """Raise unless every setting holds its annotated type; None only where the annotation or the default allows."""
    hints = get_type_hints(SearchConfig)
    for field in fields(config):
        hint, value = hints[field.name], getattr(config, field.name)
        kinds = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
        if value is None and (type(None) in kinds or field.default is None):
            continue
        kinds = tuple(kind for kind in kinds if kind is not type(None))
        if not any(_holds(value, kind) for kind in kinds):
            expected = " or ".join(_EXPECTED.get(kind, getattr(kind, "__name__", str(kind))) for kind in kinds)
            raise ConfigError(f"Setting {field.name!r} must be {expected}, but got {value!r}.")


def _holds(value: Any, kind: Any) -> bool:
    """Whether ``value`` is a ``kind``: bools are not numbers, floats are finite, strings have no NUL."""
    kind = get_origin(kind) or kind
    if kind in (int, float) and isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    if kind is str:
        return isinstance(value, str) and "\0" not in value
    return isinstance(value, kind)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", Path(text.partition(":")[2] or text).name or text).strip("-").lower()
