"""Text encoders: data, Hugging Face teachers, the teacher-output cache, distillation, fidelity metrics."""

from distill.text.cache import TextTeacherOutputs, text_teacher_outputs
from distill.text.data import BUILTIN_TEXT, TEXT_SOURCES, TextData, is_text_source, load_text_dataset, read_texts
from distill.text.hf import MINILM, HFTeacher, TextEncoding, load_hf_teacher
from distill.text.metrics import TextFidelity, text_fidelity
from distill.text.train import (TextDistillConfig, TextDistillResult, distill_text, embed_texts, init_from_teacher,
                                principal_basis)

__all__ = [
    "BUILTIN_TEXT", "MINILM", "TEXT_SOURCES", "HFTeacher", "TextData", "TextDistillConfig", "TextDistillResult",
    "TextEncoding", "TextFidelity", "TextTeacherOutputs", "distill_text", "embed_texts", "init_from_teacher",
    "is_text_source", "load_hf_teacher", "load_text_dataset", "principal_basis", "read_texts", "text_fidelity",
    "text_teacher_outputs",
]
