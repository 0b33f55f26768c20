#!/usr/bin/env bash
# Tests the wheels of scripts/build_wheels.sh, each installed into a clean environment with no compiler
# on PATH (cc, gcc, g++, c++, clang, cmake, ninja shadowed by stubs that fail: nothing is built):
#   x86_64   a venv per wheel: the golden-vector tests and the tiny-model job; with one wheel (FULL_SUITE,
#            default the cp312-abi3 one, on 3.12) the whole test suite and runtime dispatch: the job's
#            bytes equal with PRISM_ISA=scalar/avx2/avx512 (those this CPU has) and under
#            qemu-x86_64 -cpu Nehalem (no AVX: dispatch must pick scalar);
#   aarch64  under qemu-aarch64 -L with Debian's arm64 CPython in a sysroot (scripts/arm64_sysroot.sh:
#            bookworm's 3.11, trixie's 3.13 for the cp312-abi3 wheel) and numpy/scipy's aarch64 wheels
#            from PyPI: the golden-vector tests on NEON and scalar, and the tiny-model job on each ISA,
#            whose output sha256 must equal the x86-64 one.
# The tiny-model job: a synthetic 2-layer model (tests/support/synth), `quantize --bpw 4.5` (the whole
# pipeline: measure, plan, write) and `quantize -- Q4_K_M` (llama-quantize's recipe; its bytes also
# equal llama-quantize's when scripts/build_llama_cpp.sh has built it).
#   scripts/test_wheels.sh [--smoke] [WHEEL...]   (default dist/*.whl; --smoke: the x86-64 job only)
#   TINY_MODEL, EXPECT   see below; FULL_SUITE   see above
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
die() { echo "test_wheels: $*" >&2; exit 2; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found (apt-get install $2)"; }
SMOKE=0
[ "${1:-}" = --smoke ] && { SMOKE=1; shift; }
WHEELS=()
for w in "$@"; do [ -f "$w" ] || die "$w: no such wheel"; WHEELS+=("$(realpath "$w")"); done
cd "$(dirname "$0")/.."
[ ${#WHEELS[@]} -gt 0 ] || mapfile -t WHEELS < <(ls "$PWD"/dist/*.whl 2>/dev/null)
[ ${#WHEELS[@]} -gt 0 ] || die "no wheels given and none in dist/ (bash scripts/build_wheels.sh)"
CACHE=${PRISM_CACHE:-$HOME/.cache/prism-native}
FULL_SUITE=${FULL_SUITE:-cp312-abi3}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
FAIL=0
fail() { echo "FAIL: $*"; FAIL=1; }

# no compiler: stubs first on PATH
mkdir -p "$W/nocc"
for c in cc gcc g++ c++ clang clang++ x86_64-linux-gnu-gcc x86_64-linux-gnu-g++ cmake ninja make; do
  printf '#!/bin/sh\necho "test_wheels: no compiler here ($0)" >&2; exit 127\n' > "$W/nocc/$c"; chmod +x "$W/nocc/$c"
done
NOCC=$W/nocc:$PATH

python_for() {   # as scripts/build_wheels.sh
  local p
  for p in "$(command -v "python$1" 2>/dev/null || true)" "$HOME"/.pyenv/versions/"$1".*/bin/python"$1" "/usr/bin/python$1"; do
    if [ -n "$p" ] && [ -x "$p" ] && "$p" -c "import venv" 2>/dev/null; then echo "$p"; return; fi
  done
  return 1
}
pyver() {   # pyver WHEEL -> 3.X of its tag (cp312-abi3 -> 3.12)
  local t; t=$(basename "$1" | cut -d- -f3); echo "3.${t#cp3}"
}

# the tiny model, written once by the first x86-64 venv (or given: TINY_MODEL, with the shas the jobs
# must print, EXPECT="BPW-SHA RECIPE-SHA", as the first 16 hex digits; to test wheels in parallel runs)
MODEL=${TINY_MODEL:-$W/tiny.gguf}
job() {   # job LABEL RUNNER... : the two quantize runs; prints "LABEL bpw-sha recipe-sha"
  local label=$1 d; shift
  d=$W/job-$label; mkdir -p "$d"
  cp "$MODEL" "$d/tiny.gguf"      # a fresh copy: the analysis saved beside it must not be reused
  (cd "$d" && env PATH="$NOCC" "$@" -m prism_native quantize tiny.gguf -o bpw.gguf --bpw 4.5 --quiet >"$d/log" 2>&1 \
     && env PATH="$NOCC" "$@" -m prism_native quantize tiny.gguf -o recipe.gguf --quiet -- Q4_K_M >>"$d/log" 2>&1) \
    || { tail -3 "$d/log"; fail "$label: quantize failed"; return; }
  echo "$label $(sha256sum "$d/bpw.gguf" | cut -c1-16) $(sha256sum "$d/recipe.gguf" | cut -c1-16)"
}
REF=${EXPECT:-}
check() {   # check LINE: its two shas equal the first x86-64 job's
  echo "  $1"
  local shas=${1#* }
  if [ -z "$REF" ]; then REF=$shas; elif [ "$shas" != "$REF" ]; then fail "${1%% *}: bytes differ from the x86-64 job ($REF)"; fi
}

x86() {   # x86 WHEEL
  local whl=$1 v py venv; v=$(pyver "$whl")
  [ "$v" = 3.12 ] && python_for 3.13 >/dev/null && x86_on "$whl" 3.13
  x86_on "$whl" "$v"
}
x86_on() {   # x86_on WHEEL 3.X
  local whl=$1 v=$2 py venv; py=$(python_for "$v") || { echo "SKIP $(basename "$whl") on $v: no CPython $v"; return; }
  venv=$W/venv-$v-$(basename "$whl" .whl); echo "== $(basename "$whl") on CPython $v (x86-64)"
  "$py" -m venv "$venv"
  PATH=$NOCC "$venv/bin/python" -m pip install -q --only-binary=prism-native "$whl[test]" >"$venv.log" 2>&1 \
    || { tail -3 "$venv.log"; fail "$whl: install failed"; return; }
  local vpy=$venv/bin/python
  [ -e "$MODEL" ] || (cd "$ROOT/tests" && "$vpy" -c "from support import synth; synth.write('$MODEL', synth.Spec(n_embd=256, n_ff=512, n_layer=2, n_vocab=512, seed=7))")
  "$vpy" -c "import prism_native, sys; f = prism_native.cpu_features(); print('  cpu_features:', f); sys.exit(prism_native.__file__.startswith('$ROOT'))" \
    || fail "the venv imports prism_native from the source tree"
  check "$(job "x86-$v" "$vpy")"
  [ $SMOKE = 1 ] && { smoke_llama; return; }
  local tests=(tests/quant/test_golden.py tests/quant/test_golden_low_bit.py)
  if [[ $(basename "$whl") == *"$FULL_SUITE"* ]] && [ "$v" = "$(pyver "$whl")" ]; then
    tests=(tests); dispatch "$vpy" "$v"
  fi
  echo "  pytest ${tests[*]}"
  (cd "$ROOT" && PATH=$NOCC "$vpy" -m pytest "${tests[@]}" -q -p no:cacheprovider -rs >"$venv.pytest" 2>&1) \
    || fail "$(basename "$whl") on $v: pytest failed (tail: $(tail -1 "$venv.pytest"))"
  echo "  $(tail -1 "$venv.pytest")"; grep "^SKIPPED" "$venv.pytest" | grep -v "not implemented" | head -5 || true
}
dispatch() {   # dispatch PYTHON 3.X: the job's bytes on every ISA this CPU has, and on one without AVX
  local vpy=$1 v=$2 isa; for isa in $("$vpy" -c "import prism_native; print(*prism_native.cpu_features()['usable'])"); do
    check "$(job "x86-$v-$isa" env PRISM_ISA="$isa" "$vpy")"
  done
  if command -v qemu-x86_64-static >/dev/null; then   # a CPU without AVX2 and AVX-512: dispatch must pick scalar
    local active; active=$(qemu-x86_64-static -cpu Nehalem "$vpy" -c "import prism_native; print(prism_native.cpu_features()['active'])")
    [ "$active" = scalar ] || fail "qemu -cpu Nehalem: dispatch chose '$active', not scalar"
    check "$(job "x86-$v-qemu-Nehalem-$active" qemu-x86_64-static -cpu Nehalem "$vpy")"
  fi
}
smoke_llama() {   # the recipe's bytes equal llama-quantize's, when the cache has it
  local bin; bin=$(bash scripts/build_llama_cpp.sh --where)
  [ -x "$bin/llama-quantize" ] || return 0
  "$bin/llama-quantize" "$MODEL" "$W/llama.gguf" Q4_K_M >"$W/llama.log" 2>&1 || { fail "llama-quantize failed"; return; }
  cmp -s "$W/llama.gguf" "$W"/job-x86-*/recipe.gguf && echo "  Q4_K_M bytes equal llama-quantize's" \
    || fail "Q4_K_M differs from llama-quantize's"
}

aarch64() {   # aarch64 WHEEL
  local whl=$1 v suite pkgs; v=$(pyver "$whl")
  need qemu-aarch64-static qemu-user-static
  [ -e "$MODEL" ] || die "no tiny model yet: test an x86-64 wheel in the same run, or set TINY_MODEL and EXPECT"
  case $v in
    3.11) suite=bookworm; v=3.11 ;;
    3.12) suite=trixie; v=3.13 ;;          # the abi3 wheel on trixie's CPython 3.13
    *) echo "SKIP $(basename "$whl"): Debian's packages hold no aarch64 CPython $v"; return ;;
  esac
  echo "== $(basename "$whl") on CPython $v (aarch64, qemu, Debian $suite)"
  local root; root=$(bash scripts/arm64_sysroot.sh "$suite" "$CACHE/sysroot-$suite-arm64" "python$v-minimal" \
    "libpython$v-stdlib" "libpython$v-dev" libstdc++6)
  local site=$W/site-$v; local tag=cp${v/./}
  PATH=$NOCC python3 -m pip install -q --target "$site" --only-binary=:all: --implementation cp --python-version "$v" \
    --abi "$tag" --abi abi3 --abi none --platform manylinux_2_34_aarch64 --platform manylinux2014_aarch64 \
    --platform manylinux_2_28_aarch64 --platform linux_aarch64 "$whl[test]" >"$site.log" 2>&1 \
    || { tail -3 "$site.log"; fail "$whl: install into the aarch64 site failed"; return; }
  local run=(env PYTHONPATH="$site" PYTHONDONTWRITEBYTECODE=1 qemu-aarch64-static -L "$root" "$root/usr/bin/python$v")
  "${run[@]}" -c "import platform, prism_native; print('  ', platform.machine(), prism_native.cpu_features())"
  local isa; for isa in scalar neon; do check "$(job "aarch64-$v-$isa" env PRISM_ISA=$isa "${run[@]}")"; done
  echo "  pytest golden-vector tests (scalar, neon)"
  (cd "$ROOT" && PATH=$NOCC "${run[@]}" -m pytest tests/quant/test_golden.py tests/quant/test_golden_low_bit.py -q \
     -p no:cacheprovider >"$site.pytest" 2>&1) || fail "$(basename "$whl") aarch64: pytest failed ($(tail -1 "$site.pytest"))"
  echo "  $(tail -1 "$site.pytest")"
}

# x86-64 first (the reference bytes), then aarch64
for whl in "${WHEELS[@]}"; do [[ $whl == *x86_64.whl ]] && x86 "$whl"; done
if [ $SMOKE = 0 ]; then for whl in "${WHEELS[@]}"; do [[ $whl == *aarch64.whl ]] && aarch64 "$whl"; done; fi
[ $FAIL = 0 ] || die "some wheel checks failed (FAIL lines above)"
echo "test_wheels: all passed"
