"""`prep` throughput on the shared fixture beside a plain ffmpeg command doing the same conversion.

The fixture is 10 s of 1080x1920 HEVC at 25 fps with AAC 44.1 kHz stereo. Both sides produce H.264
(yuv420p, the same CRF and x264 preset) at 25 fps CFR with 16 kHz mono AAC muxed, plus a 16 kHz mono
WAV. Each runs in its own process; the table gives wall time, frames per second, real-time factor and
peak RSS. A PyAV decode-only pass shows how much of the time is decoding.

    .venv/bin/python tests/bench/bench_prep.py [--preset medium] [--crf 18] [--repeat 1]
    .venv/bin/python -m pytest -m bench -s tests/bench/bench_prep.py

Environment for the pytest entry: ``LIPSYNCCTL_BENCH_PRESET`` (default ``veryfast``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO.parent / "shared" / "fixtures" / "demo1_video.mp4"

_DECODE = r"""
import sys, av
with av.open(sys.argv[1]) as c:
    s = c.streams.video[0]
    s.thread_type = "AUTO"
    n = sum(1 for _ in c.decode(s))
print(n)
"""


def _run(cmd: list[str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MiB) and stdout of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}): {err[-2000:]}")
    return wall, usage.ru_maxrss // 1024, out


def bench(preset: str = "veryfast", crf: int = 18, repeat: int = 1) -> list[dict]:
    from lipsyncctl.media.ffmpeg import find_ffmpeg
    from lipsyncctl.media.probe import probe

    info = probe(FIXTURE)
    assert info.video is not None
    frames, seconds = info.video.frame_count, info.video.duration
    exe, source = find_ffmpeg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_prep.") as tmp:
        out = Path(tmp)
        commands = {
            "PyAV decode only": [sys.executable, "-c", _DECODE, str(FIXTURE)],
            f"ffmpeg CLI ({source})": [
                str(exe), "-v", "error", "-y", "-i", str(FIXTURE),
                "-map", "0:v:0", "-map", "0:a:0", "-vf", "fps=25", "-c:v", "libx264", "-preset", preset,
                "-crf", str(crf), "-pix_fmt", "yuv420p", "-c:a", "aac", "-ar", "16000", "-ac", "1",
                str(out / "ffmpeg.mp4"),
                "-map", "0:a:0", "-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le", str(out / "ffmpeg.wav"),
            ],
            "lipsyncctl prep": [
                sys.executable, "-m", "lipsyncctl", "-q", "prep", str(FIXTURE), "-o", str(out / "prep"),
                "--encoder-preset", preset, "--crf", str(crf), "--fps", "25", "--force",
            ],
        }
        for name, cmd in commands.items():
            best = None
            for _ in range(repeat):
                wall, rss, _ = _run(cmd)
                best = (wall, rss) if best is None or wall < best[0] else best
            assert best is not None
            rows.append({"what": name, "seconds": best[0], "fps": frames / best[0], "x realtime": seconds / best[0],
                         "peak RSS MiB": best[1]})
        for name, path in (("ffmpeg CLI", out / "ffmpeg.mp4"), ("lipsyncctl prep", out / "prep" / "demo1_video.mp4")):
            o = probe(path)
            assert o.video is not None and o.video.frame_count == frames and not o.video.is_vfr, name
            row = next(r for r in rows if r["what"].startswith(name))
            row["output MiB"] = path.stat().st_size / 2**20
    return rows


def render(rows: list[dict], preset: str, crf: int) -> str:
    cols = ["what", "seconds", "fps", "x realtime", "peak RSS MiB", "output MiB"]
    lines = [f"prep benchmark: {FIXTURE.name} (10 s 1080x1920 HEVC) -> H.264 {preset} crf {crf}, "
             f"25 fps CFR, 16 kHz mono; {os.cpu_count()} CPUs", ""]
    table = [[r.get(c, "") for c in cols] for r in rows]
    fmt = [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row] for row in table]
    widths = [max(len(c), *(len(row[i]) for row in fmt)) for i, c in enumerate(cols)]
    lines.append("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in fmt]
    return "\n".join(lines)


@pytest.mark.bench
def test_bench_prep() -> None:
    if not FIXTURE.is_file():
        pytest.skip(f"fixture not found: {FIXTURE}")
    preset = os.environ.get("LIPSYNCCTL_BENCH_PRESET", "veryfast")
    print("\n" + render(bench(preset), preset, 18))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--crf", type=int, default=18)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    print(render(bench(args.preset, args.crf, args.repeat), args.preset, args.crf))
