"""PEFT methods behind one interface (`base.Method`), registered by name."""

from autopeft.methods.base import Knob, Method, MethodConfig
from autopeft.methods.registry import METHODS, build_method, get_method_class, parse_method_list

__all__ = [
    "METHODS",
    "Knob",
    "Method",
    "MethodConfig",
    "build_method",
    "get_method_class",
    "parse_method_list",
]
