"""Hardware-aware NAS with knowledge distillation: the CLI, the Optuna loop, Pareto analysis, export."""

from nas.config import ConfigError, SearchConfig, load_saved_config
from nas.export import EXPORT_EPOCHS, EXPORT_MAX_STEPS, ExportError, ExportReport, export_arch, export_trial
from nas.pareto import best_trial, front_records, hypervolume, pareto_front, write_outputs
from nas.search import SIBLING_ATTR, BudgetError, load_context, load_study, open_study, random_archs, search

__all__ = ["EXPORT_EPOCHS", "EXPORT_MAX_STEPS", "SIBLING_ATTR", "BudgetError", "ConfigError", "ExportError",
           "ExportReport", "SearchConfig", "best_trial", "export_arch", "export_trial", "front_records", "hypervolume", "load_context",
           "load_saved_config", "load_study", "open_study", "pareto_front", "random_archs", "search", "write_outputs"]
