#!/usr/bin/env python
"""Sync speed and peak VRAM on a lent GPU, full-size random networks (issue 12): one JSON.

Two kinds of rows, each measured after a warm-up and recorded with the GPU's name:

- ``model``: the network stages of the renderer alone (:meth:`lipsyncctl.pipeline.render.Renderer.generate`:
  VAE encode of the masked and reference faces, guided DDIM, VAE decode) on ``--windows`` synthetic calls of
  ``inference.batch_windows`` windows of 16 faces, with the LatentSync 1.5 UNet at 256 and the 1.6 UNet at 512 (random weights, the official
  configs), the SD VAE and the official sampling (``--steps`` 20, guidance 1.5), in fp16 and bf16, and at 256
  fp16 the GPU options ``inference.cuda_graphs`` (also at 512, with DeepCache), ``inference.channels_last``,
  ``inference.compile`` (alone and with CUDA graphs: its reduce-overhead mode), DeepCache and two windows per
  UNet batch (``inference.batch_windows=2``), the last two alone and with CUDA graphs. Frames/s of the model
  stages (goal: >= 35 at 256 and >= 8 at 512 on an H100/H200-class GPU), ``max_memory_allocated`` (goal:
  <= 6 GiB at 256 in fp16).
- ``e2e``: the whole ``sync_clip`` of ``--seconds`` of ``--clip`` (the 1080x1920 fixture) with the same
  networks at 256 fp16, pipelined and serial (their output sha256 must be equal), and with
  ``inference.cuda_graphs`` (its sha256 should equal the default's: a graph replays the same kernels), and with it
  ``inference.gpu_paste`` (the paste-back on the GPU: its ``paste`` stage against the CPU's); frames/s end to end
  (goal: >= 25) and per stage. This needs the media stack (PyAV) and a face detector backend, or ``--faces
  FILE``: the clip's face plan tracked beforehand on another machine (``--save-faces FILE`` there, with the
  same ``--clip`` and ``--seconds``), used instead of tracking (the row says ``faces: precomputed``: the face
  pass is then not in the time). A row that cannot run records its error and the next row runs.

An out-of-memory or any other error is recorded in its row; the JSON is rewritten after every row, so a run
cut short keeps what it measured.

    python scripts/gpu_sync_bench.py [-o $OUT/sync_bench.json] [--windows 3] [--steps 20] [--seconds 4]
                                     [--rows model,e2e] [--clip PATH --audio PATH]
    python scripts/gpu_sync_bench.py --smoke     # CPU, tiny networks, 1 step: checks the script (a test runs it)
    python scripts/gpu_sync_bench.py --save-faces .gpu/faces.npz --clip ... --seconds 4    # CPU, with a detector
    (``scripts/gpu_session.sh`` prepares and runs every GPU check of the project in one device call)

On the lent machine (its python has torch, accelerate, transformers, opencv; not this package's other
needs): carry wheels of diffusers, pydantic (+ pydantic-core, annotated-types, typing-inspection), av,
platformdirs, imageio-ffmpeg and, for e2e, a detector backend (device README: ``.whl`` + ``carry``), and the
fixture in a carried folder (``--clip``/``--audio``): ``../shared`` does not travel.

Exit status 0 when every row ran, 1 when a row failed, 2 without a GPU (and without --smoke).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import json
import sys
import tempfile
import time
import traceback
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lipsyncctl import config as cfg  # noqa: E402
from lipsyncctl.pipeline.networks import Networks, load_networks, tune_networks  # noqa: E402

GiB = 2**30
FIXTURE = REPO.parent / "shared" / "fixtures"
#: model rows: (preset, dtype, variant); the preset gives the UNet config and the resolution
#: (compile last: its compilation may not finish inside a short device call)
MODEL_ROWS = [("latentsync-1.5", "fp16", "default"), ("latentsync-1.5", "fp16", "cuda_graphs"),
              ("latentsync-1.5", "fp16", "batch_windows2"), ("latentsync-1.5", "fp16", "batch_windows2_cuda_graphs"),
              ("latentsync-1.5", "bf16", "default"), ("latentsync-1.5", "fp16", "channels_last"),
              ("latentsync-1.5", "fp16", "deepcache"), ("latentsync-1.5", "fp16", "deepcache_cuda_graphs"),
              ("latentsync-1.6", "fp16", "default"),
              ("latentsync-1.6", "fp16", "cuda_graphs"), ("latentsync-1.6", "fp16", "deepcache"),
              ("latentsync-1.6", "bf16", "default"),
              ("latentsync-1.5", "fp16", "compile"), ("latentsync-1.5", "fp16", "compile_cuda_graphs")]
#: e2e rows (at 256 fp16): the default (also run serially: same bytes), the CUDA-graph option, and with it the
#: paste-back on the GPU (its ``paste`` stage seconds against the others')
E2E_VARIANTS = ["default", "cuda_graphs", "cuda_graphs_gpu_paste"]
VARIANT_SETS = {"default": [], "channels_last": ["inference.channels_last=true"],
                "compile": ["inference.compile=true"], "deepcache": ["inference.deepcache=true"],
                "cuda_graphs": ["inference.cuda_graphs=true"],
                "deepcache_cuda_graphs": ["inference.deepcache=true", "inference.cuda_graphs=true"],
                "batch_windows2": ["inference.batch_windows=2"],
                "batch_windows2_cuda_graphs": ["inference.batch_windows=2", "inference.cuda_graphs=true"],
                "compile_cuda_graphs": ["inference.compile=true", "inference.cuda_graphs=true"],
                "gpu_paste": ["inference.gpu_paste=true"],
                "cuda_graphs_gpu_paste": ["inference.cuda_graphs=true", "inference.gpu_paste=true"]}


def random_networks(config: cfg.Config, device: torch.device, dtype: torch.dtype) -> Networks:
    """Full-size networks with random weights and no files: the config's UNet, the SD VAE and a whisper-tiny
    encoder (its architecture), on ``device`` in ``dtype``, with the config's GPU options applied."""
    from diffusers import AutoencoderKL

    from lipsyncctl.checkpoints.archs import load_scheduler_config, load_unet_config
    from lipsyncctl.checkpoints.loaders import SD_VAE_FT_MSE_CONFIG
    from lipsyncctl.checkpoints.tiny import WHISPER_TINY_DIMS
    from lipsyncctl.checkpoints.whisper import whisper_config
    from lipsyncctl.nets.unet import UNet3DConditionModel
    from lipsyncctl.nets.whisper import WhisperFeatureEncoder, build_whisper_encoder
    from lipsyncctl.pipeline.denoise import make_scheduler

    torch.manual_seed(0)
    with torch.device(device):  # built where they run, with their modules' own random initialisation
        unet = UNet3DConditionModel(load_unet_config(config.model.unet_config))
    vae = AutoencoderKL(**SD_VAE_FT_MSE_CONFIG)
    whisper = WhisperFeatureEncoder(build_whisper_encoder(whisper_config(WHISPER_TINY_DIMS)))  # the real dims
    nets = Networks(unet=unet.to(device, dtype).eval(), vae=vae.to(device, dtype).eval(),
                    whisper=whisper.to(device, dtype).eval(), scheduler=make_scheduler(load_scheduler_config()),
                    device=device, dtype=dtype, resolution=config.model.resolution)
    return tune_networks(nets, config.inference)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _memory(device: torch.device) -> dict[str, float | None]:
    if device.type != "cuda":
        return {"peak_allocated_gib": None, "peak_reserved_gib": None}
    return {"peak_allocated_gib": round(torch.cuda.max_memory_allocated(device) / GiB, 3),
            "peak_reserved_gib": round(torch.cuda.max_memory_reserved(device) / GiB, 3)}


def model_row(config: cfg.Config, networks: Networks, windows: int) -> dict[str, Any]:
    """The renderer's network stage on ``windows`` synthetic windows of ``inference.window`` faces (after one
    warm-up window): frames/s of the model stages and the stage seconds."""
    from lipsyncctl.faces.mask import mouth_mask, prepare_masked_images
    from lipsyncctl.pipeline.clip import _Clock
    from lipsyncctl.pipeline.render import Renderer, Window

    res, n = config.model.resolution, config.inference.window
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(50 * 8, 5, 384, generator=gen).to(networks.device, networks.dtype)  # 8 s of audio
    clock = _Clock()
    renderer = Renderer(networks, config, SimpleNamespace(fps=Fraction(25)), None, features, clock)  # type: ignore[arg-type]
    faces = (torch.rand(n, 3, res, res, generator=gen) * 255).to(torch.uint8)

    def window(k: int) -> Window:
        win = Window(k * n, (k + 1) * n, list(range(n)), [], [], [], list(range(n)))
        win.ref, win.masked, win.masks = prepare_masked_images(faces, mouth_mask(res))
        if networks.device.type == "cuda":
            win.pin()  # as the renderer's stage 1 does
        return win

    group = config.inference.batch_windows  # windows per call (one UNet batch)
    t0 = time.perf_counter()
    renderer.generate([window(j) for j in range(group)])  # warm-up (and the compilation, when asked)
    _sync(networks.device)
    warm = time.perf_counter() - t0
    clock.seconds.clear()
    t0 = time.perf_counter()
    for k in range(windows):
        renderer.generate([window((k + 1) * group + j) for j in range(group)])
    _sync(networks.device)
    wall = time.perf_counter() - t0
    frames = windows * group * n
    return {"frames": frames, "wall_s": round(wall, 3), "warmup_s": round(warm, 3),
            "model_fps": round(frames / wall, 2), "stage_seconds": {k: round(v, 3) for k, v in clock.seconds.items()}}


def save_faces(path: Path, clip: Path, seconds: float) -> None:
    """Track the faces of the e2e rows' frames (the 256 px preset's ``faces`` settings) and save the plan."""
    from lipsyncctl.media.reader import IndexedReader
    from lipsyncctl.pipeline.faces import save_face_plan, track_clip_faces

    config = cfg.resolve("latentsync-1.5", ["inference.device=cpu"])
    with IndexedReader(clip) as reader:
        plan = track_clip_faces(reader, 0, round(seconds * 25), reader.fps, config.faces, config.model.resolution)
    if not save_face_plan(path, plan, {"bench": clip.name, "frames": round(seconds * 25)}):
        raise OSError(f"could not write {path}")


def _saved_faces(path: Path) -> Any:
    """The plan :func:`save_faces` wrote (read strictly through the face cache's reader)."""
    import numpy as np

    from lipsyncctl.pipeline.faces import load_face_plan

    with np.load(path, allow_pickle=False) as data:
        key = json.loads(str(data["meta"][()]))["key"]
    plan = load_face_plan(path, key)
    if plan is None:
        raise ValueError(f"{path}: not a face plan written by --save-faces")
    return plan


def e2e_row(config: cfg.Config, networks: Networks, clip: Path, audio: Path, seconds: float,
            serial: bool, faces: Path | None = None) -> dict[str, Any]:
    """``sync_clip`` of the first ``seconds`` of ``clip`` (pipelined, and serial too when ``serial``); with
    ``faces``, the saved face plan stands in for the face pass."""
    from unittest import mock

    from lipsyncctl.media.audio import read_audio, write_wav
    from lipsyncctl.pipeline import faces as face_pass
    from lipsyncctl.pipeline.clip import sync_clip

    frames = (0, round(seconds * 25))
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gpu_sync_bench.") as tmp:
        dub = write_wav(Path(tmp) / "dub.wav", read_audio(audio, 16000, 1, duration=seconds), 16000)  # output length
        for pipelined in ((True, False) if serial else (True,)):
            run = cfg.resolve(config.to_dict(), [f"inference.pipelined={str(pipelined).lower()}"])
            target = Path(tmp) / f"o_{pipelined}.mp4"
            _sync(networks.device)
            t0 = time.perf_counter()
            with (mock.patch.object(face_pass, "cached_clip_faces", lambda *a, **k: (_saved_faces(faces), True))
                  if faces else contextlib.nullcontext()):
                res = sync_clip(clip, dub, target, run, frames=frames, networks=networks)
            _sync(networks.device)
            wall = time.perf_counter() - t0
            digest = hashlib.sha256(target.read_bytes()).hexdigest()
            if pipelined:
                stages = res.stage_seconds
                model = sum(stages.get(k, 0.0) for k in ("vae encode", "denoise", "vae decode"))
                out |= {"faces": "precomputed" if faces else "tracked",
                        "frames": res.frames, "wall_s": round(wall, 3), "e2e_fps": round(res.frames / wall, 2),
                        "model_fps": round(res.frames / model, 2) if model else None, "sha256": digest,
                        "stage_seconds": {k: round(v, 3) for k, v in stages.items()}}
            else:
                out |= {"wall_s_serial": round(wall, 3), "e2e_fps_serial": round(res.frames / wall, 2),
                        "sha256_serial": digest}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", type=Path, default=Path("sync_bench.json"))
    ap.add_argument("--windows", type=int, default=3, help="timed windows per model row (after one warm-up)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=4.0, help="seconds of the clip in the e2e rows")
    ap.add_argument("--rows", default="model,e2e", help="which kinds of rows: model, e2e")
    ap.add_argument("--variants", help="only the rows of these variants (comma-separated; default: every row)")
    ap.add_argument("--dtypes", help="only the rows in these dtypes (comma-separated: fp16,bf16; default: both)")
    ap.add_argument("--clip", type=Path, default=FIXTURE / "demo1_video.mp4")
    ap.add_argument("--audio", type=Path, default=FIXTURE / "demo1_audio.wav")
    ap.add_argument("--faces", type=Path, help="a face plan from --save-faces: the e2e rows use it")
    ap.add_argument("--save-faces", type=Path, help="track the e2e rows' faces here (CPU), save them and exit")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny networks, 1 step (checks the script)")
    args = ap.parse_args(argv)
    if args.save_faces:
        save_faces(args.save_faces, args.clip, args.seconds)
        return 0
    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA GPU (use --smoke to check the script on the CPU)", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.smoke else "cuda")
    kinds = set(args.rows.split(","))
    result: dict[str, Any] = {
        "device": "cpu" if args.smoke else torch.cuda.get_device_name(device), "smoke": args.smoke,
        "torch": torch.__version__, "steps": 1 if args.smoke else args.steps, "rows": []}
    plan: list[tuple[str, str, str, str]] = []
    if "model" in kinds:
        plan += [("model", *row) for row in MODEL_ROWS]
    if "e2e" in kinds:
        plan += [("e2e", "latentsync-1.5", "fp16", variant) for variant in E2E_VARIANTS]
    if args.variants:
        plan = [row for row in plan if row[3] in args.variants.split(",")]
    if args.dtypes:
        plan = [row for row in plan if row[2] in args.dtypes.split(",")]
    if args.smoke:  # the tiny preset in fp32 stands in for every preset; two variants of each kind
        plan = [(kind, "tiny", "fp32", variant) for kind, variant in
                (("model", "default"), ("model", "channels_last"), ("e2e", "default"), ("e2e", "gpu_paste"))
                if kind in kinds]
    failed = False
    for kind, preset, dtype, variant in plan:
        row: dict[str, Any] = {"kind": kind, "preset": preset, "dtype": dtype, "variant": variant, "error": None}
        sets = [f"inference.dtype={dtype}", f"inference.device={device}", *VARIANT_SETS[variant],
                f"inference.steps={result['steps']}"]
        if args.smoke:
            sets += ["inference.window=4"]
        try:
            config = cfg.resolve(preset, sets)
            row["resolution"] = config.model.resolution
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            if args.smoke:
                networks = load_networks(config)  # the tiny files through the real loaders, options applied
            else:
                networks = random_networks(config, device, {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype])
            if kind == "model":
                row |= model_row(config, networks, 1 if args.smoke else args.windows)
            else:
                row |= e2e_row(config, networks, args.clip, args.audio, 0.4 if args.smoke else args.seconds,
                               serial=variant == "default", faces=args.faces)
            row |= _memory(device)
        except Exception as exc:  # recorded; the next row runs
            failed = True
            row["error"] = f"{type(exc).__name__}: {exc}"
            row["traceback"] = traceback.format_exc(limit=8)
        finally:
            networks = None  # noqa: F841 - free the row's networks before the next one
            gc.collect()
        result["rows"].append(row)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2))
        fps = row.get("model_fps") if kind == "model" else row.get("e2e_fps")
        print(f"{kind:5} {preset:15} {dtype:5} {variant:14} fps {fps} peak {row.get('peak_allocated_gib')} GiB"
              f"{'  ERROR ' + row['error'] if row['error'] else ''}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
