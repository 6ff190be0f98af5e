"""Image classifiers: data, teachers (built in or from a file), the teacher-output cache, distillation, metrics."""

from distill.image.augment import AUGMENTATIONS, Views
from distill.image.builtin import TEACHER_EPOCHS, TeacherCNN, load_teacher
from distill.image.cache import TeacherOutputs, teacher_outputs
from distill.image.data import SOURCES, Dataset, ImageSplit, load_dataset, parse_image_size
from distill.image.metrics import Metrics, bootstrap_interval, quality_metrics
from distill.image.teachers import Teacher
from distill.image.train import (CachedLogits, DistillResult, Evaluation, OnlineTeacher, SoftTargets, TrainConfig,
                                 distill, evaluate, train)

__all__ = [
    "AUGMENTATIONS", "SOURCES", "TEACHER_EPOCHS", "CachedLogits", "Dataset", "DistillResult", "Evaluation",
    "ImageSplit", "Metrics", "OnlineTeacher", "SoftTargets", "Teacher", "TeacherCNN", "TeacherOutputs",
    "TrainConfig", "Views", "bootstrap_interval", "distill", "evaluate", "load_dataset", "load_teacher",
    "parse_image_size", "quality_metrics", "teacher_outputs", "train",
]
