"""Image classifiers: data, teachers (built in or from a file), the teacher-output cache, distillation, metrics."""

from distill.image.builtin import TeacherCNN, load_teacher
from distill.image.cache import TeacherOutputs, teacher_outputs
from distill.image.data import SOURCES, Dataset, load_dataset
from distill.image.metrics import Metrics, quality_metrics
from distill.image.teachers import Teacher
from distill.image.train import (CachedLogits, DistillResult, Evaluation, OnlineTeacher, SoftTargets, TrainConfig,
                                 distill, evaluate, train)

__all__ = [
    "SOURCES", "CachedLogits", "Dataset", "DistillResult", "Evaluation", "Metrics", "OnlineTeacher", "SoftTargets",
    "Teacher", "TeacherCNN", "TeacherOutputs", "TrainConfig", "distill", "evaluate", "load_dataset", "load_teacher",
    "quality_metrics", "teacher_outputs", "train",
]
