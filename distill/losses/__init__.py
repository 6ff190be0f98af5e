"""Distillation losses: plain functions (``functional``), the ``@register_loss`` methods of classifiers and their
criterion, their weights and temperature schedules, and the terms of text students."""

from distill.losses.criterion import KDCriterion, build_criterion, teacher_layers, uses_teacher_features
from distill.losses.functional import hinton_loss, kd_loss, masked_mean
from distill.losses.registry import (KDMethod, KDSpec, KDStep, KDTerm, UnknownLossError, get_loss, list_losses,
                                     parse_kd_spec, register_loss)
from distill.losses.schedules import TEMPERATURE_SCHEDULES
from distill.losses.text import (TEXT_LOSSES, TextCriterion, mapped_teacher_layers, parse_text_kd,
                                 uniform_layer_map)

__all__ = [
    "TEMPERATURE_SCHEDULES", "TEXT_LOSSES", "KDCriterion", "KDMethod", "KDSpec", "KDStep", "KDTerm", "TextCriterion",
    "UnknownLossError", "build_criterion", "get_loss", "hinton_loss", "kd_loss", "list_losses", "mapped_teacher_layers",
    "masked_mean", "parse_kd_spec", "parse_text_kd", "register_loss", "teacher_layers", "uniform_layer_map",
    "uses_teacher_features",
]
