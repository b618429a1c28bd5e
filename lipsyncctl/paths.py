"""Where things live. Everything comes from arguments or environment variables, never from the cwd.

- ``LIPSYNCCTL_HOME``: base for user state (default: the platform's user data dir).
- ``LIPSYNCCTL_MODELS``: the models directory. Otherwise ``models/`` of a source checkout (the
  folder beside the ``lipsyncctl`` package that holds ``registry.yaml``), otherwise ``$HOME/models``.
- ``LIPSYNCCTL_FFMPEG``: the ffmpeg binary (see :mod:`lipsyncctl.media.ffmpeg`).
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PRESETS_DIR = PACKAGE_DIR / "presets"
DATA_DIR = PACKAGE_DIR / "data"
#: Architecture configs and the registry shipped with the package (a link to the top-level ``models/`` in a
#: checkout; a copy of its ``configs/`` and ``registry.yaml`` in an installed wheel).
SHIPPED_MODELS_DIR = DATA_DIR / "models"
#: the official mouth mask's name (``DATA_DIR/mask.png``; a setting of another mask is a path)
OFFICIAL_MASK = "mask.png"


def bundled(name: str | os.PathLike[str]) -> Path | None:
    """The file of ``lipsyncctl/data`` that a bare ``name`` (no folder in it: ``mask.png``) names, else None (a path,
    ``./mask.png`` included: the caller's file)."""
    text = os.fspath(name)
    if "/" in text or os.sep in text:
        return None
    found = DATA_DIR / text
    return found if found.is_file() else None


def setting_path(value: str) -> str:
    """A file setting as stored (hashes, keys, run records): a bundled name as it is, a path made absolute (a relative
    one means the folder it was given in, not the one a resume or a rerun starts from)."""
    return value if not value or bundled(value) is not None else str(Path(value).expanduser().absolute())


def home() -> Path:
    env = os.environ.get("LIPSYNCCTL_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("lipsyncctl", appauthor=False))


def checkout_models_dir() -> Path | None:
    """``models/`` of a source checkout, if this package runs from one."""
    candidate = PACKAGE_DIR.parent / "models"
    if (candidate / "registry.yaml").is_file():
        return candidate
    return None


def models_dir() -> Path:
    env = os.environ.get("LIPSYNCCTL_MODELS")
    if env:
        try:
            return Path(env).expanduser()
        except RuntimeError:  # ~user that does not exist
            from lipsyncctl.errors import ConfigError

            raise ConfigError(f"LIPSYNCCTL_MODELS={env}: cannot expand its ~",
                              hint="give the models folder as an absolute path") from None
    checkout = checkout_models_dir()
    if checkout is not None:
        return checkout
    return home() / "models"


def models_dir_source() -> str:
    """Says which rule chose :func:`models_dir` (shown by ``doctor`` and ``models list``)."""
    if os.environ.get("LIPSYNCCTL_MODELS"):
        return "LIPSYNCCTL_MODELS"
    if checkout_models_dir() is not None:
        return "checkout"
    return "user data dir"
