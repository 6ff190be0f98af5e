"""Knowledge distillation: data, teachers, the teacher-output cache, losses and the training loop."""

from distill.cache import TeacherOutputs, teacher_outputs
from distill.data import SOURCES, Dataset, load_dataset
from distill.errors import DataError, DistillError, TeacherError
from distill.functional import hinton_loss, kd_loss
from distill.teachers import Teacher, TeacherCNN, load_teacher
from distill.train import (CachedLogits, DistillResult, Evaluation, OnlineTeacher, TrainConfig, TrainResult,
                           distill, evaluate, train)

__all__ = [
    "SOURCES", "CachedLogits", "DataError", "Dataset", "DistillError", "DistillResult", "Evaluation",
    "OnlineTeacher", "Teacher", "TeacherCNN", "TeacherError", "TeacherOutputs", "TrainConfig", "TrainResult",
    "distill", "evaluate", "hinton_loss", "kd_loss", "load_dataset", "load_teacher", "teacher_outputs", "train",
]
