"""The bit-exact kernels must not contain fused multiply-adds (ggml's reference is built without FMA)."""
from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from prism_native import _native


def test_extension_has_no_fma_instructions() -> None:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump not available")
    out = subprocess.run([objdump, "-d", _native.__file__], capture_output=True, text=True, check=True).stdout
    fused = re.findall(r"\bvfn?m(?:add|sub)\w*", out)
    assert not fused, f"{len(fused)} FMA instructions, e.g. {sorted(set(fused))[:5]}"
