"""Pause Python's cyclic garbage collector while a graph pass allocates many small objects.

Analysis, scoring and surgery create tens of thousands of short-lived objects (shapes, index
arrays, members), none of them in reference cycles that need collecting. Each allocation burst
triggers collections, and a full one walks every live object of the process: beside a loaded
PyTorch model that is ~400k objects, and ViT-B analysis + surgery measured ~10% slower
(155 vs 141 ms). Reference counting still frees everything as usual; collection resumes after.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable
from typing import ParamSpec, TypeVar

Params = ParamSpec("Params")
Result = TypeVar("Result")


def without_gc(function: Callable[Params, Result]) -> Callable[Params, Result]:
    """Run ``function`` with the cyclic collector paused (restored even when it raises)."""

    @functools.wraps(function)
    def paused(*args: Params.args, **kwargs: Params.kwargs) -> Result:
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return function(*args, **kwargs)
        finally:
            if was_enabled:
                gc.enable()

    return paused
