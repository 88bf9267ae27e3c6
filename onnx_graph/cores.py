"""How many CPUs this process may use: decides whether memory-bound copies get a helper thread."""

from __future__ import annotations

import os


def available_cores() -> int:
    """CPUs this process may run on (its affinity where the OS reports one, e.g. under taskset)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
