"""The UNet's denoising call replayed from a CUDA graph (``inference.cuda_graphs``).

At 256 px one guided UNet call launches about 4000 kernels; eager PyTorch then spends longer launching them
than the GPU spends running them (H200, fp16: 67 ms per call eager, 47 ms replayed from a graph, the same
output bit for bit; ``tests/bench/gpu_results/``). A graph is captured once per input signature (shapes,
dtypes, device) and replayed for every later call with that signature: the inputs are copied into the
graph's own buffers, the graph runs, and its output is returned as a new tensor.

Only the plain inference call is graphed: ``forward(sample, timestep, encoder_hidden_states)`` on CUDA
tensors with autograd off. Anything else (training, the DeepCache call with its ``cache``, a CPU tensor, a
new signature once ``max_graphs`` are held) runs the ordinary forward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn


class Graph(Protocol):
    """What :class:`GraphedForward` needs of a graph: capture a call once, then replay it."""

    def capture(self, fn: Callable[[], Tensor]) -> Tensor:
        """Run ``fn`` once in capture and return its output buffer (written again by each replay)."""
        ...

    def replay(self) -> None:
        ...


class CudaGraph:
    """:class:`Graph` on ``torch.cuda.CUDAGraph``: three warm-up calls on a side stream (cuDNN and cuBLAS pick
    their kernels and workspaces outside the capture), then the capture. ``thread_local`` capture: the
    pipelined renderer's other threads may use CUDA meanwhile (page-locking, copies)."""

    def __init__(self, warmup: int = 3) -> None:
        self.graph = torch.cuda.CUDAGraph()
        self.warmup = warmup

    def capture(self, fn: Callable[[], Tensor]) -> Tensor:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            out = fn()
        return out

    def replay(self) -> None:
        self.graph.replay()


@dataclass
class _Captured:
    sample: Tensor
    timestep: Tensor
    context: Tensor
    graph: Graph
    out: Tensor


class GraphedForward:
    """A module's ``forward`` with its plain inference call replayed from graphs (see the module docstring).

    ``graph_factory`` makes one :class:`Graph` per captured signature for tensors on ``device_type``
    (:class:`CudaGraph` and ``cuda`` by default; the CPU tests give a stand-in and ``cpu``). ``graphed``
    counts the calls that were replayed.
    """

    def __init__(self, forward: Callable[..., Tensor], *, max_graphs: int = 2,
                 graph_factory: Callable[[], Graph] = CudaGraph, device_type: str = "cuda") -> None:
        self.forward = forward
        self.max_graphs = max_graphs
        self.graph_factory = graph_factory
        self.device_type = device_type
        self.graphs: dict[tuple[Any, ...], _Captured] = {}
        self.graphed = 0

    def __call__(self, sample: Tensor, timestep: Any, encoder_hidden_states: Tensor | None = None,
                 **kwargs: Any) -> Tensor:
        plain = (not kwargs and encoder_hidden_states is not None and torch.is_tensor(timestep)
                 and not torch.is_grad_enabled()
                 and sample.device.type == timestep.device.type == encoder_hidden_states.device.type
                 == self.device_type)
        if not plain:
            return self.forward(sample, timestep, encoder_hidden_states, **kwargs)
        key = tuple((tuple(t.shape), t.dtype, t.device) for t in (sample, timestep, encoder_hidden_states))
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= self.max_graphs:
                return self.forward(sample, timestep, encoder_hidden_states)
            entry = self._capture(sample, timestep, encoder_hidden_states)
            self.graphs[key] = entry
        entry.sample.copy_(sample)
        entry.timestep.copy_(timestep)
        entry.context.copy_(encoder_hidden_states)
        entry.graph.replay()
        self.graphed += 1
        return entry.out.clone()

    def _capture(self, sample: Tensor, timestep: Tensor, context: Tensor) -> _Captured:
        static = sample.clone(), timestep.clone(), context.clone()
        graph = self.graph_factory()
        out = graph.capture(lambda: self.forward(*static))
        return _Captured(*static, graph=graph, out=out)


def enable_cuda_graphs(module: nn.Module, **kwargs: Any) -> GraphedForward:
    """Replace ``module.forward`` (an instance attribute: the object, its weights and its state dict stay the
    same) by a :class:`GraphedForward` of it, and return that."""
    graphed = GraphedForward(module.forward, **kwargs)
    module.forward = graphed  # type: ignore[method-assign]
    return graphed
