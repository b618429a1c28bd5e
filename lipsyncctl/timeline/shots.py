"""Per-shot switches and options carried by the edit: clip metadata and markers.

A clip (or a marker on it) can switch lip-sync off or carry options for that shot only::

    clip.metadata["lipsync"] = False                       # leave this shot alone
    clip.metadata["lipsync"] = {"enabled": True, "face": 1, "face_at": [640, 360],
                                "guidance": 2.0, "steps": 10, "length_policy": "cut",
                                "set": ["faces.detect_every=2"], "audio_offset": 0.08}
    Marker(name="lipsync: false")                          # same as the first line
    Marker(name="lipsync", metadata={"lipsync": {"face": 0}})

Markers are read after the clip's metadata, so a marker wins. ``audio_offset`` (seconds) shifts the dub
under this shot's render: its picture at record time ``t`` is lip-synced to the dub at ``t - audio_offset``
(positive: the dub is late there), in whole samples (:func:`~lipsyncctl.timeline.dub.offset_samples`):
the render carries that cut, the conform plays it over the shot's record range and the relinked dub track
gives the shot its own clip at the shifted source position. ``sync --segments`` writes these as markers
(:mod:`~lipsyncctl.timeline.ranges`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lipsyncctl.errors import EditOptionError

_OFF = ("false", "off", "no", "0", "skip")
_ON = ("true", "on", "yes", "1")
_KEYS = {"enabled", "face", "face_at", "guidance", "steps", "length_policy", "set", "audio_offset"}


@dataclass(frozen=True)
class ShotOptions:
    """Options of one shot from the edit. None = not set (the run's configuration applies)."""

    enabled: bool | None = None
    face_id: int | None = None
    face_at: tuple[float, float] | None = None
    guidance: float | None = None
    steps: int | None = None
    length_policy: str | None = None
    sets: tuple[str, ...] = ()
    audio_offset: float | None = None  # seconds the dub is shifted under this shot (see the module docstring)

    def overrides(self) -> dict[str, Any]:
        """The options as overrides of the run configuration (dotted key -> value), for
        :meth:`~lipsyncctl.config.Config.with_overrides`: the clip's ``set`` list first, then the named
        options. The face choice goes through ``faces.*`` like everywhere else."""
        from lipsyncctl.config import face_overrides, overrides_from_sets

        out = overrides_from_sets(self.sets)
        if self.guidance is not None:
            out["inference.guidance"] = self.guidance
        if self.steps is not None:
            out["inference.steps"] = self.steps
        if self.length_policy is not None:
            out["sync.length_policy"] = self.length_policy
        return out | face_overrides(self.face_id, self.face_at)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for k in ("enabled", "face_id", "face_at", "guidance", "steps", "length_policy", "audio_offset"):
            v = getattr(self, k)
            if v is not None:
                d[k] = list(v) if isinstance(v, tuple) else v
        if self.sets:
            d["set"] = list(self.sets)
        return d


def _merge(base: dict[str, Any], value: Any, where: str) -> None:
    if isinstance(value, bool):
        base["enabled"] = value
    elif isinstance(value, str):
        v = value.strip().lower()
        if v in _OFF or v in _ON:
            base["enabled"] = v in _ON
        else:
            raise EditOptionError(f"{where}: lipsync {value!r}: expected true/false or a mapping of options")
    elif isinstance(value, dict) or hasattr(value, "items"):
        for k, v in dict(value).items():
            if k not in _KEYS:
                raise EditOptionError(f"{where}: unknown lipsync option {k!r}",
                                  hint=f"known options: {', '.join(sorted(_KEYS))}")
            base[k] = v
    elif value is not None:
        raise EditOptionError(f"{where}: lipsync metadata must be true/false or a mapping, got {value!r}")


def _option_texts(marker: Any) -> list[str]:
    """A marker's texts that give lipsync options: its name or its comment (an NLE's marker text), ``lipsync: ...``."""
    texts = ((marker.name or "").strip(), (getattr(marker, "comment", "") or "").strip())
    return [t for t in texts if t.lower().startswith("lipsync:")][:1]


def is_option_marker(marker: Any) -> bool:
    """Whether a marker gives its clip lipsync options (by its name, its comment or its metadata)."""
    return bool(_option_texts(marker)) or "lipsync" in (marker.metadata or {})


def shot_options(item: Any) -> ShotOptions:
    """Read the ``lipsync`` metadata of an OTIO clip and its markers.

    Raises:
        ConfigError: a value that cannot be read (names the clip).
    """
    where = f"clip {item.name!r}"
    raw: dict[str, Any] = {}
    _merge(raw, item.metadata.get("lipsync"), where)
    for marker in getattr(item, "markers", []):
        name = (marker.name or "").strip()
        for text in _option_texts(marker):  # an NLE's marker name or its comment
            _merge(raw, text.split(":", 1)[1], f"{where}, marker {text!r}")
        if "lipsync" in marker.metadata:
            _merge(raw, marker.metadata["lipsync"], f"{where}, marker {name!r}")
    try:
        return ShotOptions(
            enabled=None if raw.get("enabled") is None else bool(raw["enabled"]),
            face_id=None if raw.get("face") is None else int(raw["face"]),
            face_at=None if raw.get("face_at") is None else face_point(raw["face_at"]),
            guidance=None if raw.get("guidance") is None else finite_number(raw["guidance"], "guidance"),
            steps=None if raw.get("steps") is None else int(raw["steps"]),
            length_policy=raw.get("length_policy"),
            sets=tuple(str(s) for s in raw.get("set", ())),
            audio_offset=None if raw.get("audio_offset") is None else finite_number(raw["audio_offset"], "audio_offset"),
        )
    except (TypeError, ValueError, IndexError) as exc:
        raise EditOptionError(f"{where}: bad lipsync option ({exc})") from None


def finite_number(value: Any, key: str) -> float:
    """A shot option's number (``--segments``, an edit's metadata): finite (NaN or an infinity, as YAML's .nan or
    JSON's NaN reads, failed deep in the render: an internal error), not a boolean (YAML's true is no number).

    Raises:
        ValueError: saying which.
    """
    import math

    if isinstance(value, bool):
        raise ValueError(f"{key} {value!r} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{key} {value!r} is not a finite number")
    return number


def face_point(value: Any) -> tuple[float, float]:
    """A shot's ``face_at`` as ``(x, y)``: ``[x, y]``, or ``"X,Y"`` as ``--face-at`` takes it (a string was read a
    character at a time: "640,360" was the pixel (6, 4)).

    Raises:
        ValueError: not two finite numbers.
    """
    from lipsyncctl.config import parse_point

    if isinstance(value, str):
        point = parse_point(value)
        if point is None:
            raise ValueError(f"face_at {value!r} is not X,Y in pixels")
        return point[0], point[1]
    items = list(value) if hasattr(value, "__iter__") and not isinstance(value, dict) else []  # (OTIO: AnyVector)
    if len(items) != 2:
        raise ValueError(f"face_at {value!r} is not [x, y] in pixels")
    return finite_number(items[0], "face_at x"), finite_number(items[1], "face_at y")
