"""What a student can be: search spaces that sample an architecture and build it."""

from search_spaces import mbconv, transformer  # noqa: F401  (registers the spaces)
from search_spaces._arch import arch_hash
from search_spaces._registry import Arch, SearchSpace, UnknownSpaceError, get_space, list_spaces, register_space
from search_spaces.transformer import StudentLayers, TextStudent, TransformerSpace, example_inputs

__all__ = ["Arch", "SearchSpace", "StudentLayers", "TextStudent", "TransformerSpace", "UnknownSpaceError", "arch_hash",
           "example_inputs", "get_space", "list_spaces", "register_space"]
