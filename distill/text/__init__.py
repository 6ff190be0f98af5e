"""Text encoders: data, Hugging Face teachers, the teacher-output cache, distillation, fidelity metrics."""

from distill.text.cache import TextTeacherOutputs, text_teacher_outputs
from distill.text.data import BUILTIN_TEXT, TEXT_SOURCES, TextData, is_text_source, load_text_dataset, read_texts
from distill.text.hf import MINILM, HFTeacher, TextEncoding, load_hf_teacher
from distill.text.metrics import TextFidelity, constant_cosine, cosine_interval, text_fidelity
from distill.text.start import TeacherWeights, init_from_teacher, principal_basis, start_layers
from distill.text.train import TextDistillConfig, TextDistillResult, distill_text, embed_texts, validation_cosine

__all__ = [
    "BUILTIN_TEXT", "MINILM", "TEXT_SOURCES", "HFTeacher", "TeacherWeights", "TextData", "TextDistillConfig",
    "TextDistillResult", "TextEncoding", "TextFidelity", "TextTeacherOutputs", "constant_cosine", "cosine_interval",
    "distill_text", "embed_texts", "init_from_teacher", "is_text_source", "load_hf_teacher", "load_text_dataset",
    "principal_basis", "read_texts", "start_layers", "text_fidelity", "text_teacher_outputs", "validation_cosine",
]
