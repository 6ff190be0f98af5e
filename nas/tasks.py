"""What a search distils: image classifiers scored by accuracy, or text encoders scored by embedding fidelity.

A task owns the data, the teacher and its cached outputs, and knows how to build, export, distil and
check a student of its kind; the Optuna loop (``nas.search``) only sees scores and metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn

import distill
import hwprofile
from nas import early_stop
from nas.config import ConfigError, SearchConfig
from nas.cores import MeasurementPause, training_threads
from search_spaces import INPUT_NAMES, Arch, SearchSpace, TransformerSpace, example_inputs, seeded_build

log = logging.getLogger(__name__)
LoopBudget = TypeVar("LoopBudget", bound=distill.LoopConfig)
# What --search-kd lets an image trial choose: methods (response-, feature- and relation-based), T and alpha.
KD_CHOICES = ("kd", "dkd", "dist", "kd+at", "kd+fitnets", "kd+rkd")


def kd_choices(augment: str) -> tuple[str, ...]:
    """The methods --search-kd chooses among: with augmented views, only those that read the teacher's logits (its
    features are cached for unaugmented images only)."""
    return KD_CHOICES if augment == "none" else tuple(kd for kd in KD_CHOICES if not distill.uses_teacher_features(kd))


@dataclass(frozen=True)
class Scored:
    """A distillation run's quality objective and every metric (flat, JSON-serialisable)."""

    score: float
    metrics: dict[str, Any]
    stopped_at_rung: int | None = None


@dataclass(frozen=True)
class TestScore:
    """An exported model's quality objective on the held-out test split, with its bootstrap 95% interval."""

    score: float | None  # the task's metric (accuracy, cosine); None: there is no test split
    ci95: list[float] | None
    samples: int
    note: str  # where the test split came from, or why there is none
    metrics: dict[str, Any] = field(default_factory=dict)  # the task's other figures on it (text: neighbour agreement)


class Task(Protocol):
    metric: str  # the name of the quality objective (``score`` in pareto.json)
    early_stopping: bool  # whether ``distil`` honours rungs
    placement: distill.Placement  # where the teacher and the students train (``--device``)

    def check_teacher(self) -> None:
        """Load and check the teacher now where that is cheap (a file); a teacher to train waits for ``load_teacher``."""

    def load_teacher(self, deadline: float | None = None) -> float:
        """Load the teacher and cache its outputs; returns the teacher's own score (or NaN if it has none). A teacher
        still training at ``deadline`` (a ``time.time()`` value) stops there: :class:`distill.DeadlineReached`."""

    def build_student(self, arch: Arch) -> nn.Module: ...

    def export(self, student: nn.Module, path: Path) -> Path: ...

    def distil(self, student: nn.Module, settings: dict[str, Any], *, epochs: float | None = None,
               max_steps: int | None = None, steps: int | None = None, rungs: distill.Rungs | None = None) -> Scored:
        """Distil with the trial's ``settings``; ``epochs`` capped at ``max_steps`` (export) or ``steps``
        (refinement) overrides the budget."""

    def rung_score(self, student: nn.Module) -> float:
        """The quality objective of a student part-way through its distillation."""

    def rung_validation(self) -> early_stop.Validation:
        """What ``rung_score`` is measured on (its samples and chance level): how noisy it is."""

    def parity(self, student: nn.Module, path: Path) -> float:
        """Max |ONNX Runtime − PyTorch| over the validation inputs."""

    def test_score(self, path: Path) -> TestScore:
        """The ONNX file's score on the test split, run in ONNX Runtime (never used to choose anything)."""

    def metadata(self) -> dict[str, Any]:
        """What a deployment of an exported student needs to know about its inputs."""


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _max_abs_diff(path: Path, batches: Iterable[tuple[dict[str, np.ndarray], np.ndarray]]) -> float:
    """Max |ONNX Runtime − expected| over ``(feed, expected output)`` batches."""
    session = _session(path)
    return max(float(np.abs(session.run(None, feed)[0] - expected).max()) for feed, expected in batches)


class ImageTask:
    """Image classification: accuracy on the validation split, distilled by the methods of ``--kd``."""

    metric = "accuracy"
    early_stopping = True

    def __init__(self, config: SearchConfig, space: SearchSpace) -> None:
        self.config, self.space = config, space
        self.placement = _placement(config)
        self.data = distill.load_dataset(
            config.data, val_fraction=config.val_fraction, test_fraction=config.test_fraction,
            test_data=config.test_data, image_size=config.image_size, skip_bad_images=config.skip_bad_images,
            cache_dir=Path(config.cache_dir), seed=config.seed)
        self.train = distill.TrainConfig(epochs=config.epochs, steps=config.steps, max_steps=config.max_steps or None,
                                         batch_size=config.batch_size, lr=config.lr, temperature=config.temperature,
                                         alpha=config.alpha, kd=config.kd, seed=config.seed)
        self.views = distill.Views.of(config.augment, self.data.input_shape, config.views, config.seed)
        self.teacher: distill.Teacher | None = None
        self.outputs: distill.TeacherOutputs | None = None

    def check_teacher(self) -> None:
        if self.config.teacher != "builtin":
            self.teacher = distill.load_teacher(self.config.teacher, self.data, Path(self.config.cache_dir))

    def load_teacher(self, deadline: float | None = None) -> float:
        config, cache_dir, data = self.config, Path(self.config.cache_dir), self.data
        # noted once the input checks passed (an input error stays one line), as the long work starts
        log.info("Data %s: %s images of %d classes; %d train, %d validation; %s", config.data,
                 "x".join(map(str, data.input_shape)), data.num_classes, len(data.train), len(data.val), data.test_note)
        training_threads(config.train_threads)
        if self.teacher is None:
            self.teacher = distill.load_teacher(config.teacher, self.data, cache_dir, epochs=config.teacher_epochs,
                                                seed=config.seed, placement=self.placement, augment=config.augment,
                                                deadline=deadline)
        self.outputs = distill.teacher_outputs(self.teacher, self.data, cache_dir, device=self.placement.device,
                                               views=self.views)
        for kd in dict.fromkeys(kd_choices(config.augment) if config.search_kd else (config.kd,)):
            if distill.uses_teacher_features(kd):  # computed once here, so that no trial runs the teacher
                self._teacher_outputs(kd, self.build_student(self.space.smallest()))
        return self.outputs.accuracy(self.data)

    def build_student(self, arch: Arch) -> nn.Module:
        return seeded_build(self.space, arch, self.config.seed, self.data.input_shape, self.data.num_classes)

    def export(self, student: nn.Module, path: Path) -> Path:
        return hwprofile.export_onnx(student, self.data.input_shape, path)

    def _teacher_outputs(self, kd: distill.KDSpec,
                         student: nn.Module) -> tuple[distill.TeacherOutputs, distill.FeaturePlan | None]:
        """The cached teacher outputs ``kd`` reads for ``student``, and how their layers pair up."""
        assert self.teacher is not None and self.outputs is not None, "load_teacher() first"
        if not distill.uses_teacher_features(kd):
            return self.outputs, None
        plan = distill.plan_features(student, self.teacher, self.data.input_shape)
        features = distill.teacher_layers(kd, plan)
        return distill.teacher_outputs(self.teacher, self.data, Path(self.config.cache_dir), features,
                                       device=self.placement.device), plan

    def distil(self, student: nn.Module, settings: dict[str, Any], *, epochs: float | None = None,
               max_steps: int | None = None, steps: int | None = None, rungs: distill.Rungs | None = None) -> Scored:
        train = _with_budget(replace(self.train, **settings), epochs, max_steps, steps)
        outputs, plan = self._teacher_outputs(train.kd, student)
        result = distill.distill(student, self.data, outputs, train, plan=plan, rungs=rungs, placement=self.placement,
                                 soft_targets=None if self.config.teacher_cache else self._online_teacher())
        return Scored(result.accuracy, result.to_dict(), result.stopped_at_rung)

    def _online_teacher(self) -> distill.OnlineTeacher:
        """The teacher run on every batch (``--online-teacher``); the config allows it for PyTorch teachers only."""
        module = getattr(self.teacher, "module", None)
        assert isinstance(module, nn.Module), f"--online-teacher needs a PyTorch teacher, not {self.teacher!r}"
        return distill.OnlineTeacher(module)

    def rung_score(self, student: nn.Module) -> float:
        return distill.evaluate(student, self.data).accuracy

    def rung_validation(self) -> early_stop.Validation:
        return early_stop.Validation.of(self.data.val.y)

    @torch.no_grad()
    def parity(self, student: nn.Module, path: Path) -> float:
        student.eval()
        return _max_abs_diff(path, (({"input": x}, student(torch.from_numpy(x)).numpy())
                                    for x in self.data.batches(self.data.val)))

    def onnx_logits(self, path: Path, split: distill.ImageSplit) -> np.ndarray:
        """The logits of the ONNX file on ``split``, run in ONNX Runtime in batches, normalised as in training."""
        session = _session(path)
        name = session.get_inputs()[0].name
        return np.concatenate([session.run(None, {name: x})[0] for x in self.data.batches(split)])

    def onnx_metrics(self, path: Path) -> dict[str, float]:
        """The quality metrics (accuracy, agreement with the teacher, ...) of the ONNX file on the validation split."""
        assert self.outputs is not None, "load_teacher() first"
        metrics = distill.quality_metrics(self.onnx_logits(path, self.data.val), np.asarray(self.outputs.val),
                                          self.data.val.y, seed=self.config.seed)
        return asdict(metrics)

    def calibration(self, samples: int) -> list[dict[str, np.ndarray]]:
        """``samples`` training images (a seeded draw), normalised, as ONNX feeds of 64 images: what an int8
        quantization calibrates its activation ranges on."""
        train = self.data.train
        rows = np.sort(np.random.default_rng(self.config.seed).permutation(len(train))[:samples])
        return [{"input": self.data.normalise(train.x[rows[start:start + 64]])} for start in range(0, len(rows), 64)]

    def test_score(self, path: Path) -> TestScore:
        data = self.data
        if data.test is None:
            return TestScore(None, None, 0, data.test_note)
        predictions = self.onnx_logits(path, data.test).argmax(1)
        correct = predictions == data.test.y
        low, high = distill.bootstrap_interval(correct, seed=self.config.seed)
        return TestScore(float(correct.mean()), [low, high], len(correct), data.test_note)

    def metadata(self) -> dict[str, Any]:
        data = self.data
        return {"input_shape": list(data.input_shape), "classes": data.classes,
                "normalise": {"mean": data.mean, "std": data.std}}


class TextTask:
    """Sentence embeddings: the student learns a Hugging Face encoder's pooled embedding (and, by ``--kd``,
    its hidden states and attention through a layer map); scored by cosine fidelity on validation texts."""

    metric = "cosine"
    early_stopping = True

    def __init__(self, config: SearchConfig, space: TransformerSpace) -> None:
        self.config, self.space = config, space
        self.placement = _placement(config)
        weights = distill.parse_text_kd(config.kd)
        self.losses = tuple(weights)
        self.teacher = distill.load_hf_teacher(config.teacher)  # the data needs its tokenizer
        self.data = distill.load_text_dataset(config.data, self.teacher.tokenizer, seq_len=config.seq_len,
                                              val_fraction=config.val_fraction, test_fraction=config.test_fraction,
                                              test_data=config.test_data, seed=config.seed,
                                              extra=config.extra_text)
        self.train = distill.TextDistillConfig(epochs=config.epochs, steps=config.steps,
                                               max_steps=config.max_steps or None, batch_size=config.batch_size,
                                               lr=config.lr, seed=config.seed,
                                               **{f"{name}_weight": weight for name, weight in weights.items()})
        self.outputs: distill.TextTeacherOutputs | None = None
        self._start = self.teacher.weights()  # every student starts from the teacher's (projected) weights

    def check_teacher(self) -> None:
        """Nothing left to check: the teacher was loaded with the data, whose texts its tokenizer reads."""

    def load_teacher(self, deadline: float | None = None) -> float:
        data = self.data
        extra = f" + {data.num_extra} extra from {data.extra_source}" if data.num_extra else ""
        log.info("Data %s: %d texts of at most %d tokens; %d train%s, %d validation; %s", self.config.data,
                 data.num_own_train + len(data.ids_val) + len(data.ids_test), data.seq_len, data.num_own_train, extra,
                 len(data.ids_val), data.test_note)
        training_threads(self.config.train_threads)
        layers = distill.mapped_teacher_layers(self.space.depths, self.teacher.num_layers, self.losses)
        self.outputs = distill.text_teacher_outputs(self.teacher, self.data, Path(self.config.cache_dir), layers=layers)
        return float("nan")  # the teacher's fidelity to itself is 1 by definition

    def build_student(self, arch: Arch) -> nn.Module:
        student = seeded_build(self.space, arch, self.config.seed, (self.config.seq_len,), self.teacher.hidden_size,
                               vocab_size=self.teacher.vocab_size)
        distill.init_from_teacher(student, self._start)
        return student

    def export(self, student: nn.Module, path: Path) -> Path:
        return hwprofile.export_onnx_inputs(student, example_inputs(self.config.seq_len), path)

    def distil(self, student: nn.Module, settings: dict[str, Any], *, epochs: float | None = None,
               max_steps: int | None = None, steps: int | None = None, rungs: distill.Rungs | None = None) -> Scored:
        assert self.outputs is not None, "load_teacher() first"
        train = _with_budget(self.train, epochs, max_steps, steps)
        result = distill.distill_text(student, self.data, self.outputs, train, losses=self.losses, rungs=rungs,
                                      placement=self.placement, progress=epochs is not None)  # an export: long
        return Scored(result.cosine, result.to_dict(), result.stopped_at_rung)

    def rung_score(self, student: nn.Module) -> float:
        assert self.outputs is not None, "load_teacher() first"
        return max(0.0, distill.validation_cosine(student, self.data, self.outputs))  # below 0: no better than chance

    def rung_validation(self) -> early_stop.Validation:
        """The validation texts, and what the best constant embedding (the mean of the source's own training texts,
        extra texts left out) scores. A per-text cosine in [0, 1] varies at most as much as a 0/1 outcome of the same
        mean (Bhatia–Davis): the accuracy's interval bounds its noise."""
        assert self.outputs is not None, "load_teacher() first"
        chance = distill.constant_cosine(self.outputs.train[:self.data.num_own_train], self.outputs.val)
        return early_stop.Validation(len(self.data.ids_val), max(0.0, chance))

    def _padded(self, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """``ids`` and ``mask`` padded to ``--seq-len``, the exported model's input width, as an ONNX feed."""
        return {name: np.pad(part, ((0, 0), (0, self.config.seq_len - part.shape[1])))
                for name, part in zip(INPUT_NAMES, (ids, mask))}

    def onnx_embeddings(self, path: Path, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The sentence embeddings of the ONNX file for ``(N, S)`` token ids and masks, run in ONNX Runtime."""
        return _session(path).run(None, self._padded(ids, mask))[0]

    @torch.no_grad()
    def parity(self, student: nn.Module, path: Path) -> float:
        feed = self._padded(self.data.ids_val, self.data.mask_val)
        return _max_abs_diff(path, [(feed, distill.embed_texts(student, *feed.values()))])

    def test_score(self, path: Path) -> TestScore:
        """Cosine to the teacher's embeddings of the test texts (bootstrap interval over the texts) and top-10
        neighbour agreement among them; the teacher embeds them here, once (they are no part of the search)."""
        data = self.data
        if not data.test_texts:
            return TestScore(None, None, 0, data.test_note)
        student = self.onnx_embeddings(path, data.ids_test, data.mask_test)
        teacher = self.teacher.encode(data.ids_test, data.mask_test).embedding
        fidelity = distill.text_fidelity(student, teacher)
        return TestScore(fidelity.cosine, distill.cosine_interval(student, teacher, seed=self.config.seed),
                         len(student), data.test_note, {"neighbour_agreement": fidelity.neighbour_agreement,
                                                        "k": fidelity.k})

    def metadata(self) -> dict[str, Any]:
        return {"inputs": list(INPUT_NAMES), "seq_len": self.config.seq_len,
                "teacher": self.config.teacher, "embedding_dim": self.teacher.hidden_size,
                "pooling": self.teacher.pooling, "losses": list(self.losses), "kd": self.config.kd,
                "extra_text": self.config.extra_text, "extra_texts": self.data.num_extra}

    def save_tokenizer(self, directory: Path) -> list[str]:
        """The teacher's tokenizer files, which the student reuses, written into ``directory``."""
        return [Path(name).name for name in self.teacher.tokenizer.save_pretrained(str(directory))]


def _with_budget(train: LoopBudget, epochs: float | None, max_steps: int | None, steps: int | None) -> LoopBudget:
    """``train`` with its budget overridden: ``steps``, else ``epochs`` capped at ``max_steps``, else as it is."""
    if steps is not None:
        return replace(train, steps=steps)
    return train if epochs is None else replace(train, epochs=epochs, steps=None, max_steps=max_steps)


def _placement(config: SearchConfig) -> distill.Placement:
    """Where training runs (``--device``, checked before any work): every step first waits while a latency
    measurement runs on this host."""
    return distill.Placement.on(config.device, before_step=MeasurementPause())


def create_task(config: SearchConfig, space: SearchSpace) -> ImageTask | TextTask:
    if distill.is_text_source(config.data) != isinstance(space, TransformerSpace):
        raise ConfigError(f"--space {space.name} does not fit --data {config.data}: text data ({', '.join(distill.TEXT_SOURCES)}) "
                          "needs --space transformer, and the transformer space needs text data.")
    return TextTask(config, space) if isinstance(space, TransformerSpace) else ImageTask(config, space)
