#!/usr/bin/env bash
# Wheels the device machine lacks, for bench/device_check.sh there (it has no package index).
#
#   bench/device_wheels.sh [DEST]      # default: .whl (add /.whl/ to .git/info/exclude)
#
# The lent machines' image has Python 3.12 with CUDA torch, numpy, scipy, scikit-learn, numba,
# h5py, httpx, pytest and tqdm, but not the audio, FAISS and web stack this project needs.
# faiss-gpu is not among them: its wheel is larger than the 64 MiB the device tool carries.
set -euo pipefail
dest="${1:-.whl}"
mkdir -p "$dest"
# Pinned to the versions the project is developed and tested with (the shared venv).
for name in faiss-cpu==1.15.1 librosa==0.11.0 soundfile==0.14.0 soxr==1.1.0 audioread==3.1.0 \
  pooch==1.9.0 decorator==5.3.1 platformdirs==4.14.8 fastapi==0.165.0 starlette==1.10.0 \
  annotated-doc==0.0.7 uvicorn==0.54.0 pydantic==2.14.4 pydantic-core==2.50.5 \
  pydantic-settings==2.16.3 python-dotenv==1.2.4 python-multipart==0.0.34 \
  annotated-types==0.8.0 typing-inspection==0.4.5 cffi==2.1.1 pycparser==3.12 sniffio==1.3.1; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d "$dest" "$name"
done
du -sh "$dest"
