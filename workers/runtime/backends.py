"""The built-in latency backends: onnxruntime, the sparse-kernel executor, and torch eager.

Each states its thread count and options explicitly; importing this module registers them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workers.runtime.latency import Feeds, LatencyBackend, Runner, register_backend


@register_backend("onnxruntime")
class OnnxRuntimeBackend(LatencyBackend):
    """Plain onnxruntime on CPU: the reference for "faster".

    Args:
        optimization: graph optimisation level ("disable", "basic", "extended", "all").
        spinning: whether idle intra-op threads spin (onnxruntime's default is yes).
    """

    def __init__(self, optimization: str = "all", spinning: bool = True) -> None:
        self.optimization = optimization
        self.spinning = spinning

    def load(self, model: Any, threads: int) -> Runner:
        import onnxruntime as ort

        from workers.runtime.executor import session_options

        session = ort.InferenceSession(
            model.SerializeToString(),
            session_options(threads, self.optimization, self.spinning),
            providers=["CPUExecutionProvider"],
        )
        return lambda feeds: session.run(None, dict(feeds))


@register_backend("sparse")
class SparseKernelBackend(LatencyBackend):
    """The sparse-kernel executor: sparse weight layers in the C kernels, the rest in onnxruntime.

    Args:
        fmt: sparse format for every sparse layer, or "auto".
        min_sparsity: weight layers with fewer zeros stay dense.
    """

    def __init__(self, fmt: str = "auto", min_sparsity: float = 0.5) -> None:
        self.fmt = fmt
        self.min_sparsity = min_sparsity

    def load(self, model: Any, threads: int) -> Runner:
        from workers.runtime.executor import SparseExecutor

        executor = SparseExecutor(model, threads, self.fmt, self.min_sparsity)
        return executor.run


@register_backend("torch")
class TorchBackend(LatencyBackend):
    """A ``torch.nn.Module`` in eager mode under ``inference_mode``.

    Feeds are passed positionally in the order given. ``torch.set_num_threads`` is process-wide,
    so the runner sets it on every call rather than trusting the last caller.
    """

    def accepts(self, model: Any) -> bool:
        import torch

        return isinstance(model, torch.nn.Module)

    def load(self, model: Any, threads: int) -> Runner:
        import torch

        module = model.eval()

        def run(feeds: Feeds) -> list[np.ndarray]:
            torch.set_num_threads(threads)
            with torch.inference_mode():
                outputs = module(*(torch.from_numpy(np.asarray(v)) for v in feeds.values()))
            if isinstance(outputs, torch.Tensor):
                outputs = (outputs,)
            return [output.numpy() for output in outputs]

        return run
