"""Runtime dispatch on an older CPU: under qemu-x86_64 -cpu Nehalem (no AVX, AVX2 or AVX-512) the
extension picks its scalar kernels, and their bytes equal those of the widest ISA this machine runs."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import prism_native
from prism_native import qtypes
from prism_native.quant import quantize
from support.golden import TYPES, load

QEMU_X86 = os.environ.get("PRISM_QEMU_X86_64", "qemu-x86_64-static")   # Debian's qemu-user-static
pytestmark = [pytest.mark.needs_qemu,
              pytest.mark.skipif(platform.machine() != "x86_64", reason="an x86-64 build under an older x86-64")]

CHILD = """
import sys, numpy as np, prism_native
from prism_native.quant import quantize
d = np.load(sys.argv[1])
print(prism_native.cpu_features()["active"])
np.savez(sys.argv[2], **{t: quantize(d["x"], t, d["imatrix"]) for t in sys.argv[3:]})
"""


def test_a_cpu_without_avx_gets_the_scalar_kernels_and_the_same_bytes(tmp_path):
    if shutil.which(QEMU_X86) is None:
        pytest.skip(f"needs {QEMU_X86}")
    d = load("gauss")
    types = [t for t in TYPES if qtypes.get(t).native]
    np.savez(tmp_path / "in.npz", x=d["x"], imatrix=d["imatrix"])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(prism_native.__file__).parents[1]),
                                                      os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([QEMU_X86, "-cpu", "Nehalem", sys.executable, "-c", CHILD, str(tmp_path / "in.npz"),
                        str(tmp_path / "out.npz"), *types], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[-1] == "scalar"
    got = np.load(tmp_path / "out.npz")
    for t in types:
        assert np.array_equal(got[t], quantize(d["x"], t, d["imatrix"])), t
