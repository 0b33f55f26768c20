"""What a llama-quantize run printed: the type of every tensor and the "quant size" line
(tools/quantize and src/llama-quant.cpp llama_model_quantize_impl's log)."""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from ..llama.command import QuantizeCommand
from .binaries import run

# "[  12/ 272] blk.1.attn_v.weight - [ 576, 192, 1, 1], type = q4_1, size = 0.07 MiB -> 0.11 MiB (q8_0)"
_TENSOR_LINE = re.compile(r"^\[\s*\d+/\s*\d+\]\s+(?P<name>\S+)\s+- \[[^\]]*\], type =\s*(?P<src>\S+), "
                          r"size =\s*[\d.]+ MiB(?: ->\s*[\d.]+ MiB \((?P<dst>\S+)\))?")
_QUANT_SIZE = re.compile(r"quant size\s*=\s*(?P<mib>[\d.]+) MiB \((?P<bpw>[\d.]+) BPW\)")


@dataclass(frozen=True)
class QuantizeLog:
    types: dict[str, str]   # tensor name -> type llama-quantize writes (upper case, e.g. Q4_K)
    quant_mib: float        # "quant size" as printed (2 decimals)
    bpw: float              # as printed (2 decimals)
    log: str


def parse_quantize_log(log: str) -> QuantizeLog:
    types: dict[str, str] = {}
    for line in log.splitlines():
        m = _TENSOR_LINE.match(line.strip())
        if m:
            types[m.group("name")] = (m.group("dst") or m.group("src")).upper()
    q = _QUANT_SIZE.search(log)
    return QuantizeLog(types, float(q.group("mib")) if q else float("nan"),
                       float(q.group("bpw")) if q else float("nan"), log)


def dry_run(binary: str | Path, cmd: QuantizeCommand) -> QuantizeLog:
    """llama-quantize --dry-run of `cmd` (its output path is not written); ToolError when it fails."""
    return parse_quantize_log(run(replace(cmd, dry_run=True, program=str(binary)).argv()))
