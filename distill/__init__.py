"""Knowledge distillation: data, teachers, the teacher-output cache, distillation methods, the training loop, metrics.

``distill.losses`` holds the losses (functions, ``@register_loss`` methods, criteria); ``distill.image`` and
``distill.text`` the data, teachers, caches and runs of image classifiers and text encoders; ``distill.loop``
the training loop both share; ``distill.qat`` the fake quantization of quantization-aware fine-tuning. Every public
name is re-exported here.
"""

from distill.device import DEVICES, DeviceError, Placement, check_device_spec, describe_device, resolve_device
from distill.errors import DataError, DeadlineReached, DistillError, TeacherError
from distill.features import FeatureLayer, FeaturePlan, LayerPair, plan_features, predict
from distill.image import (AUGMENTATIONS, SOURCES, TEACHER_EPOCHS, CachedLogits, Dataset, DistillResult, Evaluation,
                           ImageSplit, Metrics, OnlineTeacher, SoftTargets, Teacher, TeacherCNN, TeacherOutputs,
                           TrainConfig, Views, bootstrap_interval, distill, evaluate, load_dataset, load_teacher,
                           parse_image_size, quality_metrics, teacher_outputs, train)
from distill.loop import LoopConfig, Rungs, TrainResult
from distill.losses import (TEMPERATURE_SCHEDULES, TEXT_LOSSES, KDCriterion, KDMethod, KDSpec, KDStep, KDTerm,
                            UnknownLossError, build_criterion, get_loss, hinton_loss, kd_loss, list_losses,
                            mapped_teacher_layers, masked_mean, parse_kd_spec, parse_text_kd, register_loss,
                            teacher_layers, uniform_layer_map, uses_teacher_features)
from distill.qat import (ActivationFakeQuant, WeightFakeQuant, prepare_qat, quantization_aware, quantized_layers,
                         remove_qat)
from distill.text import (BUILTIN_TEXT, MINILM, TEXT_SOURCES, HFTeacher, TextData, TextDistillConfig,
                          TextDistillResult, TextEncoding, TextFidelity, TextTeacherOutputs, constant_cosine,
                          cosine_interval, distill_text, embed_texts, init_from_teacher, is_text_source,
                          load_hf_teacher, load_text_dataset, principal_basis, read_texts, text_fidelity,
                          text_teacher_outputs, validation_cosine)

__all__ = [
    "AUGMENTATIONS", "BUILTIN_TEXT", "DEVICES", "MINILM", "SOURCES", "TEACHER_EPOCHS", "TEMPERATURE_SCHEDULES",
    "TEXT_LOSSES", "TEXT_SOURCES", "ActivationFakeQuant", "CachedLogits", "DataError", "Dataset", "DeadlineReached",
    "DeviceError", "DistillError", "DistillResult", "Evaluation", "FeatureLayer", "FeaturePlan", "HFTeacher",
    "ImageSplit", "KDCriterion", "KDMethod", "KDSpec", "KDStep", "KDTerm", "LayerPair", "LoopConfig", "Metrics",
    "OnlineTeacher", "Placement", "Rungs", "SoftTargets", "Teacher", "TeacherCNN", "TeacherError", "TeacherOutputs",
    "TextData", "TextDistillConfig", "TextDistillResult", "TextEncoding", "TextFidelity", "TextTeacherOutputs",
    "TrainConfig", "TrainResult", "UnknownLossError", "Views", "WeightFakeQuant", "bootstrap_interval",
    "build_criterion", "check_device_spec", "constant_cosine", "cosine_interval", "describe_device", "distill",
    "distill_text", "embed_texts", "evaluate", "get_loss", "hinton_loss", "init_from_teacher", "is_text_source",
    "kd_loss", "list_losses", "load_dataset", "load_hf_teacher", "load_teacher", "load_text_dataset",
    "mapped_teacher_layers", "masked_mean", "parse_image_size", "parse_kd_spec", "parse_text_kd", "plan_features",
    "predict", "prepare_qat", "principal_basis", "quality_metrics", "quantization_aware", "quantized_layers",
    "read_texts", "register_loss", "remove_qat", "resolve_device", "teacher_layers", "teacher_outputs",
    "text_fidelity", "text_teacher_outputs", "train", "uniform_layer_map", "uses_teacher_features",
    "validation_cosine",
]
