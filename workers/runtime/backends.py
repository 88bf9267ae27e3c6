"""The built-in latency backends: onnxruntime, the sparse-kernel executor, torch eager on CPU,
and torch on a CUDA GPU.

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


@register_backend("torch-cuda")
class TorchCudaBackend(LatencyBackend):
    """A ``torch.nn.Module`` on a CUDA GPU, replayed from a CUDA graph, optionally in half
    precision with its 2:4 layers on sparse tensor cores (see ``workers.runtime.cuda_runner``).

    ``threads`` sets torch's CPU threads; the GPU work does not depend on it. The runner's
    ``plan`` attribute lists the layers that run semi-structured and why the others do not.

    Args:
        dtype: "float32", "float16" or "bfloat16".
        channels_last: NHWC memory for convolutional models.
        semi_structured: run qualifying 2:4 Linear and pointwise Conv2d layers through
            cuSPARSELt (needs float16 or bfloat16).
        cuda_graph: capture and replay (default) rather than launch kernel by kernel.
        resident_inputs: keep an input array on the device while the caller passes the same
            array object (default), rather than copying it up on every call.
    """

    def __init__(
        self,
        dtype: str = "float32",
        channels_last: bool = False,
        semi_structured: bool = False,
        cuda_graph: bool = True,
        resident_inputs: bool = True,
    ) -> None:
        from workers.runtime.cuda_runner import CudaRunOptions

        self.options = CudaRunOptions(
            dtype, channels_last, semi_structured, cuda_graph, resident_inputs
        )

    @classmethod
    def unavailable_reason(cls) -> str | None:
        import torch

        if torch.cuda.is_available():
            return None
        return f"needs a CUDA device; torch {torch.__version__} sees none"

    def accepts(self, model: Any) -> bool:
        import torch

        return isinstance(model, torch.nn.Module)

    def load(self, model: Any, threads: int) -> Runner:
        import torch

        from workers.runtime.cuda_runner import CudaModuleRunner

        reason = self.unavailable_reason()
        if reason is not None:
            raise RuntimeError(f"latency backend {self.name!r} {reason}")
        torch.set_num_threads(threads)
        return CudaModuleRunner(model, self.options)
