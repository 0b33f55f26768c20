"""Budgets: a bits-per-weight figure over the quantized tensors, or a whole output file size, turned into
the bytes the allocator may spend on the tensors it chooses types for."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..errors import UsageError
from ..gguf.constants import pad
from ..llama.sizes import estimate, tensor_nbytes
from ..measure.results import Analysis
from ..read.model import Model

MAX_SIZE = 2**60    # bytes; beyond any file system, and exact as a float
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGT]?I?B?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9,
          "T": 10**12, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
          "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}


def parse_size(text: str) -> int:
    """'4.2GiB', '3.5 GB', '900M', '123456789' -> bytes (GB = 10^9, GiB = 2^30)."""
    m = _SIZE.match(text)
    unit = (m.group(2) or "").upper() if m else ""
    if not m or unit not in _UNITS:
        raise UsageError(f"cannot read size '{text}' (examples: 4.2GiB, 3.5GB, 900MiB, 123456789)")
    n = float(m.group(1)) * _UNITS[unit]
    if not n < MAX_SIZE:           # inf from a number too long for a float too
        raise UsageError(f"size '{text}' is more than the {MAX_SIZE // 2**50:,} PiB a budget may be")
    return int(n)


def fmt_bytes(n: float) -> str:
    return f"{n / 2**20:,.2f} MiB ({int(n):,} bytes)"


@dataclass(frozen=True)
class Budget:
    kind: str        # "bpw" (over the quantized tensors) or "size" (whole output file)
    value: float     # bits per weight, or bytes

    def describe(self) -> str:
        return f"{self.value:g} bpw over the quantized tensors" if self.kind == "bpw" else \
            f"file size {fmt_bytes(self.value)}"


def _fixed_bytes(model: Model, analysis: Analysis, extra_kv: Sequence[Any]) -> int:
    """File bytes that do not depend on the plan: metadata and the tensors llama-quantize keeps."""
    base = estimate(model, {}, extra_kv=extra_kv)
    kept = sum(pad(tensor_nbytes(t.shape, t.qtype)) for t in model.tensors if t.name not in analysis.tensors)
    return base.meta_bytes + kept


def byte_budget(model: Model, analysis: Analysis, budget: Budget, extra_kv: Sequence[Any]) -> tuple[int, Callable[[int], str]]:
    """(bytes available to the quantized tensors, formatter of such bytes in the user's units)."""
    q_params = sum(r.n_params for r in analysis.tensors.values())
    if budget.kind == "bpw":
        return int(math.floor(budget.value * q_params / 8)), (lambda b: f"{8 * b / q_params:.4f} bpw")
    fixed = _fixed_bytes(model, analysis, extra_kv)
    return int(budget.value) - fixed, (lambda b: fmt_bytes(b + fixed))
