#!/usr/bin/env bash
# Every GPU check of the project in ONE call of the device tool (a lent task has 15 minutes in all; see the
# tool library's device/README.md): issue 12's sync benchmark and CUDA-graph check, the precision check
# (`run`); issue 11's training step check (`run-train`, a second call). The device machine has python3 with
# torch, transformers, accelerate and opencv, but not the rest of
# this package's needs, no detector weights and no ../shared; so:
#
#   scripts/gpu_session.sh prepare   # HERE: wheels the device lacks -> .gpu/whl (cp312, the versions of .venv),
#                                    # the fixture -> .gpu/fixtures, its face plan -> .gpu/faces.npz (dlib, CPU)
#   device run: command "bash scripts/gpu_session.sh run", carry [".gpu"], timeout_s 480 (the checks' own
#   limits add up to 7.5 minutes: with the machine's start that leaves a few minutes of the 15)
#   scripts/gpu_session.sh run       # THERE: installs the wheels into /tmp/site and runs each check under its
#                                    # own time limit; JSON and logs under $OUT (8 files at most come back)
#
# Each check rewrites its JSON after every row, so a check cut by its limit keeps what it measured; a check
# that fails does not stop the next one. .gpu/ is ignored through .git/info/exclude (never committed).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS="diffusers pydantic pydantic_core annotated_types typing_inspection av platformdirs importlib_metadata"

prepare() {
  local py=.venv/bin/python
  grep -qxF '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  rm -rf .gpu && mkdir -p .gpu/whl .gpu/fixtures
  local pins
  pins=$($py - $WHEELS <<'EOF'
import importlib.metadata as m, sys
print(" ".join(f"{n.replace('_', '-')}=={m.version(n)}" for n in sys.argv[1:]))
EOF
)
  # shellcheck disable=SC2086
  $py -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/whl $pins
  cp ../shared/fixtures/demo1_video.mp4 ../shared/fixtures/demo1_audio.wav .gpu/fixtures/
  $py scripts/gpu_sync_bench.py --save-faces .gpu/faces.npz --clip .gpu/fixtures/demo1_video.mp4 --seconds 4
  du -sh .gpu
  echo "next: the device tool's run with command 'bash scripts/gpu_session.sh run', carry ['.gpu'], timeout_s 480"
}

run() {
  local out=${OUT:-out/gpu}
  mkdir -p "$out"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
  export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
  { nvidia-smi; python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"; } \
    > "$out/machine.txt" 2>&1 || true
  local fx=.gpu/fixtures
  # issue 12 (measured once on an H200: tests/bench/gpu_results/): what that run left open. In fp16 through
  # the renderer: CUDA graphs, DeepCache and two windows per batch, alone and together, at 256 (and 512:
  # graphs, DeepCache); no compile rows here (each compiles for about 2 minutes; gpu_unet_profile.py measured them)
  timeout 170 python3 scripts/gpu_sync_bench.py -o "$out/sync_model.json" --rows model --dtypes fp16 --windows 2 \
    --variants default,cuda_graphs,deepcache,deepcache_cuda_graphs,batch_windows2,batch_windows2_cuda_graphs > "$out/sync_model.log" 2>&1 || echo "sync model rows: exit $?" >> "$out/machine.txt"
  timeout 120 python3 scripts/gpu_sync_bench.py -o "$out/sync_e2e.json" --rows e2e --faces .gpu/faces.npz \
    --clip "$fx/demo1_video.mp4" --audio "$fx/demo1_audio.wav" --seconds 4 \
    > "$out/sync_e2e.log" 2>&1 || echo "sync e2e rows: exit $?" >> "$out/machine.txt"
  # the project's graph wrapper against the eager UNet (difference and time)
  timeout 60 python3 scripts/gpu_unet_profile.py -o "$out/unet_profile.json" --variants eager,graphed \
    > "$out/unet_profile.log" 2>&1 || echo "unet profile: exit $?" >> "$out/machine.txt"
  # issue 9: the precision check (its 30 s limit was too short on the first run)
  timeout 100 python3 scripts/gpu_precision_check.py -o "$out/precision.json" \
    >> "$out/machine.txt" 2>&1 || echo "precision check: exit $?" >> "$out/machine.txt"
}

# issue 11's training check (measured once on an H200: tests/bench/gpu_results/; about 2.5 minutes)
run_train() {
  local out=${OUT:-out/gpu}
  mkdir -p "$out"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
  export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
  timeout 170 python3 scripts/gpu_train_check.py -o "$out/train_check.json" > "$out/train_check.log" 2>&1
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  run-train) run_train ;;
  *) echo "usage: $0 prepare|run|run-train" >&2; exit 2 ;;
esac
