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

from support.golden import DATASETS, MANIFEST, TYPES, block_mismatches, load

ROOT = Path(__file__).resolve().parents[2]
from conftest import AARCH64_CXX as CXX  # noqa: E402
from conftest import QEMU_AARCH64 as QEMU

OBJDUMP = re.sub(r"g\+\+$", "objdump", CXX)
KERNEL_SRCS = ["src/cpp/q_k.cpp", "src/cpp/iq4.cpp", "src/cpp/q_legacy.cpp", "src/cpp/isa_table.cpp",
               "src/cpp/iq2.cpp", "src/cpp/iq1.cpp", "src/cpp/iq_grid.cpp"]
# the flags of the NEON build in CMakeLists.txt (-O2 here to keep the cross build short); never fuse
FLAGS = ["-std=c++17", "-O2", "-ffp-contract=off", "-fno-math-errno", "-DPRISM_W=4", "-DPRISM_NS=neon",
         f"-I{ROOT / 'src/cpp'}"]
FMA_INSN = re.compile(r"\s(fmla|fmls|fmadd|fmsub|fnmadd|fnmsub)\s")

pytestmark = pytest.mark.needs_qemu


def _compile(src: Path, obj: Path) -> None:
    # quant_tables.h is generated next to the objects (the build's step, gen_tables.py)
    subprocess.run([CXX, *FLAGS, f"-I{obj.parent}", "-c", str(src), "-o", str(obj)], check=True,
                   capture_output=True, text=True)


@pytest.fixture(scope="module")
def driver(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("arm64")
    srcs = [ROOT / s for s in KERNEL_SRCS] + [ROOT / "tests/quant/golden_driver.cpp"]
    objs = [d / (s.stem + ".o") for s in srcs]
    subprocess.run([sys.executable, str(ROOT / "src/cpp/gen_tables.py"), str(ROOT / "src/cpp/data/quant_tables.txt"),
                    str(d / "quant_tables.h")], check=True)
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


@pytest.mark.parametrize("name", DATASETS)
def test_neon_bytes_match_golden(driver, tmp_path, name):
    d = load(name)
    x = np.ascontiguousarray(d["x"], dtype=np.float32)
    x.tofile(tmp_path / "x.bin")
    np.ascontiguousarray(d["imatrix"], dtype=np.float32).tofile(tmp_path / "imatrix.bin")
    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run([QEMU, str(driver), str(x.shape[0]), str(x.shape[1]), str(tmp_path / "x.bin"),
                        str(tmp_path / "imatrix.bin"), str(out), *TYPES],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    done = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("ok ")]
    assert "Q8_0" in done and "IQ4_XS" in done, r.stdout
    bad = []
    for t in done:
        bpb = MANIFEST["types"][t]["bytes_per_block"]
        for case in ("none", "imat"):
            want = d[f"q__{t}__{case}"]
            got = np.fromfile(out / f"q__{t}__{case}.bin", dtype=np.uint8).reshape(want.shape)
            nb = block_mismatches(got, want, bpb)
            y = np.fromfile(out / f"y__{t}__{case}.bin", dtype=np.uint32)
            y_ok = np.array_equal(y, d[f"y__{t}__{case}"].view(np.uint32).reshape(-1))
            if nb or not y_ok:
                bad.append(f"{t} {case}: {nb} blocks differ, dequantized bits {'ok' if y_ok else 'differ'}")
    assert not bad, f"{name} [neon under qemu]: " + "; ".join(bad)
