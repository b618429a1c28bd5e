"""`lipsyncctl sync`: re-render the speaker's mouth in a clip to match a new dialogue track."""

from __future__ import annotations

from pathlib import Path

import typer

from lipsyncctl.cli import options as opt
from lipsyncctl.cli import state as st
from lipsyncctl.errors import UsageError

HELP = """Lip-sync one clip: the mouth in VIDEO is re-rendered to match AUDIO; everything else is unchanged.

\b
Examples:
  lipsyncctl sync --video in.mp4 --audio new.wav -o out.mp4 --preset latentsync-1.5
  lipsyncctl sync --video in.mov --audio de.wav -o out.mov --preset broadcast --start 12.5 --end 20
  lipsyncctl sync --video in.mp4 --audio new.wav -o check.mkv --preset tiny --codec ffv1   # offline demo

\b
The output keeps the source resolution and frame rate (unless --fps), carries the new audio at its own
sample rate and channels, and is written under a temporary name, then renamed. OUT.run.yaml beside it
holds the resolved configuration. Length policy when audio and picture differ (--length-policy):
pingpong (default, official), loop, freeze, cut (shortest), silence (pad the audio, keep the picture).
Exit codes: 0 ok, 1 failed, 2 usage, 3 bad config/preset, 4 missing model/ffmpeg/device, 5 bad input media.
"""


def _face_at(value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        x, y = (float(v) for v in value.split(","))
    except ValueError:
        raise UsageError(f"--face-at {value!r}: expected X,Y in pixels, e.g. --face-at 640,360") from None
    return x, y


def sync_cmd(
    video: Path = typer.Option(..., "--video", "-i", help="The clip whose mouth is re-rendered."),
    audio: Path = typer.Option(..., "--audio", "-a", help="The new dialogue (WAV, FLAC, AAC, or a file with sound)."),
    output: Path = typer.Option(..., "--output", "-o", help="Output file; its extension picks the container."),
    preset: str | None = opt.PresetOpt,
    sets: list[str] | None = opt.SetOpt,
    print_config: bool = opt.PrintConfigOpt,
    steps: int | None = typer.Option(None, "--steps", help="DDIM steps (inference.steps)."),
    guidance: float | None = typer.Option(None, "--guidance", help="Guidance scale, 1.0 = off (inference.guidance)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the noise generator (inference.seed)."),
    dtype: str | None = typer.Option(None, "--dtype", help="auto, fp32, fp16 or bf16 (inference.dtype)."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (inference.device)."),
    deepcache: bool | None = typer.Option(
        None, "--deepcache/--no-deepcache", help="Reuse deep UNet features between steps (inference.deepcache)."
    ),
    fps: str | None = typer.Option(None, "--fps", help="Output rate; 'source' (default) or e.g. 25 for the official conform."),
    length_policy: str | None = typer.Option(
        None, "--length-policy", help="pingpong, loop, freeze, cut or silence (sync.length_policy)."
    ),
    codec: str | None = typer.Option(
        None, "--codec", help="h264, h265, prores_hq, prores_4444, dnxhr_hq or ffv1 (output.codec)."
    ),
    crf: int | None = typer.Option(None, "--crf", help="H.264/H.265 quality, lower = better (output.crf)."),
    matte: bool | None = typer.Option(None, "--matte/--no-matte", help="Also write OUT.matte.EXT of the changed region."),
    detector: str | None = typer.Option(
        None, "--detector", help="Face detector: auto, dlib, face-alignment, insightface (faces.backend)."
    ),
    blend: str | None = typer.Option(
        None, "--blend", help="Paste-back: official (default) or multiband (lower seams) (faces.blend)."
    ),
    start: float | None = typer.Option(None, "--start", min=0, help="First second of the video to use."),
    end: float | None = typer.Option(None, "--end", min=0, help="Last second of the video to use."),
    face: int | None = typer.Option(
        None, "--face", min=0, help="Follow this face track id (faces.select=id, faces.track_id)."
    ),
    face_at: str | None = typer.Option(
        None, "--face-at", help="Follow the face at pixel X,Y (faces.select=point, faces.point)."
    ),
) -> None:
    point = _face_at(face_at)
    if face is not None and point is not None:
        raise UsageError("give either --face ID or --face-at X,Y, not both")
    if start is not None and end is not None and end <= start:
        raise UsageError(f"--end {end:g} is not after --start {start:g}", hint="both are seconds of the video")
    flags = {
        "inference.steps": steps, "inference.guidance": guidance, "inference.seed": seed,
        "inference.dtype": dtype, "inference.device": device, "inference.deepcache": deepcache,
        "sync.fps": fps, "sync.length_policy": length_policy, "output.codec": codec, "output.crf": crf,
        "output.matte": matte, "faces.backend": detector, "faces.blend": blend,
        # --face / --face-at are faces.select id/point, so run.yaml records whose mouth was rendered
        "faces.select": "id" if face is not None else "point" if point is not None else None,
        "faces.track_id": face, "faces.point": list(point) if point is not None else None,
    }
    config = opt.resolve(preset, sets, flags, print_config)
    from lipsyncctl import api

    result = api.sync(video, audio, output, config, start=start, end=end)
    for w in result.warnings:
        st.warn(w)

    def human(console) -> None:  # type: ignore[no-untyped-def]
        d = result.to_dict()
        console.print(st.kv_table("sync", {
            "output": d["output"], "frames": f"{d['frames']} at {float(result.fps):.3f} fps ({d['duration']} s)",
            "faces found": d["faces_found"], "no-face frames": d["no_face_frames"], "detector": d["detector"],
            "face": d["face_select"] + (f" (track {d['face_track']})" if d["face_track"] is not None else ""),
            "run.yaml": d["run_yaml"], **({"matte": d["matte"]} if d["matte"] else {}),
        }))
        console.print(st.kv_table("seconds per stage", d["stage_seconds"]))

    st.result(result.to_dict(), human)


def register(app: typer.Typer) -> None:
    from lipsyncctl.cli.timeline import HELP as TIMELINE_HELP
    from lipsyncctl.cli.timeline import with_timeline_mode

    app.command("sync", help=HELP + TIMELINE_HELP)(with_timeline_mode(sync_cmd))
