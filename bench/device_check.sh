#!/usr/bin/env bash
# One command for a lent GPU machine: GPU tests, encoder / indexing / service / FAISS / memory
# figures, written as summary.json and summary.md.
#
#   bench/device_check.sh [--dry-run] [OUT_DIR]
#
# OUT_DIR: the folder given, else $OUT (the device tool's result folder), else
# ./device-check. Python: $PYTHON, else .venv/bin/python, else python3. The checkout's
# research data is found as usual (SINGER_SHARED_DIR or ../shared); without MIR-1K the
# indexing section is reported as skipped. --dry-run: CPU only, tiny sizes, GPU tests and
# CUDA-only measurements skipped (the test suite runs it). See bench/README.md.
set -uo pipefail

dry=0
dest=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry=1 ;;
    -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option: $arg" >&2; exit 2 ;;
    *) dest="$arg" ;;
  esac
done
cd "$(dirname "$0")/.." || exit 2
dest="${dest:-${OUT:-device-check}}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  # Wheels carried to a machine with no package index (bench/device_wheels.sh made them).
  "${PYTHON:-python3}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/device-check-site .whl/*.whl || exit 2
  export PYTHONPATH="/tmp/device-check-site${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -n "${PYTHON:-}" ]; then py="$PYTHON"
elif [ -x .venv/bin/python ]; then py=.venv/bin/python
else py=python3; fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)

if command -v nvidia-smi >/dev/null; then nvidia-smi 2>&1; else echo "nvidia-smi: not on PATH"; fi |
  tee "$dest/nvidia-smi.txt"
"$py" -c 'import torch, faiss; print("torch", torch.__version__, "cuda", torch.version.cuda,
"available", torch.cuda.is_available(), "| faiss", faiss.__version__)' | tee "$dest/versions.txt"

gpu_tests="skipped (dry run)"
if [ "$dry" = 0 ]; then
  # Every test marked `gpu` must run: a skip (no CUDA, no faiss-gpu) fails the check.
  timeout 240 "$py" -m pytest -q -m gpu -rs -p no:cacheprovider tests \
    --junitxml="$dest/gpu-tests.xml" >"$dest/gpu-tests.log" 2>&1
  rc=$?
  tail -n 15 "$dest/gpu-tests.log"
  skipped=$(grep -o 'skipped="[0-9]*"' "$dest/gpu-tests.xml" 2>/dev/null | head -1 | tr -dc 0-9)
  gpu_tests="pytest -m gpu exit $rc, ${skipped:-?} skipped ($(tail -n 1 "$dest/gpu-tests.log"))"
  if [ "$rc" != 0 ] || [ "${skipped:-1}" != 0 ]; then gpu_tests="FAILED: $gpu_tests"; fi
fi

args=(--out "$dest" --gpu-tests "$gpu_tests")
[ "$dry" = 1 ] && args+=(--dry-run)
timeout $((470 - $(date +%s) + start)) "$py" bench/device_check.py "${args[@]}"
rc=$?
echo "device check: exit $rc after $(($(date +%s) - start)) s; summary in $dest/summary.md"
case "$gpu_tests" in FAILED*) exit 1 ;; esac
exit "$rc"
