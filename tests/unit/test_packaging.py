"""The package ships its presets, architecture configs, registry and sample through package data."""

from __future__ import annotations

from lipsyncctl import paths
from lipsyncctl.checkpoints.archs import load_unet_config
from lipsyncctl.checkpoints.registry import default_registry_path, load_registry


def test_shipped_model_configs_and_registry_resolve_inside_the_package() -> None:
    shipped = paths.SHIPPED_MODELS_DIR
    assert (shipped / "registry.yaml").is_file()
    for name in ("stage1", "stage1_512", "stage2", "stage2_512", "stage2_efficient"):
        assert (shipped / "configs" / "unet" / f"{name}.yaml").is_file()
    assert load_unet_config("stage2_512").in_channels == 13
    assert load_registry(default_registry_path()).get("latentsync-1.6") is not None


def test_presets_and_samples_are_package_data() -> None:
    assert {p.stem for p in paths.PRESETS_DIR.glob("*.yaml")} >= {
        "latentsync-1.5", "latentsync-1.6", "fast", "low-vram", "broadcast", "tiny"
    }
    for name in ("sample.mp4", "sample_dub.wav", "mask.png"):
        assert (paths.DATA_DIR / name).is_file()


def test_every_module_imports_first() -> None:
    """Each module of the package imports in a process where no other module of it is loaded yet (a circular
    import that only an import order shows: ``lipsyncctl.curation.features`` first failed, half-made)."""
    import subprocess
    import sys

    script = """
import importlib, pkgutil, sys, traceback
import lipsyncctl
names = sorted(m.name for m in pkgutil.walk_packages(lipsyncctl.__path__, "lipsyncctl."))
failed = []
for name in names:
    for loaded in [m for m in sys.modules if m == "lipsyncctl" or m.startswith("lipsyncctl.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print(len(names))
print("\\n".join(failed))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
    count, *failed = out.stdout.strip().split("\n")
    assert int(count) > 100 and [f for f in failed if f] == [], out.stdout
