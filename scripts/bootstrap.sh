#!/usr/bin/env bash
# scripts/bootstrap.sh — create .venv, install torch FIRST, then the project and its extras.
#   TORCH_SPEC      default "torch==2.13.0" (CPU wheel in this workplace; the registry's CUDA build elsewhere)
#   TORCH_INDEX_URL optional PyTorch wheel index (e.g. https://download.pytorch.org/whl/cu128) for GPU users
#   EXTRAS          default "dev" (tests); "faces", "edl" or "dev,edl" etc.
#   VENV            default ".venv"
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
TORCH_CHOSEN="${TORCH_SPEC:-}${TORCH_INDEX_URL:-}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
EXTRAS="${EXTRAS:-dev}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$PY" -c "import torch" 2>/dev/null; then
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$PY" -m pip install -q "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
  else
    "$PY" -m pip install -q "$TORCH_SPEC"
  fi
elif [ -n "$TORCH_CHOSEN" ]; then  # a build asked for is installed only into a .venv without torch: said, not skipped in silence
  echo "note: $VENV already has torch $("$PY" -c 'import torch; print(torch.__version__)'); TORCH_SPEC/TORCH_INDEX_URL" \
       "choose the build of a new $VENV only (rm -rf $VENV, then run this again to switch)" >&2
fi
"$PY" -m pip install -q -e ".[${EXTRAS}]"
"$PY" -m pip check
"$PY" - <<'PYEOF'
import importlib.metadata as md
import torch
cv = [d.metadata["Name"] for d in md.distributions()
      if (d.metadata["Name"] or "").lower().startswith("opencv")]
if len(cv) != 1:
    raise SystemExit(f"expected exactly one OpenCV distribution, found {cv}")
import cv2  # noqa: F401
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "| opencv:", cv[0], cv2.__version__)
PYEOF
# The test extras: lpips 0.1.4's LPIPS heads (7 KB, from the package index like everything above; pinned by
# sha256) for the golden training-step tests, into the models directory. Without them those tests skip.
case ",$EXTRAS," in
  *,dev,*)
    "$VENV/bin/lipsyncctl" --quiet models fetch lpips-vgg --no-deps >/dev/null \
      || echo "note: lpips-vgg could not be fetched; the LPIPS golden tests will skip" ;;
esac
