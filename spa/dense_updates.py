"""The dense part of a HESSO step: SGD (momentum, Nesterov), Adam and AdamW updates.

Written out rather than delegated to ``torch.optim`` so that HESSO owns the moment buffers it reads
as gradient and curvature estimates for its saliency. ``states`` is the optimizer's
per-parameter state mapping; ``group`` one of its param groups.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def _sgd_update(states: Any, group: dict[str, Any]) -> None:
    for parameter in group["params"]:
        if parameter.grad is None:
            continue
        grad = parameter.grad
        if group["weight_decay"]:
            grad = grad.add(parameter, alpha=group["weight_decay"])
        if group["momentum"]:
            state = states[parameter]
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = state["momentum_buffer"] = grad.clone()
            else:
                buffer.mul_(group["momentum"]).add_(grad, alpha=1 - group["dampening"])
            grad = grad.add(buffer, alpha=group["momentum"]) if group["nesterov"] else buffer
        parameter.add_(grad, alpha=-group["lr"])


def _adam_update(states: Any, group: dict[str, Any]) -> None:
    beta1, beta2 = group["betas"]
    decoupled = group["variant"] == "adamw"
    for parameter in group["params"]:
        if parameter.grad is None:
            continue
        grad = parameter.grad
        if group["weight_decay"]:
            if decoupled:
                parameter.mul_(1 - group["lr"] * group["weight_decay"])
            else:
                grad = grad.add(parameter, alpha=group["weight_decay"])
        state = states[parameter]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(parameter)
            state["exp_avg_sq"] = torch.zeros_like(parameter)
        state["step"] += 1
        state["exp_avg"].mul_(beta1).add_(grad, alpha=1 - beta1)
        state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        corrected_first = state["exp_avg"] / (1 - beta1 ** state["step"])
        corrected_second = state["exp_avg_sq"] / (1 - beta2 ** state["step"])
        parameter.addcdiv_(
            corrected_first, corrected_second.sqrt().add_(group["eps"]), value=-group["lr"]
        )


VARIANT_UPDATES: dict[str, Callable[[Any, dict[str, Any]], None]] = {
    "sgd": _sgd_update,
    "adam": _adam_update,
    "adamw": _adam_update,
}
