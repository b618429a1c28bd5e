#!/usr/bin/env bash
# The README's main job on the bundled sample: check the machine, then normalise the sample for the model.
# Later: lip-sync it (latentsync-1.5 when its weights are installed, otherwise the tiny preset).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-out/demo}"
LS=".venv/bin/lipsyncctl"
mkdir -p "$OUT"
"$LS" doctor --preset tiny
"$LS" prep lipsyncctl/data/sample.mp4 -o "$OUT/prep"
echo "demo outputs in $OUT"
