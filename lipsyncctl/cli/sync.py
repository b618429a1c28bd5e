"""`lipsyncctl sync`: re-render the speaker's mouth in a clip to match a new dialogue track."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from lipsyncctl import config as cfg
from lipsyncctl.cli import options as opt
from lipsyncctl.cli import state as st
from lipsyncctl.cli.flags import Flag, config_flags, misplaced, signature
from lipsyncctl.errors import UsageError

HELP = """Lip-sync a clip, a list of clips (--batch) or an edit (--timeline): the mouth is re-rendered to match the new
audio; everything else is unchanged.

\b
Examples:
  lipsyncctl sync --video in.mp4 --audio new.wav -o out.mp4 --preset latentsync-1.5
  lipsyncctl sync --video in.mov --audio de.wav -o out.mov --preset broadcast --start 12.5 --end 20
  lipsyncctl sync --video in.mp4 --audio new.wav -o check.mkv --preset tiny --codec ffv1   # offline demo
  lipsyncctl sync --batch dubs.csv --preset latentsync-1.5   # many clips (CSV: video,audio,output[,start,end])

\b
The output keeps the source resolution and frame rate (unless --fps), carries the new audio at its own
sample rate and channels, and is written under a temporary name, then renamed. OUT.run.yaml beside it
holds the resolved configuration. An existing OUT is never replaced unless --overwrite/-y. Length policy when audio and picture differ (--length-policy):
pingpong (default, official), loop, freeze, cut (shortest), silence (pad the audio, keep the picture).
Exit codes: 0 ok, 1 failed, 2 usage, 3 bad config/preset, 4 missing model/package/device, 5 bad input media,
6 busy (another run is writing to the same -o, or the same timeline output folder, or still renders rows of
the --batch list), 130 interrupted (Ctrl-C, SIGTERM: nothing
partial is left).
"""


CLIP, TIMELINE, BOTH = frozenset({"clip"}), frozenset({"timeline"}), frozenset({"clip", "timeline"})
BATCH, CLIPS = frozenset({"batch"}), frozenset({"clip", "batch"})  # --batch: many clips, each row a clip


def _face_at(value: str | None) -> list[float] | None:
    if value is None:
        return None
    point = cfg.parse_point(value)
    if point is None:
        raise UsageError(f"--face-at {value!r}: expected X,Y in pixels, e.g. --face-at 640,360")
    return point


def _codecs() -> str:
    from typing import get_args

    from lipsyncctl.config import OutputOptions

    return ", ".join(get_args(OutputOptions.model_fields["codec"].annotation))


#: Every flag of `sync`, once: the config key it sets, the modes that take it (a flag of the other mode is a
#: usage error) and its bounds (config keys: from the schema in lipsyncctl/config.py).
FLAGS: tuple[Flag, ...] = (
    Flag("video", ("--video", "-i"), Path | None, "The clip whose mouth is re-rendered (not with --timeline); an "
         "image sequence is an ffmpeg pattern ('shot/%04d.png') at sync.sequence_fps (auto: the rate its run.yaml "
         "records when lipsyncctl wrote it, else 25).", modes=CLIP),
    Flag("audio", ("--audio", "-a"), list[str] | None, "The new dialogue (WAV, FLAC, AAC, or a file with sound). "
         "With --timeline: LANG=FILE (FILE alone: its stem is the language), repeatable, aligned to the timeline's "
         "first frame.", modes=BOTH),
    Flag("output", ("--output", "-o"), Path | None, "Output file; its extension picks the container. An image "
         "sequence pattern ('out/shot.%04d.dpx': .png, .tif, .dpx) writes one image a frame, numbered as the source "
         "sequence's frames (from 1 for a video; output.first_number), without sound. With --timeline: the output folder.", modes=BOTH),
    Flag("overwrite", ("--overwrite", "-y"), bool, "Replace OUT if it exists (otherwise an existing OUT is a "
         "usage error; with --batch that clip is skipped).", modes=CLIPS, default=False),
    Flag("preset", ("--preset", "-p"), str | None, opt.PresetOpt.help),
    Flag("sets", ("--set",), list[str] | None, opt.SetOpt.help),
    Flag("print_config", ("--print-config",), bool, opt.PrintConfigOpt.help + " Needs no input or output.",
         default=False),
    Flag("steps", ("--steps",), int | None, "DDIM steps (inference.steps).", key="inference.steps"),
    Flag("guidance", ("--guidance",), float | None, "Guidance scale, 1.0 = off (inference.guidance).",
         key="inference.guidance"),
    Flag("seed", ("--seed",), int | None, "Seed of the noise generator (inference.seed).", key="inference.seed"),
    Flag("dtype", ("--dtype",), str | None, "auto, fp32, fp16 or bf16 (inference.dtype).", key="inference.dtype"),
    Flag("device", ("--device",), str | None, "auto, cpu, cuda or cuda:N (inference.device).",
         key="inference.device"),
    Flag("deepcache", ("--deepcache/--no-deepcache",), bool | None,
         "Reuse deep UNet features between steps (inference.deepcache).", key="inference.deepcache"),
    Flag("fps", ("--fps",), str | None, "Output rate; 'source' (default) or e.g. 25 for the official conform "
         "(sync.fps).", key="sync.fps", modes=CLIPS),
    Flag("length_policy", ("--length-policy",), str | None,
         "pingpong, loop, freeze, cut or silence (sync.length_policy).", key="sync.length_policy"),
    Flag("deinterlace", ("--deinterlace",), str | None, "Interlaced sources: auto (faces found and rendered from "
         "deinterlaced pictures, pasted onto the source's own frames; default) or off (from both fields at once) "
         "(sync.deinterlace).", key="sync.deinterlace"),
    Flag("codec", ("--codec",), str | None, f"{_codecs()} (output.codec; same names as prep --codec).",
         key="output.codec"),
    Flag("crf", ("--crf",), int | None, "H.264/H.265 quality, lower = better (output.crf).", key="output.crf"),
    Flag("matte", ("--matte/--no-matte",), bool | None, "Also write OUT.matte.EXT of the changed region "
         "(output.matte).", key="output.matte"),
    Flag("detector", ("--detector",), str | None,
         "Face detector: auto, dlib, face-alignment, insightface (faces.backend).", key="faces.backend"),
    Flag("blend", ("--blend",), str | None,
         "Paste-back: official (default) or multiband (lower seams) (faces.blend).", key="faces.blend"),
    Flag("start", ("--start",), float | None, "First second of the video to use.", modes=CLIP, minimum=0),
    Flag("end", ("--end",), float | None, "Last second of the video to use.", modes=CLIP, minimum=0),
    Flag("face", ("--face",), int | None, "Follow this face track id (faces.select=id, faces.track_id).",
         key="faces.track_id", modes=CLIPS),
    Flag("face_at", ("--face-at",), str | None, "Follow the face at pixel X,Y (faces.select=point, faces.point).",
         key="faces.point", modes=CLIPS),
    Flag("timeline", ("--timeline", "-t"), Path | None, "Dub an edit (OTIO, EDL, FCP XML, AAF) instead of one clip.",
         modes=TIMELINE),
    Flag("batch", ("--batch",), Path | None, "Sync every clip of a CSV list with a header row: video,audio,output "
         "and optionally start,end (seconds), face, face_at, set (a row's own --face, --face-at, --set items); commas, "
         "semicolons or tabs between cells; paths relative to the list ('-': the list on standard input, paths "
         "relative to the working folder). The networks load once; a clip whose "
         "output exists is skipped (unless -y), a failed one does not stop the others (exit 1 at the end).",
         modes=BATCH),
    Flag("split_scenes", ("--split-scenes",), bool, "Cut the --video master into shots (PySceneDetect) and dub "
         "them as an edit: -o is a folder as with --timeline; OUT/scenes.otio is the detected edit.",
         modes=TIMELINE, default=False),
    Flag("scene_threshold", ("--scene-threshold",), float | None, "--split-scenes: content detector threshold, "
         "lower = more cuts (timeline.scene_threshold, default 27).", key="timeline.scene_threshold",
         modes=TIMELINE),
    Flag("scene_min_frames", ("--scene-min-frames",), int | None, "--split-scenes: shortest shot in frames "
         "(timeline.scene_min_frames, default 15).", key="timeline.scene_min_frames", modes=TIMELINE),
    Flag("segments", ("--segments",), Path | None, "Per-range options from a JSON/YAML list of {start, end} "
         "(timecode, seconds or 150f frames) with lipsync: false, face, audio_offset, set; with --video the clip "
         "is cut at the ranges and dubbed as an edit (-o is a folder), with --timeline ranges cover whole shots.",
         modes=BOTH),
    Flag("audio_offset", ("--audio-offset",), str | None, "Timeline: where the --audio files start: seconds after "
         "the first frame, or a timecode HH:MM:SS:FF (HH:MM:SS;FF: drop frame at 29.97/59.94).", modes=TIMELINE),
    Flag("audio_track", ("--audio-track",), list[str] | None, "Timeline: use the timeline's audio track NAME (or "
         "LANG=NAME; A2 is the second audio track where none has that name, for tracks without one: FCP XML's) as a "
         "dub (repeatable).", modes=TIMELINE),
    Flag("media_root", ("--media-root",), Path | None, "Timeline: folder to find media that is not where the edit "
         "says.", modes=TIMELINE),
    Flag("relink", ("--relink",), list[str] | None, "Timeline: replace a media path prefix, OLD=NEW (repeatable; "
         "OLD in any form an NLE writes: /D:/x, D:\\x, file://localhost/D%3a/x).",
         modes=TIMELINE),
    Flag("edl_rate", ("--edl-rate",), float | None, "Timeline: frame rate of an EDL, e.g. 23.976 (default: detected from its comments, timecodes "
         "and media; exit 2 when they cannot tell). Other formats carry their own rates: ignored, with a warning.",
         modes=TIMELINE),
    Flag("handles", ("--handles",), int | None, "Timeline: extra frames rendered before/after each shot "
         "(timeline.handles).", key="timeline.handles", modes=TIMELINE),
    Flag("non_dialogue", ("--non-dialogue",), str | None, "Timeline: render, passthrough (keep source pixels) or "
         "close (closed mouth) where nobody speaks (timeline.non_dialogue).", key="timeline.non_dialogue",
         modes=TIMELINE),
    Flag("conform", ("--conform/--no-conform",), bool | None, "Timeline: also write the full-length video with "
         "the dub (timeline.conform).", key="timeline.conform", modes=TIMELINE),
    Flag("conform_me", ("--conform-me",), Path | None, "Timeline: an M&E (music and effects) file mixed under the "
         "dub in the conform; it starts at the first frame.", modes=TIMELINE),
    Flag("min_sync", ("--min-sync",), float | None, "Timeline: fail shots whose SyncNet confidence is below this "
         "(timeline.min_sync; needs syncnet-v2: exit 4 before any render without it).", key="timeline.min_sync",
         modes=TIMELINE),
    Flag("unchecked_gates", ("--unchecked-gates",), str | None, "Timeline: fail (default) or warn when a QC gate "
         "cannot be evaluated: --min-sync without syncnet-v2, a shot too short to score "
         "(timeline.unchecked_gates).", key="timeline.unchecked_gates", modes=TIMELINE),
    Flag("jobs", ("--jobs", "-j"), int | None, "Timeline, --batch: shots or clips rendered at once by local worker "
         "processes, each with its own networks (default 1).", modes=TIMELINE | BATCH, minimum=cfg.JOBS[0], maximum=cfg.JOBS[1]),
    Flag("gpus", ("--gpus",), str | None, "Timeline, --batch: one worker per listed GPU, e.g. 0,1.",
         modes=TIMELINE | BATCH),
    Flag("shard", ("--shard",), str | None, "Timeline, --batch: render only part I/N of the shots or rows (0-based), "
         "or 'auto' from the array job's variables (SLURM, SGE, Kubernetes indexed jobs, or LIPSYNCCTL_SHARD_INDEX/COUNT).", modes=TIMELINE | BATCH),
    Flag("backend", ("--backend",), str | None, "Timeline, --batch: local (default) or ray (Ray: the optional extra "
         "named ray).", modes=TIMELINE | BATCH),
    Flag("dry_run", ("--dry-run",), bool, "Timeline: print the plan (shots, frames, languages, work) and stop; "
         "--batch: each clip planned (its inputs probed), skipped or failed, nothing loaded or written.",
         modes=TIMELINE | BATCH, default=False),
    Flag("wait", ("--wait",), bool, "Timeline: when another run is writing to OUT, wait for it to finish "
         "(otherwise exit 6 naming it).", modes=TIMELINE, default=False),
)


def resolve_flags(values: dict[str, Any], mode: str) -> dict[str, Any]:
    """The config keys set by the flags of ``mode`` (``--face``/``--face-at`` also set faces.select, so
    run.yaml records whose mouth was rendered)."""
    as_edit = values.get("split_scenes") or values.get("segments") is not None  # --video: the edit's picture
    bad = [b for b in misplaced(FLAGS, values, mode) if not (b == "--video" and as_edit)]
    if bad and mode == "batch":
        columns = [b for b in bad if b in ("--video", "--audio", "--output", "-o", "--start", "--end")]
        hint = ("each clip's video, audio, output, start and end are columns of the list" if columns else
                "--batch (a list of clips) and --timeline (an edit) are two modes: give one" if "--timeline" in bad
                else f"{bad[0]} is a --timeline option" + ("; check the outputs with `lipsyncctl score OUT... "
                                                           "--min-sync N`" if "--min-sync" in bad else ""))
        raise UsageError(f"{', '.join(bad)}: not with --batch", hint=hint)
    if bad and mode == "clip":  # each flag says the modes that take it (--gpus: --timeline or --batch)
        where = {f.label: " or ".join(f"--{m}" for m in sorted(f.modes, reverse=True)) for f in FLAGS}
        raise UsageError("; ".join(f"{label}: only with {where.get(label, '--timeline')}" for label in bad))
    if bad:  # the edit decides each shot's picture, span and rate; a shot's own options are in the edit
        per_shot = [b for b in bad if b in ("--face", "--face-at")]
        hint = ("a shot's face goes in its clip's metadata ({'lipsync': {'face': 1}}) or a --segments range"
                if per_shot else "the edit gives each shot's media, span and rate; see `lipsyncctl sync --help`")
        raise UsageError(f"{', '.join(bad)}: not with --timeline", hint=hint)
    flags = config_flags(FLAGS, {**values, "face_at": _face_at(values.get("face_at"))}, mode)
    if mode in ("clip", "batch"):
        if values["face"] is not None and values["face_at"] is not None:
            raise UsageError("give either --face ID or --face-at X,Y, not both")
        flags["faces.select"] = ("id" if values["face"] is not None
                                 else "point" if values["face_at"] is not None else None)
    return flags


def sync_cmd(**values: Any) -> None:
    # a master cut into scenes, or a clip cut at --segments ranges, is dubbed as an edit
    as_edit = values["timeline"] is not None or values["split_scenes"] or values["segments"] is not None
    mode = "batch" if values["batch"] is not None else "timeline" if as_edit else "clip"
    flags = resolve_flags(values, mode)
    config = opt.resolve(values["preset"], values["sets"], flags, values["print_config"])  # --print-config exits
    if mode == "batch":
        return _run_batch(values, config)
    if values["output"] is None:
        raise UsageError("Missing option '--output' / '-o'")
    if mode == "timeline":
        from lipsyncctl.cli.timeline import run_timeline

        return run_timeline(values, config)
    if values["video"] is None:
        raise UsageError("Missing option '--video' (or give --timeline)")
    audio = values["audio"] or []
    if len(audio) != 1:
        raise UsageError("give exactly one --audio file for a clip (LANG=FILE lists are for --timeline)")
    start, end = values["start"], values["end"]
    from lipsyncctl import api

    result = api.sync(values["video"], Path(audio[0]), values["output"], config, start=start, end=end,
                      overwrite=values["overwrite"])
    for w in result.warnings:
        st.warn(w)

    def human(console) -> None:  # type: ignore[no-untyped-def]
        d = result.to_dict()
        console.print(st.kv_table("sync", {
            "output": d["output"] + (f" ({Path(d['files'][0]).name} .. {Path(d['files'][1]).name})" if "files" in d else ""),
            "frames": f"{d['frames']} at {float(result.fps):.3f} fps ({d['duration']} s)",
            "faces found": d["faces_found"], "no-face frames": d["no_face_frames"], "detector": d["detector"],
            "face": d["face_select"] + (f" (track {d['face_track']})" if d["face_track"] is not None else ""),
            "run.yaml": d["run_yaml"], **({"matte": d["matte"]} if d["matte"] else {}),
        }))
        console.print(st.kv_table("seconds per stage", d["stage_seconds"]))

    st.result(result.to_dict, human)


def _run_batch(values: dict[str, Any], config: Any) -> None:
    from lipsyncctl import api
    from lipsyncctl.errors import JobFailedError

    list_file, dry_run = values["batch"], values["dry_run"]
    result = api.sync_batch(list_file, config, overwrite=values["overwrite"], dry_run=dry_run,
                            jobs=values["jobs"] or 1, gpus=values["gpus"], shard=values["shard"],
                            backend=values["backend"] or "local")
    done = [i for i in result.items if i.status == "done"]
    for w in dict.fromkeys(w for item in done for w in item.warnings):  # each text once, with the rows it is about
        lines = [i.row.line for i in done if w in i.warnings]
        st.warn(w if len(lines) == len(done) else f"line{'s' if len(lines) > 1 else ''} "
                f"{', '.join(map(str, lines))}: {w}")

    def human(console) -> None:  # type: ignore[no-untyped-def]

        i, n = result.shard
        rows = [(d["line"], d["video"], d["output"], d["status"], d["frames"] or "", f"{d['seconds']:.1f}", d["reason"])
                for d in (item.to_dict() for item in result.items)]
        console.print(st.table(f"sync --batch {list_file}" + (f" (shard {i}/{n})" if n > 1 else "")
                               + (" (dry run)" if dry_run else ""),
                               ("line", "video", "output", "status", "frames", "seconds", "reason"), rows))
        console.print(", ".join(f"{n} {s}" for s, n in result.counts().items()))

    st.result(result.to_dict, human, ok=result.ok)
    failed, busy = result.failed, result.busy
    if failed:
        raise JobFailedError(
            f"{len(failed)} of {len(result.items)} clip(s) failed: "
            + "; ".join(f"line {i.row.line}" for i in failed[:5]) + (" ..." if len(failed) > 5 else ""),
            hint="the table (or --json) gives each reason; fix those rows and rerun (finished outputs are skipped)",
        )
    if busy:  # (their outputs are not there yet: a script must not deliver the list's outputs now)
        from lipsyncctl.errors import BusyError

        raise BusyError(f"{len(busy)} of {len(result.items)} clip(s) another run is still rendering: "
                        + "; ".join(f"line {i.row.line}" for i in busy[:5]) + (" ..." if len(busy) > 5 else ""),
                        hint="wait for that run to end; a rerun of the list then skips what is done")


# Typer reads the options from the signature: the table above, in its order.
sync_cmd.__signature__ = signature(FLAGS)  # type: ignore[attr-defined]
sync_cmd.__annotations__ = {f.name: f.annotation for f in FLAGS}


def register(app: typer.Typer) -> None:
    from lipsyncctl.cli.timeline import HELP as TIMELINE_HELP

    app.command("sync", help=HELP + TIMELINE_HELP)(sync_cmd)
