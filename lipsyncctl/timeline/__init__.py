"""The dubbing job over an edit: ``lipsyncctl sync --timeline edit.otio --audio de=de.wav -o out/``.

Modules, in the order the job uses them: :mod:`~.source` (read with OTIO, relink media; :mod:`~.bundle`
for .otioz/.otiod), :mod:`~.segments` (plan the visible shots with exact frame arithmetic, :mod:`~.timebase`),
:mod:`~.shots` (per-shot switches from metadata/markers), :mod:`~.dub` (dub audio, cuts, speech),
:mod:`~.store` (content keys, resumable job store), :mod:`~.render` (render one segment through the clip
pipeline), :mod:`~.workers` (local/pool/Ray execution, shards), :mod:`~.outputs` (relinked timelines,
conform), :mod:`~.qc` and :mod:`~.report` (QC JSON + HTML), :mod:`~.job` (the whole job).

Entry point: :func:`lipsyncctl.timeline.job.run_timeline` (also ``lipsyncctl.api.sync_timeline``).
"""
