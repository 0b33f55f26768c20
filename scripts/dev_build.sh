#!/usr/bin/env bash
# Developer build: compile the extension in build/dev and link it into src/prism_native, so that
# `PYTHONPATH=src python -m pytest` runs against the working tree. Extra args go to cmake (e.g.
# -DPRISM_SANITIZE=ON with a separate BUILD_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build/dev}
PY=${PYTHON:-python3}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPython_EXECUTABLE="$(command -v "$PY")" "$@" >/dev/null
cmake --build "$BUILD_DIR" -j"${JOBS:-2}"
so=$(ls "$BUILD_DIR"/_native*.so | head -1)
ln -sf "$(realpath "$so")" "src/prism_native/$(basename "$so")"
echo "built $so"
