"""Knowledge distillation: data, teachers, the teacher-output cache, distillation methods, the training loop, metrics."""

from distill.cache import TeacherOutputs, teacher_outputs
from distill.criterion import KDCriterion, build_criterion, teacher_layers, uses_teacher_features
from distill.data import SOURCES, Dataset, load_dataset
from distill.errors import DataError, DistillError, TeacherError
from distill.features import FeatureLayer, FeaturePlan, LayerPair, plan_features
from distill.functional import hinton_loss, kd_loss
from distill.metrics import Metrics, quality_metrics
from distill.registry import (KDMethod, KDSpec, KDStep, KDTerm, UnknownLossError, get_loss, list_losses, parse_kd_spec,
                              register_loss)
from distill.schedules import TEMPERATURE_SCHEDULES
from distill.teachers import Teacher, TeacherCNN, load_teacher
from distill.train import (CachedLogits, DistillResult, Evaluation, OnlineTeacher, Rungs, TrainConfig, TrainResult,
                           distill, evaluate, predict, train)

__all__ = [
    "SOURCES", "TEMPERATURE_SCHEDULES", "CachedLogits", "DataError", "Dataset", "DistillError", "DistillResult",
    "Evaluation", "FeatureLayer", "FeaturePlan", "KDCriterion", "KDMethod", "KDSpec", "KDStep", "KDTerm",
    "LayerPair", "Metrics", "OnlineTeacher", "Rungs", "Teacher", "TeacherCNN", "TeacherError", "TeacherOutputs",
    "TrainConfig", "TrainResult", "UnknownLossError", "build_criterion", "distill", "evaluate", "get_loss",
    "hinton_loss", "kd_loss", "list_losses", "load_dataset", "load_teacher", "parse_kd_spec", "plan_features",
    "predict", "quality_metrics", "register_loss", "teacher_layers", "teacher_outputs", "train",
    "uses_teacher_features",
]
