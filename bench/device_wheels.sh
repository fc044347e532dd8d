#!/usr/bin/env bash
# Wheels the device machine lacks, for bench/device_check.sh there (it has no package index).
#
#   [FAISS=cpu|gpu] bench/device_wheels.sh [DEST]   # default: .whl (add /.whl/ to .git/info/exclude)
#
# The lent machines' image has Python 3.12 with CUDA 13 torch, numpy, scipy, scikit-learn,
# numba, h5py, httpx, pytest and tqdm, but not the audio, FAISS and web stack this project needs,
# nor the default model's speaker weights (written here as speaker-weights.pt, 5.7 MB; the
# resemblyzer wheel that holds them is 16 MB): device_check.sh points SINGER_SPEAKER_WEIGHTS
# at them.
# FAISS=cpu (default): faiss-cpu. About 30 MB in all. The faiss-gpu comparison and its GPU test
#   then report faiss-gpu missing (its PyPI wheels have no kernels for the H100/H200 anyway:
#   README, GPU figures).
# FAISS=gpu: faiss-gpu-cu12 (its CPU indexes serve as the faiss-cpu side of the comparison) with
#   the CUDA 12 runtime wheel; cuBLAS 12 (about 600 MB) is replaced by bench/cublas12_shim.c,
#   which forwards the eight entry points FAISS uses to the image's cuBLAS 13 (built into
#   DEST/lib). About 58 MB without the speaker weights, which are then left out: with them the
#   carry passes the 64 MiB the device tool takes with the checkout, and the default (fused)
#   model cannot load there.
set -euo pipefail
dest="${1:-.whl}"
faiss="${FAISS:-cpu}"
mkdir -p "$dest"
here="$(cd "$(dirname "$0")" && pwd)"
case "$faiss" in
  cpu) faiss_wheels="faiss-cpu==1.15.1" ;;
  gpu) faiss_wheels="faiss-gpu-cu12==1.14.1.post1 nvidia-cuda-runtime-cu12==12.9.79" ;;
  *) echo "FAISS must be cpu or gpu, not $faiss" >&2; exit 2 ;;
esac
# Pinned to the versions the project is developed and tested with (the shared venv).
for name in $faiss_wheels librosa==0.11.0 soundfile==0.14.0 soxr==1.1.0 audioread==3.1.0 \
  pooch==1.9.0 decorator==5.3.1 platformdirs==4.14.8 fastapi==0.165.0 starlette==1.10.0 \
  fastapi-offline==1.7.7 opentelemetry-api==1.45.2 annotated-doc==0.0.7 uvicorn==0.54.0 pydantic==2.14.4 pydantic-core==2.50.5 \
  pydantic-settings==2.16.3 python-dotenv==1.2.4 python-multipart==0.0.34 \
  annotated-types==0.8.0 typing-inspection==0.4.5 cffi==2.1.1 pycparser==3.12 sniffio==1.3.1; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$dest" "$name"
done
if [ "$faiss" = gpu ]; then
  rm -f "$dest/speaker-weights.pt"
  mkdir -p "$dest/lib"
  gcc -O2 -shared -fPIC -o "$dest/lib/libcublas.so.12" -Wl,-soname,libcublas.so.12 \
    -Wl,--version-script="$here/cublas12_shim.map" "$here/cublas12_shim.c" -ldl
  # FAISS names libcublasLt.so.12 as needed but uses none of its symbols.
  echo 'int cublaslt12_shim;' | gcc -shared -fPIC -x c - -o "$dest/lib/libcublasLt.so.12" \
    -Wl,-soname,libcublasLt.so.12
else
  rm -rf "$dest/lib" "$dest"/faiss_gpu_cu12-*.whl "$dest"/nvidia_cuda_runtime_cu12-*.whl
  (cd "$here/.." && "${PYTHON:-.venv/bin/python}" -c \
    "import sys; from model.speaker import export_weights; export_weights(sys.argv[1])" \
    "$(cd "$dest" && pwd)/speaker-weights.pt")
fi
du -sh "$dest"
