"""What a student can be: search spaces that sample an architecture and build it."""

from search_spaces import mbconv  # noqa: F401  (registers the space)
from search_spaces._arch import arch_hash
from search_spaces._registry import Arch, SearchSpace, UnknownSpaceError, get_space, list_spaces, register_space

__all__ = ["Arch", "SearchSpace", "UnknownSpaceError", "arch_hash", "get_space", "list_spaces", "register_space"]
