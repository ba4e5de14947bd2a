#!/usr/bin/env bash
# The GPU checks in one call: `pytest -m gpu`, then ours beside ultralytics on coco128 (benchmarks/gpu_epoch.py).
#
#   bash benchmarks/gpu.sh [--dry-run] [DATA_YAML]
#
# Made for a bare GPU machine that has Python with torch, torchvision, accelerate, opencv and onnx but not
# albumentations (and its needs) nor ultralytics: wheels of those in .whl/ are installed first, ours into
# .gpu-site/ours (on PYTHONPATH) and ultralytics' into .gpu-site/peer (only on the peer run's path), both in
# the checkout and ignored by git. Without .whl/
# (or with --dry-run) the installed packages are used, and PEER_PATH names ultralytics' packages.
# DATA_YAML defaults to .gpudata/coco128/data.yaml (a copy carried along), else ../shared/datasets/coco128.
# GPU_TESTS (a pytest -k expression) picks gpu tests; GPU_MODELS, GPU_WORKERS, GPU_PROFILE, GPU_COMPILE, GPU_BENCH_BUDGET
# and GPU_REPEAT_TRAIN shape the throughput part (see benchmarks/gpu_epoch.py).
# Everything is logged to $OUT (default: a new temporary folder): gpu.log, pytest_gpu.log, gpu_epoch.json.
# `--dry-run` checks the script on a machine without a GPU: the gpu tests are collected (and skip), and the
# benchmark runs at toy size. Preparing the carried folders (both ignored through .git/info/exclude; ~53 MB):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     albumentations==2.0.8 albucore==0.0.24 simsimd stringzilla pydantic pydantic_core annotated-types \
#     typing-inspection ultralytics==8.4.190 ultralytics-thop
#   mkdir -p .gpudata/coco128/labels && cp -r ../shared/datasets/coco128/{images,data.yaml} .gpudata/coco128/ \
#     && cp -r ../shared/datasets/coco128/labels/{train,val} .gpudata/coco128/labels/
# (polars, which ultralytics wants for one results table, is 54 MB: benchmarks/peer_gpu_train.py does without.)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DRY=0
if [ "${1:-}" = "--dry-run" ]; then DRY=1; shift; fi
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu.log") 2>&1
PY="${PYTHON:-python3}"
START=$(date +%s)
stamp() { echo "== $(( $(date +%s) - START )) s: $*"; }

PEER_SITE=""
SITE="$PWD/.gpu-site"  # installed wheels, inside the checkout (ignored by git)
if [ "$DRY" = 0 ] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  stamp "installing wheels"
  ours=() peer=()
  for w in .whl/*.whl; do
    case "$(basename "$w")" in
      ultralytics*) peer+=("$w") ;;
      *) ours+=("$w") ;;
    esac
  done
  [ ${#ours[@]} -gt 0 ] && "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE/ours" "${ours[@]}"
  if [ ${#peer[@]} -gt 0 ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE/peer" "${peer[@]}" && PEER_SITE="$SITE/peer"
  fi
  export PYTHONPATH="$SITE/ours${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -z "$PEER_SITE" ] && [ -n "${PEER_PATH:-}" ] && PEER_SITE="$PEER_PATH"

DATA="${1:-}"
if [ -z "$DATA" ]; then
  for candidate in .gpudata/coco128/data.yaml ../shared/datasets/coco128/data.yaml; do
    if [ -f "$candidate" ]; then DATA="$candidate"; break; fi
  done
fi

stamp "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
nproc
"$PY" -c "import torch, accelerate, albumentations, cv2; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'accelerate', accelerate.__version__, 'albumentations', albumentations.__version__, 'cv2', cv2.__version__)"

stamp "pytest -m gpu"
# deterministic cuBLAS (the exact-resume test) needs this before the first CUDA call of the process
export CUBLAS_WORKSPACE_CONFIG=:4096:8
timeout "${GPU_TEST_TIMEOUT:-240}" "$PY" -m pytest -m gpu -v -p no:cacheprovider -rA ${GPU_TESTS:+-k "$GPU_TESTS"} tests/test_gpu.py 2>&1 | tee "$OUT/pytest_gpu.log" | grep -E "PASSED|FAILED|SKIPPED|ERROR|passed|failed|skipped|Error"
unset CUBLAS_WORKSPACE_CONFIG

stamp "throughput"
bench=(benchmarks/gpu_epoch.py --json "$OUT/gpu_epoch.json" --budget "${GPU_BENCH_BUDGET:-330}")
[ -n "$DATA" ] && bench=(benchmarks/gpu_epoch.py "$DATA" --json "$OUT/gpu_epoch.json" --budget "${GPU_BENCH_BUDGET:-330}")
[ -n "$PEER_SITE" ] && bench+=(--peer-path "$PEER_SITE")
# GPU_MODELS / GPU_WORKERS (space-separated) narrow the runs; GPU_PROFILE=N adds a profiled run of ours
[ -n "${GPU_MODELS:-}" ] && bench+=(--models $GPU_MODELS)
[ -n "${GPU_WORKERS:-}" ] && bench+=(--workers $GPU_WORKERS)
[ -n "${GPU_PROFILE:-}" ] && bench+=(--profile "$GPU_PROFILE")
[ -n "${GPU_COMPILE:-}" ] && bench+=(--compile)
if [ "$DRY" = 1 ]; then bench+=(--dry-run); else bench+=(--repeat-train "${GPU_REPEAT_TRAIN:-12}"); fi
"$PY" "${bench[@]}"
stamp "done"
