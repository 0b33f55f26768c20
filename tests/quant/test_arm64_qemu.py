"""ARM64 (NEON, 4 lanes) bit-exactness under qemu user emulation.

Cross-compiles the kernel translation units as the NEON build does (PRISM_W=4, -ffp-contract=off)
together with tests/quant/golden_driver.cpp into a static aarch64 binary, runs it with
qemu-aarch64-static on every golden input and compares its bytes with ggml's (x86-64, no FMA).
Needs Debian's g++-aarch64-linux-gnu and qemu-user-static; skipped without them.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from support.golden import (BYTES_PER_BLOCK, DATASETS, LOW_BIT_DATASETS, LOW_BIT_TYPES, TYPES, block_mismatches, load,
                            not_produced)

ROOT = Path(__file__).resolve().parents[2]
from conftest import AARCH64_CXX as CXX  # noqa: E402
from conftest import QEMU_AARCH64 as QEMU  # noqa: E402

OBJDUMP = re.sub(r"g\+\+$", "objdump", CXX)
# the kernel translation units of CMakeLists.txt's PRISM_KERNEL_SRCS and the lattice units they use
_CMAKE = (ROOT / "CMakeLists.txt").read_text()
KERNEL_SRCS = [s for var in ("PRISM_KERNEL_SRCS", "PRISM_LATTICE_SRCS")
               for s in re.search(rf"set\({var}\s+([^)]*)\)", _CMAKE).group(1).split()]
# the flags of the NEON build in CMakeLists.txt (-O2 here to keep the cross build short); never fuse
FLAGS = ["-std=c++17", "-O2", "-ffp-contract=off", "-fno-math-errno", "-DPRISM_W=4", "-DPRISM_NS=neon",
         f"-I{ROOT / 'src/cpp'}"]
FMA_INSN = re.compile(r"\s(fmla|fmls|fmadd|fmsub|fnmadd|fnmsub)\s")

pytestmark = pytest.mark.needs_qemu


def _compile(src: Path, obj: Path) -> None:
    subprocess.run([CXX, *FLAGS, f"-I{obj.parent}", "-c", str(src), "-o", str(obj)], check=True,
                   capture_output=True, text=True)


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("arm64")
    # the generated format-data header, as the CMake build makes it
    subprocess.run([sys.executable, str(ROOT / "src/cpp/gen_tables.py"), str(ROOT / "src/cpp/data/quant_tables.txt"),
                    str(d / "quant_tables.h")], check=True)
    srcs = [ROOT / s for s in KERNEL_SRCS] + [ROOT / "tests/quant/golden_driver.cpp"]
    objs = [d / (s.stem + ".o") for s in srcs]
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(_compile, srcs, objs))
    exe = d / "golden_driver"
    subprocess.run([CXX, "-static", *map(str, objs), "-o", str(exe)], check=True, capture_output=True, text=True)
    return exe


def test_kernels_contain_no_fused_multiply_add(driver):
    """aarch64 has FMA in its baseline: only -ffp-contract=off keeps ggml's separately rounded a*b+c."""
    if shutil.which(OBJDUMP) is None:
        pytest.skip(f"{OBJDUMP} not installed")
    for obj in sorted(driver.parent.glob("*.o")):
        asm = subprocess.run([OBJDUMP, "-d", str(obj)], check=True, capture_output=True, text=True).stdout
        assert not FMA_INSN.search(asm), f"{obj.name} contains fused multiply-add instructions"


def _run_golden(driver: Path, tmp_path: Path, d: dict, types: list[str]) -> tuple[list[str], Path]:
    """Quantizes and dequantizes d's x with `types` (with and without its imatrix) under qemu; returns the
    types the NEON table implements and the folder of their q__/y__ files."""
    x = np.ascontiguousarray(d["x"], dtype=np.float32)
    x.tofile(tmp_path / "x.bin")
    np.ascontiguousarray(d["imatrix"], dtype=np.float32).tofile(tmp_path / "imatrix.bin")
    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run([QEMU, str(driver), str(x.shape[0]), str(x.shape[1]), str(tmp_path / "x.bin"),
                        str(tmp_path / "imatrix.bin"), str(out), *types],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return [line.split()[1] for line in r.stdout.splitlines() if line.startswith("ok ")], out


def _mismatches(d: dict, done: list[str], out: Path) -> list[str]:
    bad = []
    for t in done:
        for case in ("none", "imat"):
            if f"q__{t}__{case}" not in d:  # a case ggml does not make (not_produced)
                continue
            want = d[f"q__{t}__{case}"]
            got = np.fromfile(out / f"q__{t}__{case}.bin", dtype=np.uint8).reshape(want.shape)
            nb = block_mismatches(got, want, BYTES_PER_BLOCK[t])
            y = np.fromfile(out / f"y__{t}__{case}.bin", dtype=np.uint32)
            y_ok = np.array_equal(y, d[f"y__{t}__{case}"].view(np.uint32).reshape(-1))
            if nb or not y_ok:
                bad.append(f"{t} {case}: {nb} blocks differ, dequantized bits {'ok' if y_ok else 'differ'}")
    return bad


@pytest.mark.parametrize("name", DATASETS)
def test_neon_bytes_match_golden(driver, tmp_path, name):
    d = load(name)
    done, out = _run_golden(driver, tmp_path, d, TYPES)
    assert "Q8_0" in done and "IQ4_XS" in done, done
    bad = _mismatches(d, done, out)
    assert not bad, f"{name} [neon under qemu]: " + "; ".join(bad)


@pytest.mark.parametrize("name", LOW_BIT_DATASETS)
def test_neon_low_bit_bytes_match_golden(driver, tmp_path, name):
    d = load(name, "low-bit")
    assert set(not_produced(d)) <= {f"{t}__none" for t in LOW_BIT_TYPES}
    done, out = _run_golden(driver, tmp_path, d, LOW_BIT_TYPES)
    if not done:
        pytest.skip("no low-bit type implemented")
    bad = _mismatches(d, done, out)
    assert not bad, f"{name} [neon under qemu]: " + "; ".join(bad)
