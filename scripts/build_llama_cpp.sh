#!/usr/bin/env bash
# Build the reference llama.cpp (llama-cpp-python 0.3.36's vendored copy) into a cache folder outside
# the clone: llama-quantize, llama-perplexity, llama-imatrix, llama-gguf-split, ggml-rpc-server and
# libggml-base.so, the way the golden vectors were made (baseline x86-64, GGML_NATIVE=OFF, no FMA
# contraction). Reused when present; prints the bin folder on its last line.
#   --where             print the bin folder and exit (build nothing): tests/conftest.py asks this,
#                       so this script is the one place that knows where the tools are
#   PRISM_LLAMA_CACHE   cache folder (default ~/.cache/prism-native/llama.cpp-0.3.36)
set -euo pipefail
VERSION=0.3.36
CACHE=${PRISM_LLAMA_CACHE:-$HOME/.cache/prism-native/llama.cpp-$VERSION}
BIN=$CACHE/build/bin
TOOLS=(llama-quantize llama-perplexity llama-imatrix llama-gguf-split ggml-rpc-server)

if [ "${1:-}" = --where ]; then echo "$BIN"; exit 0; fi
have_all() {
  for t in "${TOOLS[@]}"; do [ -x "$BIN/$t" ] || return 1; done
  [ -e "$BIN/libggml-base.so" ]
}
if have_all; then echo "$BIN"; exit 0; fi

die() { echo "build_llama_cpp: $*" >&2; exit 2; }
need() {   # need COMMAND DEBIAN-PACKAGE
  command -v "$1" >/dev/null 2>&1 || die "'$1' not found (apt-get install $2)"
}
need cmake cmake
need cc gcc
need c++ g++
need make make
need tar tar
need python3 python3
python3 -m pip --version >/dev/null 2>&1 || die "python3 has no pip (apt-get install python3-pip)"

mkdir -p "$CACHE"
cd "$CACHE"
LOG=$CACHE/build.log
if [ ! -d src ]; then
  tmp=$(mktemp -d "$CACHE/dl.XXXXXX")
  python3 -m pip download --quiet --no-deps --no-binary=llama-cpp-python "llama-cpp-python==$VERSION" -d "$tmp" \
    || die "cannot download the llama-cpp-python==$VERSION sdist from PyPI"
  tar xzf "$tmp"/llama_cpp_python-$VERSION.tar.gz -C "$tmp"
  mv "$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp" src.new && mv src.new src
  rm -rf "$tmp"
fi
gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
cmake -S src -B build "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DGGML_NATIVE=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_AVX512=OFF \
  -DGGML_OPENMP=OFF -DGGML_RPC=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DCMAKE_C_FLAGS=-ffp-contract=off -DCMAKE_CXX_FLAGS=-ffp-contract=off >"$LOG" 2>&1 \
  || die "cmake configure failed (see $LOG)"
cmake --build build -j"${JOBS:-$(nproc)}" --target "${TOOLS[@]}" ggml-base >>"$LOG" 2>&1 \
  || die "build failed (see $LOG)"
have_all || die "build finished without ${TOOLS[*]} in $BIN"
echo "$BIN"
