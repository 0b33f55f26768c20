"""Run a plan's llama-quantize command for real and read back what it wrote (tests that need the binary)."""
from __future__ import annotations

import subprocess
from pathlib import Path

from prism_native.read.model import Model


def run_recipe(binary: Path, plan_json: dict, tmp_path: Path) -> tuple[dict[str, str], int]:
    """(tensor name -> written type, output file size) of `plan --json`'s argv run by `binary`."""
    argv = list(plan_json["argv"])
    argv[0] = str(binary)
    argv[-2] = str(tmp_path / "out.gguf")
    r = subprocess.run(argv, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    written = {t.name: t.type_name for t in Model(argv[-2]).tensors}   # (gguf 0.19 does not know Q2_0)
    return written, (tmp_path / "out.gguf").stat().st_size
