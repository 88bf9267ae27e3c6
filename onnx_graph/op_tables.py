"""Tables of one function per ONNX op type, filled by a decorator.

Shape functions (``shape_functions``) and shape-subgraph evaluators (``shape_subgraph``) each
keep such a table: ``register = table_decorator(TABLE)`` then ``@register("Add", "Sub")``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

Function = TypeVar("Function", bound=Callable[..., object])


def table_decorator(
    table: dict[str, Function],
) -> Callable[..., Callable[[Function], Function]]:
    """A decorator factory: ``register(*op_types)`` stores the function under each op type."""

    def register(*op_types: str) -> Callable[[Function], Function]:
        def decorate(function: Function) -> Function:
            for op_type in op_types:
                table[op_type] = function
            return function

        return decorate

    return register
