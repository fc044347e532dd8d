#!/usr/bin/env bash
# One command for a lent GPU machine: GPU tests, encoder / indexing / service / FAISS / memory
# figures, written as summary.json and summary.md.
#
#   bench/device_check.sh [--dry-run] [--sections=a,b] [OUT_DIR]
#
# OUT_DIR: the folder given, else $OUT (the device tool's result folder), else
# ./device-check. Python: $PYTHON, else .venv/bin/python, else python3. The checkout's
# research data is found as usual (SINGER_SHARED_DIR or ../shared); without MIR-1K the
# indexing section indexes synthetic FLAC takes. --dry-run: CPU only, tiny sizes, GPU tests and
# CUDA-only measurements skipped (the test suite runs it). --sections=a,b: rerun only those
# measurements (encoder, indexing, decoding, identify, faiss, memory), and the GPU tests only when
# "tests" is one of them.
# See bench/README.md.
set -uo pipefail

dry=0
dest=""
sections=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry=1 ;;
    --sections=*) sections="${arg#--sections=}" ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option: $arg" >&2; exit 2 ;;
    *) dest="$arg" ;;
  esac
done
cd "$(dirname "$0")/.." || exit 2
dest="${dest:-${OUT:-device-check}}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
if [ -n "${PYTHON:-}" ]; then py="$PYTHON"
elif [ -x .venv/bin/python ]; then py=.venv/bin/python
else py=python3; fi
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1 && ! "$py" -c 'import faiss, librosa, fastapi' 2>/dev/null
then
  # Wheels carried to a machine with no package index (bench/device_wheels.sh made them).
  site=/tmp/device-check-site
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$site" .whl/*.whl || exit 2
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  # faiss-gpu-cu12 on a CUDA 13 image: the CUDA 12 runtime from its wheel, and cuBLAS 12's
  # entry points forwarded to the image's cuBLAS 13 by the shim in .whl/lib.
  cublas13=$(find $("$py" -c 'import site; print(*site.getsitepackages())') /usr/local/cuda*/ \
    -name 'libcublas.so.13*' 2>/dev/null | head -n 1)
  libs="$PWD/.whl/lib:$site/nvidia/cuda_runtime/lib${cublas13:+:$(dirname "$cublas13")}"
  export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export _FAISS_WHEEL_DISABLE_CUDA_PRELOAD=1  # its loader looks for the cu12 wheels by name
  echo "cuBLAS 13 for the shim: ${cublas13:-not found}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# The default (fused) model's speaker weights, carried without their 16-MB package.
if [ -z "${SINGER_SPEAKER_WEIGHTS:-}" ] && [ -f .whl/speaker-weights.pt ] &&
  ! "$py" -c 'import importlib.util as u; assert u.find_spec("resemblyzer")' 2>/dev/null; then
  export SINGER_SPEAKER_WEIGHTS="$PWD/.whl/speaker-weights.pt"
fi
start=$(date +%s)

if command -v nvidia-smi >/dev/null; then nvidia-smi 2>&1; else echo "nvidia-smi: not on PATH"; fi |
  tee "$dest/nvidia-smi.txt"
"$py" -c 'import torch, faiss; print("torch", torch.__version__, "cuda", torch.version.cuda,
"available", torch.cuda.is_available(), "| faiss", faiss.__version__)' | tee "$dest/versions.txt"

gpu_tests="skipped (dry run)"
# --sections: the GPU tests only when "tests" is one of them; the rest are measurements.
measure="${sections//tests/}"
measure=$(echo "$measure" | tr -s ',' | sed 's/^,//; s/,$//')
run_tests=0
if [ -z "$sections" ] || [[ ",$sections," == *",tests,"* ]]; then run_tests=1; fi
[ "$run_tests" = 0 ] && gpu_tests="not run (--sections)"
if [ "$dry" = 0 ] && [ "$run_tests" = 1 ]; then
  # Every test marked `gpu` must run: a skip (no CUDA, no faiss-gpu) fails the check. Only
  # the modules that hold such tests are collected: the others import browser and fuzzing
  # tools a GPU machine need not have.
  mapfile -t gpu_modules < <(grep -l "pytest.mark.gpu" tests/test_*.py)
  timeout 240 "$py" -m pytest -q -m gpu -rs -p no:cacheprovider "${gpu_modules[@]}" \
    --junitxml="$dest/gpu-tests.xml" >"$dest/gpu-tests.log" 2>&1
  rc=$?
  tail -n 15 "$dest/gpu-tests.log"
  skipped=$(grep -o 'skipped="[0-9]*"' "$dest/gpu-tests.xml" 2>/dev/null | head -1 | tr -dc 0-9)
  gpu_tests="pytest -m gpu exit $rc, ${skipped:-?} skipped ($(tail -n 1 "$dest/gpu-tests.log"))"
  if [ "$rc" != 0 ] || [ "${skipped:-1}" != 0 ]; then gpu_tests="FAILED: $gpu_tests"; fi
fi

args=(--out "$dest" --gpu-tests "$gpu_tests")
[ "$dry" = 1 ] && args+=(--dry-run)
[ -n "$measure" ] && args+=(--sections "$measure")
rc=0
if [ -z "$sections" ] || [ -n "$measure" ]; then
  timeout $((470 - $(date +%s) + start)) "$py" bench/device_check.py "${args[@]}"
  rc=$?
fi
echo "device check: exit $rc after $(($(date +%s) - start)) s; summary in $dest/summary.md"
case "$gpu_tests" in FAILED*) exit 1 ;; esac
exit "$rc"
