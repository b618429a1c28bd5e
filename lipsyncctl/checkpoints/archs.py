"""Architecture config files: the official UNet YAMLs and the DDIM scheduler config in ``models/configs``.

``load_unet_config("stage2")`` (or a path to any YAML with a ``model:`` section, or a bare model
mapping) returns a validated :class:`~lipsyncctl.nets.unet_config.UNetConfig`;
``load_syncnet_config("syncnet_16_pixel_attn")`` a :class:`~lipsyncctl.nets.syncnet.StableSyncNetConfig`.
Names are looked up in ``<models dir>/configs/<kind>/`` and then in the ``models/configs/<kind>/`` folder
of the source checkout.

Validation happens when the file is loaded, not in the forward pass: unknown keys, wrong types and
values out of range are :class:`~lipsyncctl.errors.ConfigError` (exit 3) naming the file and the key.
The rules live with the config dataclasses (:func:`~lipsyncctl.nets.unet_config.normalize_fields`); a
number PyYAML leaves as a string (``norm_eps: 1e-05``) is read as that number in a numeric field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lipsyncctl import paths
from lipsyncctl.errors import ArchConfigError

if TYPE_CHECKING:
    from lipsyncctl.nets.syncnet import StableSyncNetConfig
    from lipsyncctl.nets.unet_config import UNetConfig

#: The official architecture files (``configs/unet/*.yaml`` upstream), plus ``tiny`` for tests and demos.
OFFICIAL_UNET_CONFIGS = ("stage1", "stage1_512", "stage2", "stage2_512", "stage2_efficient")
UNET_CONFIG_NAMES = (*OFFICIAL_UNET_CONFIGS, "tiny")


def config_dirs() -> list[Path]:
    """Folders searched for ``unet/<name>.yaml`` and ``scheduler_config.json``, in order."""
    dirs = [paths.models_dir() / "configs", paths.SHIPPED_MODELS_DIR / "configs"]
    out: list[Path] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def find_config_file(relative: str) -> Path:
    """First ``<dir>/<relative>`` over :func:`config_dirs`; ConfigError listing the folders tried."""
    tried = [d / relative for d in config_dirs()]
    for p in tried:
        if p.is_file():
            return p
    kind = Path(relative).parent
    known = sorted({f.stem for d in config_dirs() for f in (d / kind).glob("*.yaml")})
    raise ArchConfigError(
        f"architecture config {relative!r} not found (looked in: {', '.join(str(p.parent) for p in tried)})",
        hint=f"known {kind} configs: {', '.join(known) or '(none)'}; or pass a path to a YAML file",
    )


def config_path(kind: str, path_or_name: str | Path) -> Path:
    """Resolve a config name (``stage2``, ``syncnet_16_pixel_attn``) of ``kind`` (``unet``, ``syncnet``)
    or a file path to an existing file."""
    p = Path(path_or_name)
    if p.suffix in (".yaml", ".yml", ".json") or p.is_file():
        if not p.is_file():
            raise ArchConfigError(f"{kind} config file not found: {p}")
        return p
    return find_config_file(f"{kind}/{path_or_name}.yaml")


def unet_config_path(path_or_name: str | Path) -> Path:
    """Resolve a UNet config name (``stage2``) or a file path to an existing file."""
    return config_path("unet", path_or_name)


def load_config_yaml(kind: str, path_or_name: str | Path) -> dict[str, Any]:
    """The whole YAML document of an architecture config (``model:``, ``data:``, ... sections)."""
    import yaml

    return _read_mapping(config_path(kind, path_or_name), yaml.safe_load, yaml.YAMLError, f"{kind} config")


def load_unet_yaml(path_or_name: str | Path) -> dict[str, Any]:
    """The whole UNet YAML document (``model:``, ``data:``, ... sections) as a dict."""
    return load_config_yaml("unet", path_or_name)


def load_unet_config(path_or_name: str | Path) -> UNetConfig:
    """Validated UNet architecture from a name (see :data:`UNET_CONFIG_NAMES`) or a YAML/JSON path.

    The document may be an official-layout YAML (architecture under ``model:``) or the bare model mapping.
    """
    from lipsyncctl.nets.unet_config import UNetConfig

    p = unet_config_path(path_or_name)
    key, section = _model_section(p, load_unet_yaml(p))
    try:
        return UNetConfig.from_dict(section)
    except (TypeError, ValueError) as e:
        raise ArchConfigError(f"{p}: {key}: {e}") from e


def load_syncnet_config(path_or_name: str | Path) -> StableSyncNetConfig:
    """Validated StableSyncNet architecture from a name (``syncnet_16_pixel_attn``) or a YAML path
    (official layout with ``model:``, or the bare model mapping)."""
    from lipsyncctl.nets.syncnet import StableSyncNetConfig

    p = config_path("syncnet", path_or_name)
    key, section = _model_section(p, load_config_yaml("syncnet", p))
    try:
        return StableSyncNetConfig.from_dict(section)
    except (TypeError, ValueError) as e:
        raise ArchConfigError(f"{p}: {key}: {e}") from e


def syncnet_input_view(path_or_name: str | Path) -> tuple[bool, int]:
    """``(lower_half, resolution)`` a StableSyncNet was trained on: its config's ``data`` section (official:
    ``data.lower_half`` decides the crop of the UNet's sync loss), ``(True, 256)`` where the file has none."""
    p = config_path("syncnet", path_or_name)
    data = load_config_yaml("syncnet", p).get("data")
    data = data if isinstance(data, dict) else {}
    lower, size = data.get("lower_half", True), data.get("resolution", 256)
    if not isinstance(lower, bool) or not isinstance(size, int) or size < 16:
        raise ArchConfigError(f"{p}: data: lower_half must be true or false and resolution a size in px")
    return lower, size


def _model_section(path: Path, doc: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(where, mapping)``: the ``model:`` section of an architecture YAML, else the whole document."""
    key = "model" if "model" in doc else "<top level>"
    section = doc["model"] if "model" in doc else doc
    if not isinstance(section, dict):
        raise ArchConfigError(f"{path}: {key}: expected a mapping")
    return key, section


def unet_config_from_dict(d: dict[str, Any], source: str = "<dict>") -> UNetConfig:
    """``UNetConfig.from_dict`` with errors turned into ConfigError naming ``source`` (e.g. a checkpoint)."""
    from lipsyncctl.nets.unet_config import UNetConfig

    try:
        return UNetConfig.from_dict(d)
    except (TypeError, ValueError) as e:
        raise ArchConfigError(f"{source}: UNet config: {e}") from e


def official_scheduler_config() -> dict[str, Any]:
    """The official ``configs/scheduler_config.json`` shipped with the package (the one source of the DDIM
    settings; a ``scheduler_config.json`` in the models dir does not replace it here)."""
    return load_scheduler_config(paths.SHIPPED_MODELS_DIR / "configs" / "scheduler_config.json")


def load_scheduler_config(path: str | Path | None = None) -> dict[str, Any]:
    """The scheduler JSON (default: ``configs/scheduler_config.json``) as a dict, as stored."""
    p = Path(path) if path is not None else find_config_file("scheduler_config.json")
    return _read_mapping(p, json.load, json.JSONDecodeError, "scheduler config")


def _read_mapping(p: Path, parse: Any, parse_error: type[Exception], what: str) -> dict[str, Any]:
    """The mapping stored in ``p`` (YAML or JSON by ``parse``); ConfigError naming the file otherwise."""
    try:
        with open(p, encoding="utf-8") as fh:
            doc = parse(fh)
    except (OSError, parse_error) as e:
        raise ArchConfigError(f"{p}: cannot read {what}: {e}") from e
    if not isinstance(doc, dict):
        raise ArchConfigError(f"{p}: expected a mapping at the top level")
    return doc
