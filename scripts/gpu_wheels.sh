#!/usr/bin/env bash
# Wheels of yoloq's dependencies that a bare CUDA image (PyTorch, torchvision, OpenCV, pandas, matplotlib already
# there) lacks, for Python 3.12 on x86-64 Linux, into .whl/ for scripts/gpu_check.sh on a machine without
# network. Run where pip reaches PyPI, in yoloq's environment (each package at the version installed here):
#   bash scripts/gpu_wheels.sh [PYTHON_VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
pyver=${1:-3.12}
rm -rf .whl && mkdir -p .whl
pinned() {  # NAME==VERSION as installed here, else NAME
  for name in "$@"; do
    python -c "import importlib.metadata as m, sys; print(f'{sys.argv[1]}=={m.version(sys.argv[1])}')" "$name" \
      2>/dev/null || echo "$name"
  done
}
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
# What yoloq's code paths import, named one by one: --no-deps keeps torch and the image's other packages out.
# Left out: polars (50 MB; ultralytics' CSV and plots, which yoloq does not use) and wandb (logger=wandb only).
python -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation cp \
  "${platforms[@]}" -d .whl $(pinned ultralytics ultralytics-thop hydra-core omegaconf pycocotools albumentations \
  albucore simsimd stringzilla pydantic pydantic-core annotated-types typing-inspection \
  onnx onnxruntime protobuf flatbuffers coloredlogs humanfriendly ml_dtypes)  # the export stage (CPU onnxruntime)
# omegaconf's parser runtime is published as source only: build its (pure-Python) wheel here.
python -m pip wheel -q --no-deps -w .whl "$(pinned antlr4-python3-runtime)"
du -sh .whl
