#!/usr/bin/env bash
# The README's main job on the bundled sample (lipsyncctl/data/sample.mp4 + sample_dub.wav, 4 s, Apache-2.0,
# see lipsyncctl/data/README.md):
#   1. doctor: can this machine run the pipeline?
#   2. prep: normalise the sample for the model (CFR, 16 kHz mono sidecar)
#   3. sync: re-render the mouth to match the dub
#      - with the latentsync-1.5 preset when its weights are installed (`lipsyncctl models verify`),
#        after trying `lipsyncctl models fetch` first when FETCH=1 (needs the network);
#        on a machine without CUDA only the first 0.64 s (one 16-frame window) at 4 steps, so the
#        full-size UNet finishes in minutes;
#      - otherwise the tiny preset (random tiny networks: every stage runs, the output is NOT lip-synced,
#        and the command says so loudly).
# Usage: scripts/demo.sh [OUT_DIR]   (default out/demo; `make demo` calls it; a rerun replaces its own output). Extra
# sync flags: SYNC_ARGS="...".
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-out/demo}"
LS=".venv/bin/lipsyncctl"
PY=".venv/bin/python"
SAMPLE="lipsyncctl/data/sample.mp4"
DUB="lipsyncctl/data/sample_dub.wav"
REAL_MODELS=(latentsync-1.5 sd-vae-ft-mse)
mkdir -p "$OUT"
start=$(date +%s)

echo "== 1. doctor"
"$LS" doctor --preset tiny

echo "== 2. prep"
"$LS" prep "$SAMPLE" -o "$OUT/prep"

echo "== 3. sync"
if [[ "${FETCH:-0}" == "1" ]]; then
  "$LS" models fetch "${REAL_MODELS[@]}" || echo "demo: fetch failed (offline?); continuing with what is installed"
fi
extra=()
if "$LS" -q models verify "${REAL_MODELS[@]}" --no-hash --no-load >/dev/null 2>&1; then
  preset="latentsync-1.5"
  if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "demo: latentsync-1.5 weights found, no CUDA GPU: syncing the first 0.64 s at 4 steps on the CPU"
    extra=(--end 0.64 --steps 4)
  fi
else
  preset="tiny"
  echo "demo: latentsync-1.5 weights are not installed (lipsyncctl models fetch ${REAL_MODELS[*]});"
  echo "demo: using the tiny preset: random networks, the output is NOT lip-synced"
fi
# shellcheck disable=SC2086  # SYNC_ARGS is a list of flags
"$LS" sync --video "$SAMPLE" --audio "$DUB" -o "$OUT/sample_synced.mp4" -y --preset "$preset" "${extra[@]}" ${SYNC_ARGS:-}

echo "demo outputs in $OUT: prep/, sample_synced.mp4, sample_synced.run.yaml ($(( $(date +%s) - start )) s, preset $preset)"
