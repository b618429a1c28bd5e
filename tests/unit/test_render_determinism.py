"""Same inputs and seed, same file (issue 14.2): a tiny render made twice with the default H.264 .mp4 and with
FFV1 .mkv is identical byte for byte, and the encoder's bytes do not depend on the CPUs the process may use
(x264's automatic thread count did; the Matroska muxer's random segment UID made every .mkv differ)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from lipsyncctl.cli.main import main
from tests.conftest import REPO


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.sync_media import sample_frames, write_clip, write_wav

    root = tmp_path_factory.mktemp("det")
    return {"video": write_clip(root / "v.mkv", sample_frames(20, scale=0.5), Fraction(25)),
            "audio": write_wav(root / "a.wav", 0.8)}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["out.mp4", pytest.param("out.mkv", marks=pytest.mark.slow)])  # mkv opt-in: 12 s
def test_same_inputs_and_seed_give_the_same_file(name: str, clip, models_dir: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    codec = [] if name.endswith(".mp4") else ["--codec", "ffv1"]  # the default (H.264) and the lossless one
    outputs = []
    for run in ("a", "b"):
        out = tmp_path / run / name
        rc = main(["-q", "sync", "--video", str(clip["video"]), "--audio", str(clip["audio"]), "-o", str(out),
                   "--preset", "tiny", "--seed", "7", "--steps", "2", "--length-policy", "cut", *codec])
        assert rc == 0, capsys.readouterr().err
        outputs.append(out)
    if _digest(outputs[0]) != _digest(outputs[1]):
        pytest.fail(_difference(*outputs))
    import yaml

    threads = yaml.safe_load(outputs[0].with_name("out.run.yaml").read_text())["threads"]
    assert threads["encoder"] == 4 and threads["torch"] >= 1  # what the bytes depend on is on record


def _difference(a: Path, b: Path) -> str:
    """What differs between two outputs that should be the same file: the decoded frames (which, by how much) and
    the audio packets; both files are copied to a folder outside pytest's rotation of its temporary folders, so a
    rare failure can be studied after later runs."""
    import shutil
    import tempfile

    import av
    import numpy as np

    from tests.sync_media import decode_rgb

    keep = Path(tempfile.mkdtemp(prefix="lipsyncctl-determinism-"))
    for run, path in (("a", a), ("b", b)):
        shutil.copytree(path.parent, keep / run)
    fa, fb = decode_rgb(a), decode_rgb(b)
    frames = [i for i, (x, y) in enumerate(zip(fa, fb, strict=False)) if not np.array_equal(x, y)]
    worst = max((int(np.abs(fa[i].astype(int) - fb[i].astype(int)).max()) for i in frames), default=0)

    def audio(path: Path) -> list[bytes]:
        with av.open(str(path)) as c:
            return [bytes(p) for p in c.demux(audio=0) if p.size]

    return (f"the two renders differ: frames {len(fa)} vs {len(fb)}, differing frames {frames} (largest "
            f"difference {worst}), audio {'the same' if audio(a) == audio(b) else 'different'}; both kept in {keep}")


ENCODE = """
import os, sys
from fractions import Fraction
from pathlib import Path
from lipsyncctl import config as cfg
from lipsyncctl.pipeline.output import open_writer
from tests.sync_media import sample_frames
if sys.argv[2] == "one":
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
with open_writer(Path(sys.argv[1]), Fraction(25), cfg.resolve("tiny").output) as writer:
    for rgb in sample_frames(30, scale=0.5):
        writer.write(rgb)
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs two CPUs and sched_setaffinity")
def test_encoded_bytes_do_not_depend_on_the_cpus(tmp_path: Path) -> None:
    """The sync output's encoder on every CPU of this process and on one: the same H.264 bytes."""
    outs = []
    for cpus in ("all", "one"):
        out = tmp_path / f"{cpus}.mp4"
        subprocess.run([sys.executable, "-c", ENCODE, str(out), cpus], cwd=REPO, check=True)
        outs.append(out)
    assert _digest(outs[0]) == _digest(outs[1])
