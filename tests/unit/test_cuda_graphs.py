"""``inference.cuda_graphs`` (issue 12): the UNet's plain denoising call replayed from a graph.

On the CPU a stand-in graph (capture = one call, replay = the call again into the captured output buffer)
checks everything but CUDA itself: the inputs reach the graph's buffers on every call, the caller gets its own
output tensor, a guided DDIM window is the same bit for bit, and every call that is not the plain inference
call (training, DeepCache, a new signature past the limit) runs the ordinary forward. The real CUDA capture
is tested with ``-m gpu`` (and measured by ``scripts/gpu_unet_profile.py``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from lipsyncctl import config as cfg
from lipsyncctl.errors import MissingToolError
from lipsyncctl.nets.graphs import CudaGraph, GraphedForward, enable_cuda_graphs
from lipsyncctl.nets.unet import UNet3DConditionModel, UNetFeatureCache
from lipsyncctl.pipeline.denoise import denoise, make_scheduler
from lipsyncctl.pipeline.networks import tune_networks
from tests.sync_media import tiny_models


class ReplayedEagerly:
    """A :class:`~lipsyncctl.nets.graphs.Graph` stand-in with a graph's buffer semantics."""

    captures = 0

    def capture(self, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        ReplayedEagerly.captures += 1
        self.fn = fn
        self.out = fn()
        return self.out

    def replay(self) -> None:
        self.out.copy_(self.fn())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with tiny_models(tmp_path_factory.mktemp("models")) as env:
        yield env


def _unet() -> UNet3DConditionModel:
    from lipsyncctl.checkpoints.archs import load_unet_config

    torch.manual_seed(0)
    return UNet3DConditionModel(load_unet_config("tiny")).eval()


def _inputs(seed: int, frames: int = 4, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 13, frames, 8, 8, generator=gen)
    return x, torch.tensor(100 * seed + 1), torch.randn(batch * frames, 50, 384, generator=gen)


def test_replayed_calls_equal_the_eager_forward_and_own_their_output() -> None:
    unet = _unet()
    graphed = GraphedForward(unet.forward, graph_factory=ReplayedEagerly, device_type="cpu")
    with torch.inference_mode():
        eager = [unet(*_inputs(s)) for s in range(3)]
        outs = [graphed(*_inputs(s)) for s in range(3)]  # one capture, then new inputs into its buffers
    assert graphed.graphed == 3 and len(graphed.graphs) == 1
    for got, want in zip(outs, eager, strict=True):
        assert torch.equal(got, want)
    assert len({o.data_ptr() for o in outs}) == 3  # each caller got its own tensor, not the graph's buffer


def test_other_calls_run_the_ordinary_forward() -> None:
    unet = _unet()
    graphed = GraphedForward(unet.forward, max_graphs=1, graph_factory=ReplayedEagerly, device_type="cpu")
    x, t, audio = _inputs(1)
    want = unet(x, t, audio).detach()
    assert torch.equal(graphed(x, t, audio), want) and graphed.graphed == 0  # autograd on: training
    with torch.inference_mode():
        graphed(x, 501, audio)  # a Python timestep
        graphed(x, t, None)  # no audio condition
        assert graphed.graphed == 0 and not graphed.graphs
        graphed(x, t, audio)
        other = _inputs(2, frames=3)  # a second signature past max_graphs=1: eager, not captured
        assert torch.equal(graphed(*other), unet(*other))
    assert graphed.graphed == 1 and len(graphed.graphs) == 1


@pytest.mark.parametrize("deepcache", [None, 3], ids=["plain", "deepcache"])
def test_a_guided_window_is_the_same_bytes_with_graphs(deepcache: int | None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    unet = _unet()
    gen = torch.Generator().manual_seed(3)
    tensors = {k: torch.randn(1, c, 4, 8, 8, generator=gen) for k, c in
               (("latents", 4), ("mask_latents", 1), ("masked_image_latents", 4), ("ref_latents", 4))}
    audio = torch.randn(4, 50, 384, generator=gen)
    caches: list[UNetFeatureCache] = []
    monkeypatch.setattr(UNetFeatureCache, "__init__", lambda self: caches.append(self))  # the loop's cache

    def window() -> torch.Tensor:
        with torch.inference_mode():
            return denoise(unet, make_scheduler(), **tensors, audio_embeds=audio, steps=7, guidance_scale=1.5,
                           cache_interval=deepcache)

    want = window()
    before = ReplayedEagerly.captures
    graphed = enable_cuda_graphs(unet, graph_factory=ReplayedEagerly, device_type="cpu")
    assert unet.forward is graphed and "conv_in.weight" in unet.state_dict()
    assert torch.equal(window(), want)
    assert graphed.graphed == 7
    if deepcache:  # refreshing steps 0, 3, 6 and partial ones between: two graphs, the same partial count
        assert ReplayedEagerly.captures == before + 2 and caches[0].partial_steps == caches[1].partial_steps == 4
    else:
        assert ReplayedEagerly.captures == before + 1


def test_cuda_graphs_off_cuda_is_one_clear_error(tiny) -> None:  # type: ignore[no-untyped-def]
    config, networks = tiny
    forward = networks.unet.forward
    with pytest.raises(MissingToolError, match="needs a CUDA GPU") as e:
        tune_networks(networks, cfg.resolve(config.to_dict(), ["inference.cuda_graphs=true"]).inference)
    assert e.value.exit_code == 4 and "inference.cuda_graphs" in (e.value.hint or "")
    assert networks.unet.forward == forward  # nothing wrapped


def test_a_render_with_graphs_reuses_the_renders_without() -> None:
    """The same bytes: a timeline shot rendered without graphs is not rendered again with them."""
    from lipsyncctl.runner.store import config_for_key

    on, off = (cfg.resolve("latentsync-1.5", [f"inference.cuda_graphs={v}"]).to_dict() for v in ("true", "false"))
    assert on != off and config_for_key(on) == config_for_key(off)


@pytest.mark.gpu
def test_cuda_graph_replay_is_the_eager_result_on_a_gpu() -> None:
    unet = _unet().cuda().half()
    graphed = GraphedForward(unet.forward)
    with torch.inference_mode():
        for seed in range(3):
            x, t, audio = (v.cuda() for v in _inputs(seed))
            assert torch.equal(graphed(x.half(), t, audio.half()), unet(x.half(), t, audio.half()))
            eager_cache, graph_cache = UNetFeatureCache(), UNetFeatureCache()
            for _ in range(2):  # a refreshing pass, then a partial one
                want = unet(x.half(), t, audio.half(), cache=eager_cache)
                assert torch.equal(graphed(x.half(), t, audio.half(), cache=graph_cache), want)
            assert graph_cache.partial_steps == eager_cache.partial_steps == 1
    assert graphed.graphed == 9 and isinstance(next(iter(graphed.graphs.values())).graph, CudaGraph)


@pytest.mark.slow  # about 15 s: the tiny UNet eager and at batch 4 on the CPU
def test_gpu_unet_profile_smoke_on_cpu(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The GPU profiling script's CPU path: a row per CPU-able variant with its time, the FLOPs and a table."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "profile.json"
    proc = subprocess.run([sys.executable, str(repo / "scripts" / "gpu_unet_profile.py"), "--smoke", "-o", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=repo)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["variant"]: r for r in json.loads(out.read_text())["variants"]}
    assert set(rows) == {"eager", "batch4"} and not any(r["error"] for r in rows.values())
    assert rows["eager"]["tflop_per_call"] > 0 and "Self CPU" in rows["eager"]["profile"]
    assert rows["batch4"]["batch"] == 4 and rows["batch4"]["ms_per_call"] > 0
