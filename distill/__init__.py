"""Knowledge distillation: data, teachers, the teacher-output cache, distillation methods, the training loop, metrics."""

from distill.cache import TeacherOutputs, teacher_outputs
from distill.criterion import KDCriterion, build_criterion, teacher_layers, uses_teacher_features
from distill.data import SOURCES, Dataset, load_dataset
from distill.errors import DataError, DistillError, TeacherError
from distill.features import FeatureLayer, FeaturePlan, LayerPair, plan_features
from distill.functional import hinton_loss, kd_loss
from distill.hf import MINILM, HFTeacher, TextEncoding, load_hf_teacher
from distill.metrics import Metrics, quality_metrics
from distill.registry import (KDMethod, KDSpec, KDStep, KDTerm, UnknownLossError, get_loss, list_losses, parse_kd_spec,
                              register_loss)
from distill.schedules import TEMPERATURE_SCHEDULES
from distill.teachers import Teacher, TeacherCNN, load_teacher
from distill.text import BUILTIN_TEXT, TEXT_SOURCES, TextData, is_text_source, load_text_dataset, read_texts
from distill.text_cache import TextTeacherOutputs, text_teacher_outputs
from distill.text_distill import (TEXT_LOSSES, TextDistillConfig, TextDistillResult, TextFidelity, distill_text,
                                  embed_texts, init_from_teacher, mapped_teacher_layers, principal_basis,
                                  text_fidelity, uniform_layer_map)
from distill.train import (CachedLogits, DistillResult, Evaluation, OnlineTeacher, Rungs, TrainConfig, TrainResult,
                           distill, evaluate, predict, train)

__all__ = [
    "BUILTIN_TEXT", "MINILM", "SOURCES", "TEMPERATURE_SCHEDULES", "TEXT_LOSSES", "TEXT_SOURCES", "CachedLogits",
    "DataError", "Dataset", "DistillError", "DistillResult", "Evaluation", "FeatureLayer", "FeaturePlan",
    "HFTeacher", "KDCriterion", "KDMethod", "KDSpec", "KDStep", "KDTerm", "LayerPair", "Metrics", "OnlineTeacher",
    "Rungs", "Teacher", "TeacherCNN", "TeacherError", "TeacherOutputs", "TextData", "TextDistillConfig",
    "TextDistillResult", "TextEncoding", "TextFidelity", "TextTeacherOutputs", "TrainConfig", "TrainResult",
    "UnknownLossError", "build_criterion", "distill", "distill_text", "embed_texts", "evaluate", "get_loss",
    "hinton_loss", "init_from_teacher", "is_text_source", "kd_loss", "list_losses", "load_dataset",
    "load_hf_teacher", "load_teacher", "load_text_dataset", "mapped_teacher_layers", "parse_kd_spec",
    "plan_features", "principal_basis", "predict", "quality_metrics", "read_texts", "register_loss",
    "teacher_layers", "teacher_outputs", "text_fidelity", "text_teacher_outputs", "train", "uniform_layer_map",
    "uses_teacher_features",
]
