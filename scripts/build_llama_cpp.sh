#!/usr/bin/env bash
# Build the reference llama.cpp (llama-cpp-python 0.3.36's vendored copy) into a cache folder outside
# the clone: llama-quantize, llama-perplexity, llama-imatrix, llama-gguf-split, ggml-rpc-server and
# libggml-base.so, the way
# the golden vectors were made (baseline x86-64, GGML_NATIVE=OFF, no FMA contraction).
# Reused when present; prints the bin folder on its last line.
#   PRISM_LLAMA_CACHE   cache folder (default ~/.cache/prism-native/llama.cpp-0.3.36)
set -euo pipefail
VERSION=0.3.36
CACHE=${PRISM_LLAMA_CACHE:-$HOME/.cache/prism-native/llama.cpp-$VERSION}
BIN=$CACHE/build/bin
TOOLS=(llama-quantize llama-perplexity llama-imatrix llama-gguf-split ggml-rpc-server)

have_all() {
  for t in "${TOOLS[@]}"; do [ -x "$BIN/$t" ] || return 1; done
  [ -e "$BIN/libggml-base.so" ]
}
if have_all; then echo "$BIN"; exit 0; fi

need() {   # need TOOL DEBIAN-PACKAGE
  command -v "$1" >/dev/null 2>&1 || { echo "build_llama_cpp: '$1' not found (apt-get install $2)" >&2; exit 2; }
}
need cmake cmake
need cc gcc
need c++ g++
need make make

mkdir -p "$CACHE"
cd "$CACHE"
if [ ! -d src ]; then
  tmp=$(mktemp -d "$CACHE/dl.XXXXXX")
  python3 -m pip download --quiet --no-deps --no-binary=llama-cpp-python "llama-cpp-python==$VERSION" -d "$tmp"
  tar xzf "$tmp"/llama_cpp_python-$VERSION.tar.gz -C "$tmp"
  mv "$tmp/llama_cpp_python-$VERSION/vendor/llama.cpp" src.new && mv src.new src
  rm -rf "$tmp"
fi
gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
cmake -S src -B build "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DGGML_NATIVE=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF -DGGML_AVX512=OFF \
  -DGGML_OPENMP=OFF -DGGML_RPC=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_SERVER=OFF -DCMAKE_C_FLAGS=-ffp-contract=off -DCMAKE_CXX_FLAGS=-ffp-contract=off >/dev/null
cmake --build build -j"${JOBS:-$(nproc)}" --target "${TOOLS[@]}" ggml-base >/dev/null
have_all || { echo "build_llama_cpp: build finished without ${TOOLS[*]} in $BIN" >&2; exit 1; }
echo "$BIN"
