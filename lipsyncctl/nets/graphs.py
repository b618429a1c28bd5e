"""The UNet's denoising call replayed from a CUDA graph (``inference.cuda_graphs``).

At 256 px one guided UNet call launches about 4000 kernels; eager PyTorch then spends longer launching them
than the GPU spends running them (H200, fp16: 67 ms per call eager, 47 ms replayed from a graph, the same
output bit for bit; ``tests/bench/gpu_results/``). A graph is captured once per input signature (shapes,
dtypes, device) and replayed for every later call with that signature: the inputs are copied into the
graph's own buffers, the graph runs, and its output is returned as a new tensor.

The inference calls are graphed: ``forward(sample, timestep, encoder_hidden_states)`` on CUDA tensors with
autograd off, with or without DeepCache's ``cache`` (its refreshing and its partial passes are two graphs).
Anything else (training, a CPU tensor, a Python timestep, a new signature once ``max_graphs`` are held) runs
the ordinary forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from .unet import UNetFeatureCache


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
    pipelined renderer's other threads may use CUDA meanwhile (page-locking, copies). ``pool``: a memory pool
    shared with other graphs that never replay concurrently (their temporaries then share memory; what a
    graph returns stays alive, so no graph writes over another's outputs)."""

    def __init__(self, warmup: int = 3, pool: Any = None) -> None:
        self.graph = torch.cuda.CUDAGraph()
        self.warmup = warmup
        self.pool = pool

    def capture(self, fn: Callable[[], Tensor]) -> Tensor:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(self.graph, pool=self.pool, capture_error_mode="thread_local"):
            out = fn()
        return out

    def replay(self) -> None:
        self.graph.replay()


@dataclass
class _Captured:
    inputs: tuple[Tensor, ...]  # sample, timestep, audio (and the cached feature for a partial pass)
    graph: Graph
    out: Tensor
    feature: Tensor | None  # a refreshing DeepCache pass: the feature it caches


class GraphedForward:
    """A UNet's ``forward`` with its inference calls replayed from graphs (see the module docstring).

    Graphed: ``(sample, timestep, encoder_hidden_states)`` on ``device_type`` tensors with autograd off, and
    the same with DeepCache's ``cache`` (a refreshing pass and a partial one are two graphs: the refreshing
    graph's cached feature is copied into the caller's cache, a partial graph reads it as an input).
    ``graph_factory`` makes one :class:`Graph` per captured signature (by default a :class:`CudaGraph` in
    one memory pool for all of them, on ``cuda`` tensors; the CPU tests give a stand-in and ``cpu``); at most
    ``max_graphs`` are held, calls of a new signature beyond them run the ordinary forward. ``graphed``
    counts the calls that were replayed.
    """

    def __init__(self, forward: Callable[..., Tensor], *, max_graphs: int = 4,
                 graph_factory: Callable[[], Graph] | None = None, device_type: str = "cuda") -> None:
        self.forward = forward
        self.max_graphs = max_graphs
        self.graph_factory = graph_factory or self._cuda_graph
        self.device_type = device_type
        self._pool: Any = None
        self.graphs: dict[tuple[Any, ...], _Captured] = {}
        self.graphed = 0

    def __call__(self, sample: Tensor, timestep: Any, encoder_hidden_states: Tensor | None = None,
                 *, cache: UNetFeatureCache | None = None, **kwargs: Any) -> Tensor:
        if cache is not None:
            kwargs["cache"] = cache
        tensors = (sample, timestep, encoder_hidden_states)
        if (set(kwargs) - {"cache"} or torch.is_grad_enabled()
                or not all(torch.is_tensor(v) and v.device.type == self.device_type for v in tensors)):
            return self.forward(sample, timestep, encoder_hidden_states, **kwargs)
        mode = "plain" if cache is None else "partial" if cache.usable(sample) else "refresh"
        inputs: tuple[Tensor, ...] = (*tensors, cache.feature) if mode == "partial" else tensors  # type: ignore[union-attr,assignment]
        key = (mode, *((tuple(t.shape), t.dtype, t.device) for t in inputs))
        entry = self.graphs.get(key)
        if entry is None and len(self.graphs) >= self.max_graphs:
            return self.forward(sample, timestep, encoder_hidden_states, **kwargs)
        # captured and replayed with the tensors' GPU current (a worker on cuda:1 need not have made it so)
        with torch.cuda.device(sample.device) if sample.device.type == "cuda" else contextlib.nullcontext():
            if entry is None:
                entry = self.graphs[key] = self._capture(mode, inputs)
            for static, value in zip(entry.inputs, inputs, strict=True):
                static.copy_(value)
            entry.graph.replay()
        self.graphed += 1
        if mode == "partial":  # what the UNet does to the cache, done here
            cache.partial_steps += 1  # type: ignore[union-attr]
        elif mode == "refresh" and entry.feature is not None:
            cache.feature, cache.refresh = entry.feature.clone(), False  # type: ignore[union-attr]
        return entry.out.clone()

    def _cuda_graph(self) -> Graph:
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        return CudaGraph(pool=self._pool)

    def _capture(self, mode: str, inputs: tuple[Tensor, ...]) -> _Captured:
        static = tuple(t.clone() for t in inputs)
        private = None if mode == "plain" else UNetFeatureCache()

        def call() -> Tensor:
            if private is None:
                return self.forward(*static)
            private.refresh, private.feature = mode == "refresh", static[3] if mode == "partial" else None
            return self.forward(*static[:3], cache=private)

        graph = self.graph_factory()
        out = graph.capture(call)
        feature = private.feature if private is not None and mode == "refresh" else None
        return _Captured(static, graph=graph, out=out, feature=feature)


def enable_cuda_graphs(module: nn.Module, **kwargs: Any) -> GraphedForward:
    """Replace ``module.forward`` (an instance attribute: the object, its weights and its state dict stay the
    same) by a :class:`GraphedForward` of it, and return that."""
    graphed = GraphedForward(module.forward, **kwargs)
    module.forward = graphed  # type: ignore[method-assign]
    return graphed
