"""Run a plan's llama-quantize command for real and read back what it wrote (tests that need the binary)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import gguf


def run_recipe(binary: Path, plan_json: dict, tmp_path: Path) -> tuple[dict[str, str], int]:
    """(tensor name -> written type, output file size) of `plan --json`'s argv run by `binary`."""
    argv = list(plan_json["argv"])
    argv[0] = str(binary)
    argv[-2] = str(tmp_path / "out.gguf")
    r = subprocess.run(argv, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    written = {t.name: t.tensor_type.name for t in gguf.GGUFReader(argv[-2]).tensors}
    return written, (tmp_path / "out.gguf").stat().st_size
