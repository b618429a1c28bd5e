"""Sync pipeline benchmark on CPU: frames/s per stage (tiny model, 256 and 512), peak memory for a 10 s and
a 60 s clip (streaming: about equal), and the full-size UNet time per 16-frame window.

On demand only::

    .venv/bin/python tests/bench/bench_sync.py [--seconds 10 60] [--resolutions 256 512] [--steps 2]
                                               [--unet stage2] [--unet-latent 32] [--no-unet]
                                               [--rss-without-networks]

The memory table gives ``ru_maxrss`` and the peak of ``RssAnon``: past 2 minutes the dub's 16 kHz copy and its
whisper features are files mapped from beside the output, whose pages ``ru_maxrss`` counts as they are touched
(page cache the kernel can take back). ``--rss-without-networks`` runs the memory table's syncs with the faces given
back unchanged, so that clips of several minutes take minutes (the networks' memory does not depend on the length).
    .venv/bin/python -m pytest -m bench tests/bench/bench_sync.py -s

Every sync runs in a fresh process (so ``ru_maxrss`` is that run's peak; the clip is generated in
another process beforehand): a clip of real face frames (the bundled sample, ping-ponged, 404x720,
25 fps, H.264) synced to a tone of the same length with the ``tiny`` preset (random tiny networks:
the real pipeline, tiny UNet/VAE). ``--steps`` sets the DDIM steps (default 2, the tiny preset's).

``--floor`` (issue 12) measures the non-model stages on the shared fixture (1080x1920 HEVC, real face,
``--floor-seconds`` of it; ``--floor-sizes 3840`` adds a 4K upscale: 2160x3840, sizes are long sides; written
first with x264 ultrafast), beside the floor: a plain decode + encode of the same frames with the same codec
settings (the sync output's writer: H.264 CRF 18 at x264 ``medium`` and ``veryfast``, 4 encoder threads). Per
preset: the floor, the serial render's decode / align / paste / encode frames/s (``--json`` stage seconds),
those four together against the floor's time, face tracking apart (serial: it runs before the render), then the
whole sync end to end serial and pipelined (``inference.pipelined``) with the sha256 of both outputs (they must
be equal). A second table times the same syncs with the networks left out (the renderer's ``generate`` returns each
face as it came in, so the paste still runs the official restore on every face): everything but the
networks, the quantity issue 12's CPU goals are about.

Measured (2-core CPU, 2026-12-04; each figure the fastest of ``--repeat`` runs, since the floor alone moved by
20 % between single runs on this shared machine). 4 s of the fixture = 100 frames, ``--floor --floor-seconds 4
--repeat 3`` (before the one decode below)::

    everything but the networks (generate returns the face unchanged), frames/s
     size      x264   floor   faces  render     f+r     f+r  vs fl     f+r  vs fl  same
             preset                  serial  serial  pipel.   time    warm   time  hash
     1920  veryfast    34.1    37.9    27.2    15.8    19.4  1.76x    26.2  1.30x   yes
     1920    medium    19.7    34.0    16.3    11.0    13.2  1.50x    16.0  1.23x   yes

and the whole 10 s fixture (250 frames, ``--floor-seconds 10 --floor-presets veryfast --repeat 2``)::

     1920  veryfast    37.8    59.0    28.8    19.3    26.0  1.45x    26.9  1.40x   yes

Pipelined, the face pass runs beside the render (``FaceStream``, ``faces.select: largest``; before, it ran
first: 10.7 frames/s at ``veryfast`` on the 4 s clip), and since 2026-12-05 the render reads the frames the face
pass decoded (one decode of the clip instead of two; ``--repeat 2``, the code before and after measured one after
the other)::

     size      x264   floor   faces  render     f+r     f+r  vs fl     f+r  vs fl  same
     4 s, two decodes (before)
     1920  veryfast    36.8    34.1    25.3    14.5    18.2  2.02x    27.2  1.35x   yes
     4 s, one decode
     1920  veryfast    34.9    37.1    26.4    15.4    19.0  1.83x    27.1  1.28x   yes
     4 s, one decode, one window kept ahead instead of two (the default since; same peak RSS as two decodes)
     1920  veryfast    35.0    39.6    27.5    16.2    20.2  1.73x    30.4  1.15x   yes
     10 s, one decode
     1920  veryfast    38.8    57.9    29.3    19.5    25.2  1.54x    29.0  1.34x   yes
     2 s at 4K (``--floor-sizes 3840``), two decodes (before)
     3840  veryfast    10.8    19.6     8.3     5.8     5.8  1.87x     8.3  1.30x   yes
     2 s at 4K, one decode
     3840  veryfast    12.1    19.7     8.1     5.7     6.4  1.89x     9.6  1.26x   yes

A decode of the fixture runs at about 200 frames/s (``fl.dec``; 64 at 4K), so the second decode cost about 5 ms a
frame of the 2 cores (16 ms at 4K): within this machine's noise at 1080p; at 4K the warm row went from 8.3 to 9.6
frames/s, but the floor moved by as much between the two runs, so the ratio barely changed. Issue 12's CPU goals
(within 1.5x of the floor, >= 25 frames/s at 1080p ``veryfast``) are met in a process that has synced before
(``warm``: a timeline worker's shots, networks passed in, the detector kept from the last clip); in a fresh
process the 10 s clip is at the line (1.45x and 1.54x in two sessions) and the 4 s clip above it, because a fresh
process pays about 2 s that do not grow with the clip, measured with a timeline of one run: dlib's models (0.74 s)
before the first frame, then torch's import (1.1 s) before the first face's matrix (the official alignment is a
float32 torch SVD; the networks need torch anyway, so a real sync pays it once either way). Once the networks have
loaded, the render of the 4 s clip (face pass done, one decode, align, paste, x264) runs at 32 frames/s against
the floor's 35. The 2 cores are shared by the decode, HOG detection every 5th frame, the landmark refits, the
official restore and x264.

2026-12-05, output frames spliced into the source's own samples (``lipsyncctl.media.splice``: no YUV -> RGB -> YUV
round trip of the picture; the paste stage now also finds the changed pixels and converts only their box, the
encode no longer converts whole frames; one swscale thread, ``SWS_THREADS``). 4 s, ``--repeat 2``, the code before
and after measured one after the other on the same machine::

     size      x264   floor   faces  render     f+r     f+r  vs fl     f+r  vs fl  same
     before (paste 131 frames/s, encode 73)
     1920  veryfast    40.1    60.4    22.8    16.6    21.4  1.87x    30.0  1.34x   yes
     after (paste 84 frames/s, encode 89)
     1920  veryfast    39.9    54.0    21.9    15.6    20.7  1.93x    28.1  1.42x   yes
     after, frames without a face spliced in stage 1 (paste 79, encode 95; a later run, floor 38.6)
     1920  veryfast    38.6    58.3    21.6    15.7    19.6  1.97x    27.1  1.43x   yes

about 3 ms more per face frame at 1080p (the comparison that finds the changed pixels, the box's conversion), 3-6 %
end to end, within this machine's noise but likely real; the fidelity is the point (README, Codecs and containers).

2026-12-05 evening, the paste-back's feather blurred through OpenCV's separable filter instead of torch's
convolution (``faces.warp.gaussian_blur``: 31-51 taps at 1080p, 14 ms of a face frame's paste; equal up to float32
rounding, golden vector 4 within its tolerance: 7 of 337,920 samples one level apart). 4 s, ``--repeat 2``, the code
before and after one after the other::

     size      x264   floor   faces  render     f+r     f+r  vs fl     f+r  vs fl  same
     before (paste 88 frames/s)
     1920  veryfast    39.2    53.7    20.1    14.6    19.5  2.01x    24.9  1.58x   yes
     after (paste 114 frames/s)
     1920  veryfast    36.0    62.3    24.5    17.6    22.5  1.60x    30.3  1.19x   yes

then the splice told the paste-back's bounds (``Splicer.frame(within=)``: the before/after comparison on the face's
box, not the whole 1080x1920 frame, 2 ms a frame). Side by side again (the floor moved by 6 % between the two)::

     before (paste 112 frames/s)
     1920  veryfast    40.6    62.3    24.1    17.4    21.8  1.86x    29.0  1.40x   yes
     after (paste 135 frames/s)
     1920  veryfast    43.2    59.4    23.9    17.0    22.2  1.94x    31.3  1.38x   yes

The full-size UNet row builds ``models/configs/unet/<--unet>.yaml`` with random weights and times one
guided step on one window (batch 2 = [uncond, cond] x 16 frames) with and without DeepCache-style
feature reuse (:mod:`tests.bench.bench_unet_step`); a window is ``steps`` such steps (20 official),
with DeepCache a full pass every 3rd step and partial passes in between.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAGES = ["decode", "faces", "align", "vae encode", "denoise", "vae decode", "paste", "encode"]

_MAKE_CLIP = r"""
import sys
from fractions import Fraction
from pathlib import Path
sys.path.insert(0, {repo!r})
from tests.sync_media import sample_frames, write_clip, write_wav
tmp = Path({tmp!r}); n = int({seconds} * 25)
base = sample_frames(50, scale=0.75)
frames = (base[i % 100 if i % 100 < 50 else 99 - i % 100] for i in range(n))  # streamed, ping-pong
write_clip(tmp / "v.mp4", frames, Fraction(25), codec="libx264")
write_wav(tmp / "a.wav", {seconds})
"""

_SYNC = r"""
import json, resource, sys, threading, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from lipsyncctl import config as cfg
from lipsyncctl.pipeline.clip import sync_clip
{skip}
anon = [0]
def _sample():  # peak RssAnon: ru_maxrss also counts the pages of the files mapped for a long dub
    while True:
        with open("/proc/self/status") as status:
            kb = next((int(line.split()[1]) for line in status if line.startswith("RssAnon:")), 0)
        anon[0] = max(anon[0], kb)
        time.sleep(0.05)
threading.Thread(target=_sample, daemon=True).start()
tmp = Path({tmp!r})
config = cfg.resolve("tiny", ["model.resolution={res}", "inference.steps={steps}", "faces.detect_every=5"])
t0 = time.perf_counter()
r = sync_clip(tmp / "v.mp4", tmp / "a.wav", tmp / "o.mp4", config)
wall = time.perf_counter() - t0
print(json.dumps({{"frames": r.frames, "wall": wall, "stages": r.stage_seconds,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "peak_anon_mb": anon[0] / 1024}}))
"""

_UNET = r"""
import json, sys, torch
sys.path.insert(0, {repo!r})
from tests.bench.bench_unet_step import _measure
name, params, full, partial = _measure({name!r}, torch.device("cpu"), torch.float32, {latent},
                                       torch.Generator().manual_seed(0))
print(json.dumps({{"params": params, "full": full, "partial": partial}}))
"""


FIXTURE = REPO.parent / "shared" / "fixtures" / "demo1_video.mp4"
FIXTURE_AUDIO = REPO.parent / "shared" / "fixtures" / "demo1_audio.wav"
RENDER_STAGES = ["decode", "align", "paste", "encode"]  # the non-model stages of the render

_UPSCALE = r"""
import sys
from fractions import Fraction
from pathlib import Path
sys.path.insert(0, {repo!r})
import cv2
from lipsyncctl.media.reader import IndexedReader
from lipsyncctl.media.writer import VideoWriter
with IndexedReader({src!r}) as r, VideoWriter(Path({dst!r}), r.fps, preset="ultrafast", crf=18) as w:
    for _, rgb in r.range(0, {frames}):
        w.write(cv2.resize(rgb, ({width}, {height}), interpolation=cv2.INTER_LANCZOS4))
"""

_FLOOR = r"""
import json, sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
from lipsyncctl import config as cfg
from lipsyncctl.media.probe import probe
from lipsyncctl.media.reader import IndexedReader
from lipsyncctl.pipeline.output import open_writer
video, n = Path({video!r}), {frames}
info = probe(video); v = info.video
options = cfg.resolve("tiny", ["output.encoder_preset={preset}"]).output
t0 = time.perf_counter()
with IndexedReader(video, v.nominal_fps, info=info) as r:
    for _ in r.range(0, n):
        pass
decode = time.perf_counter() - t0
t0 = time.perf_counter()
with IndexedReader(video, v.nominal_fps, info=info) as r, \
        open_writer(Path({out!r}), v.nominal_fps, options, color=v.color, source_pix_fmt=v.pix_fmt) as w:
    for _, rgb in r.range(0, n):
        w.write(rgb)
print(json.dumps({{"decode": decode, "both": time.perf_counter() - t0}}))
"""

#: leaves the networks out of a child's sync: the renderer's ``generate`` gives each face back as it came in
_UNCHANGED = r"""
from lipsyncctl.pipeline import render
def _unchanged(self, wins):
    for win in wins:
        if win.faces:
            win.decoded, win.masked = win.ref, None
    return wins
render.Renderer.generate = _unchanged
"""

_SYNC_FIXTURE = r"""
import hashlib, json, sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from lipsyncctl import config as cfg
from lipsyncctl.pipeline.clip import sync_clip
{skip}out = Path({out!r})
config = cfg.resolve("tiny", ["inference.steps=2", "output.encoder_preset={preset}", "sync.length_policy=cut",
                              "inference.pipelined={pipelined}"])
nets = None
if {runs} > 1:  # a timeline worker's shots: networks loaded once and passed, the last of several syncs measured
    from lipsyncctl.pipeline.networks import load_networks
    nets = load_networks(config)
for _ in range({runs}):
    t0 = time.perf_counter()
    r = sync_clip(Path({video!r}), Path({audio!r}), out, config, frames=(0, {frames}), overwrite=True,
                  networks=nets)
    wall = time.perf_counter() - t0
print(json.dumps({{"frames": r.frames, "wall": wall, "stages": r.stage_seconds,
                  "sha256": hashlib.sha256(out.read_bytes()).hexdigest()}}))
"""


def _python(code: str, env: dict[str, str] | None = None) -> str:
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    lines = out.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def run_sync(seconds: float, res: int, steps: int, skip_networks: bool = False) -> dict:
    """Generate a clip of ``seconds`` and sync it in a fresh process; that process's stage times and peak RSS.
    ``skip_networks``: the faces come back unchanged (the memory that could grow with the clip is the frames',
    the faces' and the sound's; the networks' does not)."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, LIPSYNCCTL_MODELS=str(Path(tmp) / "models"))
        _python(_MAKE_CLIP.format(repo=str(REPO), tmp=tmp, seconds=seconds))
        skip = _UNCHANGED if skip_networks else ""
        return json.loads(_python(_SYNC.format(repo=str(REPO), tmp=tmp, res=res, steps=steps, skip=skip), env))


def run_unet(name: str, latent: int) -> dict:
    return json.loads(_python(_UNET.format(repo=str(REPO), name=name, latent=latent)))


def _fastest(n: int, run, key: str) -> dict:
    """The run (a JSON dict) with the smallest ``key`` of ``n`` runs: on a shared machine the minimum is the
    figure least disturbed by other load."""
    return min((run() for _ in range(max(1, n))), key=lambda r: r[key])


def run_floor(seconds: float, sizes: list[int], presets: list[str], repeat: int = 1) -> list[dict]:
    """Per size and x264 preset: the floor (decode; decode + encode) and a serial and a pipelined sync, each the
    fastest of ``repeat`` runs."""
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, LIPSYNCCTL_MODELS=str(Path(tmp) / "models"))
        _python(f"import sys; sys.path.insert(0, {str(REPO)!r}); from lipsyncctl.checkpoints.tiny import "
                "ensure_tiny_models; ensure_tiny_models()", env)  # written once, before any timed run
        frames = int(round(seconds * 25))  # the fixture is 25 fps
        for size in sizes:
            video = FIXTURE
            if size != 1920:  # the fixture's long side; others are Lanczos upscales of it
                video = Path(tmp) / f"v{size}.mp4"
                _python(_UPSCALE.format(repo=str(REPO), src=str(FIXTURE), dst=str(video), frames=frames,
                                        width=size * 1080 // 1920 // 2 * 2, height=size))
            for preset in presets:
                floor_code = _FLOOR.format(repo=str(REPO), video=str(video), frames=frames, preset=preset,
                                           out=str(Path(tmp) / "floor.mp4"))
                floor = _fastest(repeat, lambda c=floor_code: json.loads(_python(c)), "both")
                runs = {}
                for skip, pipelined, n_runs in ((False, "false", 1), (False, "true", 1), (True, "false", 1),
                                                (True, "true", 1), (True, "true", 2)):
                    code = _SYNC_FIXTURE.format(
                        repo=str(REPO), video=str(video), audio=str(FIXTURE_AUDIO), frames=frames,
                        preset=preset, pipelined=pipelined, skip=_UNCHANGED if skip else "", runs=n_runs,
                        out=str(Path(tmp) / f"o-{pipelined}-{skip}.mp4"))
                    runs[skip, pipelined, n_runs] = _fastest(repeat, lambda c=code: json.loads(_python(c, env)), "wall")
                rows.append({"size": size, "preset": preset, "frames": frames, "floor": floor,
                             "serial": runs[False, "false", 1], "pipelined": runs[False, "true", 1],
                             "bare_serial": runs[True, "false", 1], "bare_pipelined": runs[True, "true", 1],
                             "bare_warm": runs[True, "true", 2], "torch_threads": torch.get_num_threads()})
    return rows


#: stages outside the render (and its mux): subtracted from a sync's wall time to get the render's
_OUTSIDE_RENDER = ("probe", "faces", "load models", "audio features", "mux")


def floor_table(rows: list[dict]) -> str:
    def fps(n: int, s: float) -> str:
        return f"{n / s:>7.1f}" if s else f"{'-':>7}"

    lines = ["non-model stages vs the floor (plain decode + encode, same codec settings), frames/s; tiny model, "
             "2 steps, CPU",
             f"{'size':>5} {'x264':>9} {'floor':>7} {'fl.dec':>7} {'decode':>7} {'align':>7} {'paste':>7} "
             f"{'encode':>7} {'4 stg':>7} {'vs fl':>6} {'faces':>7} {'render':>7} {'f+r':>7} {'e2e':>6} "
             f"{'e2e':>6} {'same':>5}",
             f"{'':>5} {'preset':>9} {'':>7} {'':>7} {'':>7} {'':>7} {'':>7} {'':>7} {'serial':>7} {'time':>6} "
             f"{'':>7} {'serial':>7} {'pipel.':>7} {'ser.':>6} {'pip.':>6} {'hash':>5}"]
    for r in rows:
        n, st = r["frames"], r["serial"]["stages"]
        four = sum(st.get(k, 0.0) for k in RENDER_STAGES)
        render = {m: r[m]["wall"] - sum(r[m]["stages"].get(k, 0.0) for k in _OUTSIDE_RENDER)
                  for m in ("serial", "pipelined")}
        # pipelined, the face pass runs beside the render: the column is faces + render there
        render["pipelined"] += r["pipelined"]["stages"].get("faces", 0.0)
        lines.append(
            f"{r['size']:>5} {r['preset']:>9} {fps(n, r['floor']['both'])} {fps(n, r['floor']['decode'])} "
            + " ".join(fps(n, st.get(k, 0.0)) for k in RENDER_STAGES)
            + f" {fps(n, four)} {four / r['floor']['both']:>5.2f}x {fps(n, st.get('faces', 0.0))}"
            f" {fps(n, render['serial'])} {fps(n, render['pipelined'])}"
            f" {n / r['serial']['wall']:>6.2f} {n / r['pipelined']['wall']:>6.2f}"
            f" {'yes' if r['serial']['sha256'] == r['pipelined']['sha256'] else 'NO':>5}")
    lines.append("4 stg: decode+align+paste+encode of the serial render; vs fl: their time / the floor's; render: "
                 "wall minus probe, faces, model load, audio features, mux; f+r pipel.: the same with the face pass "
                 "(it runs beside the render); e2e: whole sync incl. those")
    lines += ["", "everything but the networks (generate returns the face unchanged), frames/s; the goal (issue 12): "
              "faces + render within 1.5x of the floor's time, >= 25 frames/s at 1080p with veryfast",
              f"{'size':>5} {'x264':>9} {'floor':>7} {'faces':>7} {'render':>7} {'f+r':>7} {'f+r':>7} {'vs fl':>6} "
              f"{'f+r':>7} {'vs fl':>6} {'same':>5}",
              f"{'':>5} {'preset':>9} {'':>7} {'':>7} {'serial':>7} {'serial':>7} {'pipel.':>7} {'time':>6} "
              f"{'warm':>7} {'time':>6} {'hash':>5}"]
    for r in rows:
        if "bare_serial" not in r:
            continue
        n = r["frames"]
        faces = r["bare_serial"]["stages"].get("faces", 0.0)
        # faces + render: the wall time but probe, model load, audio features and mux (pipelined, the face pass
        # runs beside the model load and the render, so it cannot be told apart from them)
        both = {m: r[m]["wall"] - sum(r[m]["stages"].get(k, 0.0) for k in _OUTSIDE_RENDER if k != "faces")
                for m in ("bare_serial", "bare_pipelined", "bare_warm")}
        same = r["bare_serial"]["sha256"] == r["bare_pipelined"]["sha256"] == r["bare_warm"]["sha256"]
        lines.append(f"{r['size']:>5} {r['preset']:>9} {fps(n, r['floor']['both'])} {fps(n, faces)} "
                     f"{fps(n, both['bare_serial'] - faces)} {fps(n, both['bare_serial'])} "
                     f"{fps(n, both['bare_pipelined'])} {both['bare_pipelined'] / r['floor']['both']:>5.2f}x "
                     f"{fps(n, both['bare_warm'])} {both['bare_warm'] / r['floor']['both']:>5.2f}x "
                     f"{'yes' if same else 'NO':>5}")
    lines.append("faces: the serial face pass (detection + tracking over the clip, its imports and detector load "
                 "included); f+r: faces + render (pipelined: the face pass runs beside the render); warm: the "
                 "second sync of a process given loaded networks (a timeline worker's shots: dlib's models loaded "
                 "by the first); vs fl: "
                 "pipelined f+r time / the floor's")
    return "\n".join(lines)


def stage_table(rows: list[tuple[float, int, dict]], steps: int) -> str:
    head = f"{'clip':>6} {'res':>4} {'frames':>6} " + " ".join(f"{s[:10]:>10}" for s in STAGES) + f" {'total':>7}"
    lines = [f"frames/s per stage (tiny model, CPU, {steps} DDIM steps; total = frames / wall incl. model load)",
             head]
    for seconds, res, r in rows:
        fps = [r["frames"] / r["stages"][s] if r["stages"].get(s) else float("nan") for s in STAGES]
        lines.append(f"{seconds:>5g}s {res:>4} {r['frames']:>6} " + " ".join(f"{v:>10.1f}" for v in fps)
                     + f" {r['frames'] / r['wall']:>7.2f}")
    return "\n".join(lines)


def rss_table(rows: list[tuple[float, int, dict]], without_networks: bool = False) -> str:
    lines = ["peak RSS vs clip length (one process per run" + ("; faces given back unchanged, no networks run)"
                                                            if without_networks else ")"),
             "(peak MB: ru_maxrss; anon MB: the peak of RssAnon, without the pages of files mapped for a long dub)",
             f"{'clip':>6} {'res':>4} {'frames':>6} {'wall s':>8} {'peak MB':>8} {'anon MB':>8}"]
    for seconds, res, r in rows:
        lines.append(f"{seconds:>5g}s {res:>4} {r['frames']:>6} {r['wall']:>8.1f} {r['peak_rss_mb']:>8.0f}"
                     f" {r['peak_anon_mb']:>8.0f}")
    if len(rows) >= 2:
        lines.append(f"ratio longest/shortest: {rows[-1][2]['peak_rss_mb'] / rows[0][2]['peak_rss_mb']:.2f}")
    return "\n".join(lines)


def unet_table(name: str, latent: int, r: dict, steps: int = 20, cache_interval: int = 3) -> str:
    full_steps = -(-steps // cache_interval)
    cached = full_steps * r["full"] + (steps - full_steps) * r["partial"]
    return "\n".join([
        f"full-size UNet ({name}, random weights), one 16-frame window, guided (batch 2), latent {latent}x{latent}"
        f" ({latent * 8} px), CPU fp32",
        f"{'params':>14} {'step s':>8} {'partial s':>10} {f'window ({steps} steps) s':>22} "
        f"{f'DeepCache/{cache_interval} s':>14}",
        f"{r['params']:>14,} {r['full']:>8.2f} {r['partial']:>10.2f} {steps * r['full']:>22.1f} {cached:>14.1f}",
    ])


def main(argv: list[str] | None = None) -> str:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, nargs="+", default=[10, 60], help="clip lengths for the RSS table")
    ap.add_argument("--resolutions", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--unet", default="stage2", help="UNet config for the full-size row")
    ap.add_argument("--unet-latent", type=int, default=32, help="latent side (32 = 256 px, 64 = 512 px)")
    ap.add_argument("--no-unet", action="store_true")
    ap.add_argument("--rss-without-networks", action="store_true",
                    help="the RSS table's syncs with the faces given back unchanged (long clips in minutes)")
    ap.add_argument("--floor", action="store_true", help="only the non-model stages vs the floor (issue 12)")
    ap.add_argument("--floor-seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=1, help="--floor: each run this many times, the fastest kept")
    ap.add_argument("--floor-sizes", type=int, nargs="+", default=[1920], help="long sides (1920 = the fixture)")
    ap.add_argument("--floor-presets", nargs="+", default=["medium", "veryfast"])
    args = ap.parse_args(argv)
    if args.floor:
        text = floor_table(run_floor(args.floor_seconds, args.floor_sizes, args.floor_presets, args.repeat))
        print(text)
        return text
    short = min(args.seconds)
    runs: dict[tuple[float, int], dict] = {}
    for res in args.resolutions:
        runs[(short, res)] = run_sync(short, res, args.steps)
    res0, bare = args.resolutions[0], args.rss_without_networks
    rss = {s: run_sync(s, res0, args.steps, skip_networks=True) if bare else runs.get((s, res0))
           or run_sync(s, res0, args.steps) for s in sorted(args.seconds)}
    parts = [
        stage_table([(short, res, runs[(short, res)]) for res in args.resolutions], args.steps),
        rss_table([(s, res0, rss[s]) for s in sorted(args.seconds)], without_networks=bare),
    ]
    if not args.no_unet:
        parts.append(unet_table(args.unet, args.unet_latent, run_unet(args.unet, args.unet_latent)))
    text = "\n\n".join(parts)
    print(text)
    return text


@pytest.mark.bench
def test_bench_sync() -> None:
    seconds = os.environ.get("LIPSYNCCTL_BENCH_SECONDS", "10 60").split()
    text = main(["--seconds", *seconds])
    assert "peak RSS" in text


@pytest.mark.bench
def test_bench_sync_floor() -> None:
    if not FIXTURE.is_file():
        pytest.skip(f"shared fixture not found: {FIXTURE}")
    text = main(["--floor"])
    assert "floor" in text and " NO" not in text  # pipelined and serial outputs are the same bytes


if __name__ == "__main__":
    main()
