"""What a student can be: search spaces that sample an architecture and build it."""

from search_spaces import mbconv, resnet, transformer  # noqa: F401  (registers the spaces)
from search_spaces._arch import arch_hash, seeded_build
from search_spaces._factory import ENTRY_POINT_GROUP, get_space, list_spaces
from search_spaces._registry import Arch, SearchSpace, UnknownSpaceError, register_space
from search_spaces.resnet import ResNetSpace
from search_spaces.transformer import INPUT_NAMES, StudentLayers, TextStudent, TransformerSpace, example_inputs

__all__ = ["ENTRY_POINT_GROUP", "INPUT_NAMES", "Arch", "ResNetSpace", "SearchSpace", "StudentLayers", "TextStudent",
           "TransformerSpace", "UnknownSpaceError", "arch_hash", "example_inputs", "get_space", "list_spaces",
           "register_space", "seeded_build"]
