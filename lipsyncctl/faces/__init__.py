"""Faces: detection, tracking, the official alignment and paste-back, mouth masks.

Modules (import them directly; nothing heavy is imported here):

- :mod:`~lipsyncctl.faces.detect`: :class:`Face`, :class:`FaceDetector`, ``create_detector("auto")``
  with the ``insightface``, ``face-alignment`` and ``dlib`` backends.
- :mod:`~lipsyncctl.faces.track`: :class:`FaceTracker` (detect every k frames, refit between,
  One-Euro smoothing, track ids), ``crossfade_weights``.
- :mod:`~lipsyncctl.faces.speaker`: which track to follow (``faces.select``): ``select_speaker``,
  ``active_speaker`` (the mouth that moves with the audio).
- :mod:`~lipsyncctl.faces.align`: :class:`FaceAligner` (``align`` and ``restore``), three-point mapping
  from 68/106 landmarks.
- :mod:`~lipsyncctl.faces.mask`: the mouth mask, masked and reference images, latent mask.
- :mod:`~lipsyncctl.faces.warp`: torch image operations matching the official kornia numerics.
"""
