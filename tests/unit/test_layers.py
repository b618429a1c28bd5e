"""The package's layers and the direction of its imports (STYLE.md, "Layering").

    cli -> api -> jobs (pipeline, timeline, preparation, checks) -> parts (nets, audio, checkpoints,
    faces, media, runner, scoring) -> leaves (config, config_keys, errors, progress, paths, folders)

Every import of the package is checked, those inside functions and ``TYPE_CHECKING`` blocks included:
``nets`` imports nothing of the package (torch alone), leaves import only leaves, parts import no job,
jobs import neither ``api`` nor ``cli``, and ``cli`` reaches the library only through ``api`` and the leaves.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "lipsyncctl"
LEAVES = {"config", "config_keys", "errors", "progress", "paths", "folders"}
PARTS = {"nets", "audio", "checkpoints", "faces", "media", "runner", "scoring"}
JOBS = {"pipeline", "timeline", "preparation", "checks", "curation", "training"}
ENTRY = {"__init__", "__main__"}  # the root re-exports the api lazily; __main__ starts the cli


def layer(name: str) -> str:
    """The layer of the top-level module or package ``name`` (``lipsyncctl.<name>``)."""
    for label, names in (("leaf", LEAVES), ("part", PARTS), ("job", JOBS), ("entry", ENTRY)):
        if name in names:
            return label
    if name in ("api", "cli"):
        return name
    raise AssertionError(f"lipsyncctl/{name}: not in any layer; add it to tests/unit/test_layers.py")


#: the layers each layer may import
ALLOWED = {
    "leaf": {"leaf"},
    "part": {"leaf", "part"},
    "job": {"leaf", "part", "job"},
    "api": {"leaf", "part", "job"},
    "cli": {"leaf", "api", "cli", "entry"},
    "entry": {"api", "cli", "leaf"},
}


def package_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, top-level name)`` of every absolute import of ``lipsyncctl.*`` in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "lipsyncctl":
                out += [(node.lineno, alias.name) for alias in node.names]
            elif node.module.startswith("lipsyncctl."):
                out.append((node.lineno, node.module.split(".")[1]))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[1]) for a in node.names if a.name.startswith("lipsyncctl.")]
    return out


def top_name(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def test_every_module_is_in_a_layer() -> None:
    names = {top_name(p) for p in PACKAGE.rglob("*.py")}
    assert {n: layer(n) for n in names}  # raises naming a module no layer claims


def test_imports_point_down() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        me = top_name(path)
        for line, name in package_imports(path):
            if name == me or name == "__version__":
                continue
            if me == "nets":
                problems.append(f"{path.relative_to(REPO)}:{line}: nets imports lipsyncctl.{name} (torch only)")
            elif layer(name) not in ALLOWED[layer(me)]:
                problems.append(f"{path.relative_to(REPO)}:{line}: {layer(me)} {me} imports {layer(name)} {name}")
    assert not problems, "imports must point down the layers:\n" + "\n".join(problems)


@pytest.mark.parametrize("source, expected", [
    ("from lipsyncctl.timeline.job import run_timeline", [(1, "timeline")]),
    ("from lipsyncctl import api, config", [(1, "api"), (1, "config")]),
    ("def f():\n    import lipsyncctl.cli.main", [(2, "cli")]),
    ("from .unet_config import UNetConfig", []),
])
def test_import_scanner(tmp_path: Path, source: str, expected: list[tuple[int, str]]) -> None:
    path = tmp_path / "m.py"
    path.write_text(source)
    assert package_imports(path) == expected


def test_tests_mirror_the_layers() -> None:
    """Test files live in tests/unit, tests/cli, tests/golden, tests/slow or tests/bench, never loose."""
    loose = sorted(p.name for p in (REPO / "tests").glob("test_*.py"))
    assert not loose, f"put these test files in a layer folder: {loose}"
    for folder in ("unit", "cli", "golden", "slow", "bench"):
        assert (REPO / "tests" / folder).is_dir(), folder
