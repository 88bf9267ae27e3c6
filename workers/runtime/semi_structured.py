"""2:4 sparse tensor cores for a torch module: which layers qualify, a 2:4 magnitude mask, and the
conversion to torch's semi-structured (cuSPARSELt) weights.

A GPU with sparse tensor cores (Ampere and later) multiplies a 2:4 weight in half the MACs, but
only through a matrix product: torch runs ``F.linear`` with a ``SparseSemiStructuredTensor``
weight and has no sparse convolution. So a ``Linear`` qualifies, and so does a pointwise
``Conv2d`` (1x1, stride 1, no padding, one group), run as a linear over channels on a
channels-last tensor, where the permutes on either side are views and cost nothing. Every other
layer stays dense, and :class:`SemiStructuredPlan` says why, so a latency number is never read as
covering layers it did not touch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from workers.runtime.nm_sparsity import is_nm, nm_mask

# cuSPARSELt's half-precision limits as torch checks them (SparseSemiStructuredTensorCUSPARSELT):
# both dims of the sparse weight a multiple of 16. Checked here so a plan made on a machine
# without a GPU already says which layers will convert.
WEIGHT_DIM_MULTIPLE = 16
SPARSE_DTYPES = ("float16", "bfloat16")
WeightLayer = torch.nn.Linear | torch.nn.Conv2d


@dataclass(frozen=True)
class SemiStructuredPlan:
    """Which layers of a module run on sparse tensor cores.

    Attributes:
        converted: qualified names of the layers whose weight becomes semi-structured.
        dense: qualified name -> why that Linear or Conv2d stays dense.
    """

    converted: tuple[str, ...]
    dense: dict[str, str] = field(default_factory=dict)


def is_pointwise_conv(layer: torch.nn.Module) -> bool:
    """A Conv2d that is a per-pixel matrix product: 1x1 kernel, stride 1, no padding, one group."""
    return (
        isinstance(layer, torch.nn.Conv2d)
        and tuple(layer.kernel_size) == (1, 1)
        and tuple(layer.stride) == (1, 1)
        and tuple(layer.dilation) == (1, 1)
        and layer.groups == 1
        and (layer.padding == "valid" or tuple(layer.padding) == (0, 0))
    )


def _matrix(layer: WeightLayer) -> np.ndarray:
    """The layer's weight as the (out, in) matrix the sparse product sees, in float32."""
    return layer.weight.detach().float().cpu().reshape(layer.weight.shape[0], -1).numpy()


def _why_dense(
    layer: WeightLayer, owner: torch.nn.Module | None, check_pattern: bool = True
) -> str | None:
    """None when the layer can run on sparse tensor cores, else the reason it cannot; without
    ``check_pattern``, whether it could once its weight is 2:4. ``owner`` is its parent."""
    if isinstance(owner, torch.nn.MultiheadAttention):
        return "MultiheadAttention reads out_proj.weight itself, not through Linear.forward"
    if owner is None and is_pointwise_conv(layer):
        return "a Conv2d that is the whole module has no parent to take its linear stand-in"
    if isinstance(layer, torch.nn.Conv2d) and not is_pointwise_conv(layer):
        return (
            f"Conv2d {tuple(layer.kernel_size)} kernel, stride {tuple(layer.stride)}, "
            f"{layer.groups} group(s): torch has 2:4 matrix products only, not convolutions"
        )
    rows, cols = layer.weight.shape[0], int(np.prod(layer.weight.shape[1:]))
    if rows % WEIGHT_DIM_MULTIPLE or cols % WEIGHT_DIM_MULTIPLE:
        return (
            f"weight {rows}x{cols}: cuSPARSELt needs both dims a multiple of {WEIGHT_DIM_MULTIPLE}"
        )
    if check_pattern and not is_nm(_matrix(layer), 2, 4):
        return "weight is not 2:4 sparse along its inputs (apply_two_four prunes it)"
    return None


def _candidate_layers(
    module: torch.nn.Module,
) -> list[tuple[str, WeightLayer, torch.nn.Module | None]]:
    """Every Linear and Conv2d with its qualified name and its parent module (None for the
    module itself)."""
    found = []
    for name, layer in module.named_modules():
        if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
            parent_name = name.rpartition(".")[0]
            owner = module.get_submodule(parent_name) if name else None
            found.append((name, layer, owner))
    return found


def plan_semi_structured(module: torch.nn.Module) -> SemiStructuredPlan:
    """Which Linear and Conv2d layers of ``module`` can take a semi-structured weight, and why
    the others cannot. Runs on any device; the conversion itself needs CUDA."""
    converted: list[str] = []
    dense: dict[str, str] = {}
    for name, layer, owner in _candidate_layers(module):
        reason = _why_dense(layer, owner)
        if reason is None:
            converted.append(name)
        else:
            dense[name] = reason
    return SemiStructuredPlan(tuple(converted), dense)


def apply_two_four(module: torch.nn.Module) -> list[str]:
    """Prune, in place, every Linear and pointwise Conv2d whose shape cuSPARSELt takes to 2:4 by
    magnitude: the two largest of every four consecutive input weights stay.

    Returns:
        The qualified names of the layers pruned.
    """
    pruned = []
    for name, layer, owner in _candidate_layers(module):
        if _why_dense(layer, owner, check_pattern=False) is not None:
            continue
        mask = nm_mask(_matrix(layer), 2, 4).reshape(layer.weight.shape)
        with torch.no_grad():
            layer.weight.mul_(torch.from_numpy(mask).to(layer.weight.device))
        pruned.append(name)
    return pruned


class PointwiseLinear(torch.nn.Module):
    """A 1x1 stride-1 Conv2d as ``F.linear`` over the channels of the channels-last view.

    On a channels-last input the permutes are views, so the product reads and writes in place;
    on a contiguous NCHW input the first permute costs a copy.
    """

    def __init__(self, conv: torch.nn.Conv2d) -> None:
        super().__init__()
        weight = conv.weight.detach().reshape(conv.weight.shape[0], -1)
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = None if conv.bias is None else torch.nn.Parameter(conv.bias.detach(), False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x.permute(0, 2, 3, 1)
        if not pixels.is_contiguous():
            pixels = pixels.contiguous()
        return torch.nn.functional.linear(pixels, self.weight, self.bias).permute(0, 3, 1, 2)


def convert_semi_structured(module: torch.nn.Module) -> SemiStructuredPlan:
    """Give every qualifying layer of a CUDA half-precision ``module`` a cuSPARSELt weight, in
    place. A layer that torch still refuses stays dense, with torch's message as the reason.

    Raises:
        ValueError: the module is not on a CUDA device in float16 or bfloat16.
    """
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    parameter = next(module.parameters(), None)
    if parameter is None or parameter.device.type != "cuda":
        raise ValueError("2:4 semi-structured weights need the module on a CUDA device")
    if str(parameter.dtype).removeprefix("torch.") not in SPARSE_DTYPES:
        raise ValueError(
            f"2:4 semi-structured weights need {' or '.join(SPARSE_DTYPES)}, got {parameter.dtype}"
        )
    # CUTLASS's 2:4 kernels exist for sm80 only; cuSPARSELt covers Ampere and Hopper.
    SparseSemiStructuredTensor._FORCE_CUTLASS = False
    plan = plan_semi_structured(module)
    qualified = set(plan.converted)
    converted = []
    dense = dict(plan.dense)
    for name, layer, owner in _candidate_layers(module):
        if name not in qualified:
            continue
        # A qualified Conv2d is pointwise (plan_semi_structured): its stand-in takes the weight.
        target = PointwiseLinear(layer) if isinstance(layer, torch.nn.Conv2d) else layer
        try:
            sparse = to_sparse_semi_structured(target.weight.detach())
        except (RuntimeError, ValueError) as error:
            dense[name] = f"torch refused the conversion: {error}"
            continue
        target.weight = torch.nn.Parameter(sparse, requires_grad=False)
        if target is not layer:  # a pointwise conv: its parent takes the stand-in
            assert owner is not None
            setattr(owner, name.rpartition(".")[2], target)
        converted.append(name)
    return SemiStructuredPlan(tuple(converted), dense)
