"""Cutting a flat programme master into shots when no edit list comes with it (``sync --split-scenes``).

PySceneDetect's content detector (``detect-content``: HSV difference between frames, ``threshold`` and
``min_scene_len`` as its CLI takes them) runs on the master as it is decoded, one frame held at a time,
on the same frame grid the renders and the conform read (:func:`lipsyncctl.timeline.mediaio.read_frames`);
frames are downscaled first as PySceneDetect's own frame source does. The shots become an OTIO edit
(:func:`ranges_timeline`): one clip per scene on one video track, named ``scene_001``..., media = the
master, record times = source times (the edit starts at the master's timecode), so the dub given for the
master lines up with the edit's first frame. ``OUT/scenes.otio`` holds it, and the ordinary timeline job
runs on it: every shot gets its own face track, render, report row, relinked clip and conform.

The edit is kept with the master's fingerprint and the detector's settings in its metadata
(``metadata["lipsyncctl"]["scenes"]``), so a rerun of the same command reads it instead of detecting
again (and reuses every finished shot, whose keys are unchanged).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lipsyncctl import progress
from lipsyncctl.errors import MediaError, UsageError
from lipsyncctl.media import timecode as tb

if TYPE_CHECKING:
    from lipsyncctl.config import Config
    from lipsyncctl.timeline.types import TimelineJob

#: the detected edit's file name in ``OUT``
SCENES_NAME = "scenes.otio"


@dataclass(frozen=True)
class SceneRange:
    """One clip of an edit built over a single file: source frames ``[first, stop)`` of the file (its own
    frame numbers, 0 = its first frame), the clip's name and its ``lipsync`` metadata (None: none)."""

    first: int
    stop: int
    name: str
    lipsync: Any = None


@dataclass(frozen=True)
class SceneEdit:
    """The edit of a master: where it is written, its scenes as file frames ``[first, stop)`` and rate,
    and whether an earlier run's edit was reused (same master, same settings)."""

    path: Path
    scenes: list[tuple[int, int]]
    fps: Fraction
    reused: bool = False


def detect_scenes(frames: Iterable[np.ndarray], count: int, fps: Fraction, *, threshold: float,
                  min_frames: int) -> list[tuple[int, int]]:
    """Shots ``[(first, stop), ...]`` covering frames ``0 .. count`` of a stream of RGB frames
    ``(H, W, 3)``: PySceneDetect's :class:`~scenedetect.ContentDetector` fed frame by frame (downscaled to
    about 256 pixels wide as its own video sources do). A cut at frame ``k`` starts a shot at ``k``."""
    import cv2
    from scenedetect import ContentDetector, FrameTimecode
    from scenedetect.scene_manager import compute_downscale_factor

    detector = ContentDetector(threshold=threshold, min_scene_len=min_frames)
    cuts: list[int] = []
    size: tuple[int, int] | None = None
    factor = 1.0
    seen = 0
    for i, rgb in enumerate(frames):
        if size is None:
            height, width = rgb.shape[:2]
            factor = compute_downscale_factor(max(width, height))
            size = (max(1, round(width / factor)), max(1, round(height / factor)))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_LINEAR) if factor > 1 else rgb
        bgr = np.ascontiguousarray(small[..., ::-1])
        cuts += [c.frame_num for c in detector.process_frame(FrameTimecode(i, fps=float(fps)), bgr)]
        seen = i + 1
    cuts += [c.frame_num for c in detector.post_process(FrameTimecode(seen, fps=float(fps))) or []]
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < count), count]
    return [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def ranges_timeline(media: Path, url: str, ranges: Sequence[SceneRange], *, fps: Fraction, media_start: int,
                    media_frames: int, name: str, metadata: dict[str, Any] | None = None) -> Any:
    """An OTIO timeline of ``ranges`` of one file on one video track: record time = source time (the edit
    starts at the file's timecode ``media_start``, frames at ``fps``), a gap where no range covers the file.

    Args:
        media: the file (only its name is used, for the timeline's name).
        url: the clips' media URL (a path as the timeline should hold it).
        ranges: non-overlapping, in order, within ``0 .. media_frames``.
        metadata: stored under ``timeline.metadata["lipsyncctl"]``.
    """
    import opentimelineio as otio

    timeline = otio.schema.Timeline(name=name or media.stem, global_start_time=tb.rational(media_start, fps))
    track = otio.schema.Track(name="V1", kind=otio.schema.TrackKind.Video)
    available = tb.time_range(media_start, media_frames, fps)
    at = 0
    for r in ranges:
        if r.first > at:
            track.append(otio.schema.Gap(source_range=tb.time_range(0, r.first - at, fps)))
        ref = otio.schema.ExternalReference(target_url=url, available_range=available)
        clip = otio.schema.Clip(name=r.name, media_reference=ref,
                                source_range=tb.time_range(media_start + r.first, r.stop - r.first, fps))
        if r.lipsync is not None:
            clip.metadata["lipsync"] = r.lipsync
        track.append(clip)
        at = r.stop
    timeline.tracks.append(track)
    if metadata:
        timeline.metadata["lipsyncctl"] = metadata
    return timeline


def write_scene_edit(master: Path, folder: Path, *, threshold: float, min_frames: int,
                     inputs: Iterable[Path] = (), deinterlace: bool = False, dry_run_for: Path | None = None) -> SceneEdit:
    """Detect the scenes of ``master`` and write their edit to ``folder/scenes.otio`` (atomically), or reuse
    the edit there when it was made from the same master (fingerprint) with the same settings. ``deinterlace``
    (``sync.deinterlace`` auto): an interlaced master's cuts are found on progressive pictures (part of the
    settings for such a master only). ``dry_run_for``: a dry run's output folder (``folder`` is then a temporary
    one): the message names where a run writes the edit, not the temporary file.

    Raises:
        MediaError: ``master`` is not a readable video (exit 5).
    """
    import opentimelineio as otio

    from lipsyncctl.media.atomic import atomic_output
    from lipsyncctl.media.probe import is_interlaced
    from lipsyncctl.runner.store import file_fingerprint
    from lipsyncctl.timeline.mediaio import read_frames
    from lipsyncctl.timeline.source import adapter_for, probe_media

    if not master.is_file():
        raise MediaError(f"--split-scenes: {master}: file not found", hint="give the programme master as --video")
    if adapter_for(master) is not None:
        raise UsageError(f"--split-scenes: {master} is an edit, not a video",
                         hint="an edit is dubbed shot by shot as it is: drop --split-scenes")
    facts = probe_media(master)
    if facts.frames <= 0:
        raise MediaError(f"--split-scenes: {master}: no frames to split")
    fps = Fraction(facts.fps)
    deinterlaced = deinterlace and is_interlaced(facts.field_order)
    settings = {"master": str(master.resolve()), "fingerprint": file_fingerprint(master.resolve()),
                "detector": "content", "threshold": threshold, "min_scene_len": min_frames,
                **({"deinterlaced": True} if deinterlaced else {})}
    path = folder / SCENES_NAME
    if (old := _earlier_edit(path, settings)) is not None:
        progress.message(f"{path}: the scenes of {master.name} from an earlier run ({len(old)} shots)")
        return SceneEdit(path=path, scenes=old, fps=fps, reused=True)
    with progress.Task(f"split scenes of {master.name}", total=facts.frames) as bar:
        def frames() -> Iterator[np.ndarray]:
            for rgb in read_frames(master, 0, facts.frames, deinterlace=deinterlaced):
                yield rgb
                bar.advance()

        scenes = detect_scenes(frames(), facts.frames, fps, threshold=threshold, min_frames=min_frames)
    ranges = [SceneRange(a, b, f"scene_{k:03d}") for k, (a, b) in enumerate(scenes, start=1)]
    timeline = ranges_timeline(master, str(master.resolve()), ranges, fps=fps,
                               media_start=tb.tag_frames(facts.start_timecode, fps),
                               media_frames=facts.frames, name=master.stem,
                               metadata={"scenes": {**settings, "shots": [list(s) for s in scenes]}})
    with atomic_output(path, inputs=[master, *inputs]) as tmp:
        otio.adapters.write_to_file(timeline, str(tmp), adapter_name="otio_json")
    if dry_run_for is None:
        progress.message(f"{master.name}: {len(scenes)} shot(s), edit written to {path}")
    else:
        progress.message(f"{master.name}: {len(scenes)} shot(s) (dry run: the edit is not written; a run writes it "
                         f"to {dry_run_for / SCENES_NAME})")
    return SceneEdit(path=path, scenes=scenes, fps=fps)


def _earlier_edit(path: Path, settings: dict[str, Any]) -> list[tuple[int, int]] | None:
    """The scenes stored in an earlier ``scenes.otio`` made with ``settings`` (None: none, or different)."""
    try:
        stored = json.loads(path.read_text())["metadata"]["lipsyncctl"]["scenes"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if {k: v for k, v in stored.items() if k != "shots"} != settings:  # a setting more or less is another edit
        return None
    return [(int(a), int(b)) for a, b in stored.get("shots", [])]


@contextlib.contextmanager
def scene_job(job: TimelineJob, config: Config) -> Iterator[TimelineJob]:
    """``job`` with its master (``job.timeline``, a video file, when ``job.split_scenes``) replaced by the
    detected edit, written to ``OUT/scenes.otio``; or a single clip given with ``--segments`` replaced by
    its edit cut at the ranges, ``OUT/segments.otio`` (:func:`lipsyncctl.timeline.ranges.write_clip_edit`).
    A dry run writes them to a temporary folder, removed when the block ends: a dry run writes nothing to
    ``OUT``. Any other job is yielded unchanged."""
    from lipsyncctl.timeline.ranges import is_clip, write_clip_edit

    clip_segments = job.segments is not None and not job.split_scenes and is_clip(job.timeline)
    if not job.split_scenes and not clip_segments:
        yield job
        return
    opts = config.timeline
    with contextlib.ExitStack() as stack:
        folder = (Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lipsyncctl-scenes-")))
                  if job.dry_run else job.output)
        inputs = [p for _, p in job.audio]
        if job.split_scenes:
            path = write_scene_edit(job.timeline, folder, threshold=opts.scene_threshold,
                                    min_frames=opts.scene_min_frames, inputs=inputs,
                                    deinterlace=config.sync.deinterlace == "auto",
                                    dry_run_for=job.output if job.dry_run else None).path
        else:
            assert job.segments is not None
            path = write_clip_edit(job.timeline, folder, job.segments, inputs=inputs)
        yield replace(job, timeline=path, split_scenes=False)
