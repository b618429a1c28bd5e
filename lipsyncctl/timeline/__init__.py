"""The dubbing job over an edit: ``lipsyncctl sync --timeline edit.otio --audio de=de.wav -o out/``.

Modules, in the order the job uses them: :mod:`~.source` (read with OTIO, relink media; :mod:`~.bundle`
for .otioz/.otiod), :mod:`~.segments` (plan the visible shots with exact frame arithmetic, :mod:`lipsyncctl.media.timecode`),
:mod:`~.shots` (per-shot switches from metadata/markers), :mod:`~.dub` (dub audio, each shot's cut, speech),
:mod:`~.guard` (never overwrite an input), :mod:`~.shot_task` (render one segment through the clip pipeline;
run by :mod:`lipsyncctl.runner.workers`, keys and resume in :mod:`lipsyncctl.runner.store`), :mod:`~.finish`,
:mod:`~.outputs` (relinked timelines, conform), :mod:`~.qc` and :mod:`~.report` (QC JSON + HTML), :mod:`~.types`
(job, shot states and outcomes, results) and :mod:`~.job` (the whole job).

Entry point: :func:`lipsyncctl.timeline.job.run_timeline` (also ``lipsyncctl.api.sync_timeline``).
"""
