"""Running llama.cpp's llama-quantize: find the binary, turn QuantizeOptions into its arguments, and
read back what a --dry-run decided for every tensor."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import PrismError
from .rules import QuantizeOptions

ENV_BINARY = "PRISM_LLAMA_QUANTIZE"
# "[  12/ 272] blk.1.attn_v.weight - [ 576, 192, 1, 1], type = q4_1, size = 0.07 MiB -> 0.11 MiB (q8_0)"
_TENSOR_LINE = re.compile(r"^\[\s*\d+/\s*\d+\]\s+(?P<name>\S+)\s+- \[[^\]]*\], type =\s*(?P<src>\S+), "
                          r"size =\s*[\d.]+ MiB(?: ->\s*[\d.]+ MiB \((?P<dst>\S+)\))?")
_QUANT_SIZE = re.compile(r"quant size\s*=\s*(?P<mib>[\d.]+) MiB \((?P<bpw>[\d.]+) BPW\)")


def find_binary() -> Path | None:
    """$PRISM_LLAMA_QUANTIZE, else llama-quantize on PATH, else None."""
    env = os.environ.get(ENV_BINARY)
    if env:
        p = Path(env)
        return p if p.is_file() and os.access(p, os.X_OK) else None
    found = shutil.which("llama-quantize")
    return Path(found) if found else None


def to_args(opts: QuantizeOptions, imatrix: str | Path | None = None) -> list[str]:
    """llama-quantize flags (before the positional arguments) that reproduce `opts`."""
    args: list[str] = []
    if opts.pure:
        args.append("--pure")
    if opts.leave_output_tensor:
        args.append("--leave-output-tensor")
    if opts.output_tensor_type:
        args += ["--output-tensor-type", opts.output_tensor_type]
    if opts.token_embedding_type:
        args += ["--token-embedding-type", opts.token_embedding_type]
    for r in opts.tensor_types:
        args += ["--tensor-type", f"{r.pattern}={r.qtype.name}"]
    if imatrix is not None:
        args += ["--imatrix", str(imatrix)]
    return args


@dataclass(frozen=True)
class DryRun:
    types: dict[str, str]   # tensor name -> type llama-quantize would write (upper case, e.g. Q4_K)
    quant_mib: float        # "quant size" as printed (2 decimals)
    bpw: float              # as printed (2 decimals)
    log: str


def run(binary: Path, args: list[str], *, timeout: float = 3600) -> str:
    """Run llama-quantize and return its log (stdout + stderr); PrismError with its last line on failure."""
    try:
        r = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=timeout)
    except OSError as e:
        raise PrismError(f"{binary}: cannot run: {e.strerror or e}") from None
    log = r.stdout + r.stderr
    if r.returncode != 0:
        last = next((ln for ln in reversed(log.splitlines()) if ln.strip()), "no output")
        raise PrismError(f"llama-quantize failed ({r.returncode}): {last.strip()}")
    return log


def dry_run(binary: Path, model: str | Path, opts: QuantizeOptions, *,
            imatrix: str | Path | None = None) -> DryRun:
    """llama-quantize --dry-run; PrismError with its last line when it fails."""
    return parse_dry_run(run(binary, ["--dry-run", *to_args(opts, imatrix), str(model), opts.ftype]))


def parse_dry_run(log: str) -> DryRun:
    types: dict[str, str] = {}
    for line in log.splitlines():
        m = _TENSOR_LINE.match(line.strip())
        if m:
            types[m.group("name")] = (m.group("dst") or m.group("src")).upper()
    q = _QUANT_SIZE.search(log)
    return DryRun(types, float(q.group("mib")) if q else float("nan"),
                  float(q.group("bpw")) if q else float("nan"), log)


def quantize(binary: Path, model: str | Path, out: str | Path, opts: QuantizeOptions, *,
             imatrix: str | Path | None = None, nthreads: int = 2, allow_requantize: bool = True) -> str:
    """A real llama-quantize run; returns its log, PrismError with its last line when it fails."""
    extra = ["--allow-requantize"] if allow_requantize else []
    return run(binary, [*extra, *to_args(opts, imatrix), str(model), str(out), opts.ftype, str(nthreads)])
