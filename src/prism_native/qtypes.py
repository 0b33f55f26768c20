"""Quant type table shared with the native layer (block size, bytes per block, llama-quantize fallback).

The types prism_native can quantize come from the C++ table (`_native.type_traits()`); every other
GGML type (what an input file may hold) comes from the gguf package's GGML_QUANT_SIZES.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from functools import lru_cache

import gguf

from . import _native
from .errors import PrismError, UsageError

F16_ENUM = int(gguf.GGMLQuantizationType.F16)

# llama-quantize's tensor_type_fallback (src/llama-quant.cpp) for the types the native table does not
# hold; other quantized types of 32 values or fewer per block fall back to F16, larger ones have none.
_LLAMA_FALLBACK = {
    "IQ1_S": "IQ4_NL", "IQ1_M": "IQ4_NL", "IQ2_XXS": "IQ4_NL", "IQ2_XS": "IQ4_NL", "IQ2_S": "IQ4_NL",
    "IQ3_XXS": "IQ4_NL", "IQ3_S": "IQ4_NL", "TQ1_0": "Q4_0", "TQ2_0": "Q4_0",
}


@dataclass(frozen=True)
class QType:
    name: str          # llama-quantize spelling, e.g. "Q4_K"
    ggml_type: int     # ggml enum value
    block_size: int    # values per block
    type_size: int     # bytes per block
    fallback: int | None  # ggml enum llama-quantize falls back to when rows do not fit; None: none
    native: bool       # prism_native has a bit-exact quantizer for it

    @property
    def bpw(self) -> float:
        return 8.0 * self.type_size / self.block_size

    def row_bytes(self, n_per_row: int) -> int:
        if n_per_row % self.block_size:
            raise ValueError(f"{self.name}: row length {n_per_row} is not a multiple of {self.block_size}")
        return n_per_row // self.block_size * self.type_size

    def fits(self, n_per_row: int) -> bool:
        return n_per_row % self.block_size == 0


@lru_cache(maxsize=1)
def _table() -> dict[str, QType]:
    table: dict[str, QType] = {}
    for t in gguf.GGMLQuantizationType:
        bs, ts = gguf.GGML_QUANT_SIZES.get(t, (None, None))
        if bs is None:
            continue
        table[t.name] = QType(t.name, int(t), bs, ts, None, False)
    for name, target in _LLAMA_FALLBACK.items():
        t = table[name]
        table[name] = QType(t.name, t.ggml_type, t.block_size, t.type_size, table[target].ggml_type, False)
    for t in list(table.values()):
        if t.fallback is None and 1 < t.block_size <= 32:
            table[t.name] = QType(t.name, t.ggml_type, t.block_size, t.type_size, F16_ENUM, False)
    for d in _native.type_traits():
        table[d["name"]] = QType(d["name"], d["ggml_type"], d["block_size"], d["type_size"],
                                 d["fallback"], bool(d["implemented"]))
    return table


def all_types() -> dict[str, QType]:
    return dict(_table())


def get(name_or_enum: str | int) -> QType:
    """Look a type up by name (case-insensitive, 'q4_k' or 'Q4_K') or by ggml enum value."""
    table = _table()
    if not isinstance(name_or_enum, str) and hasattr(name_or_enum, "__index__"):   # int, numpy ints
        num = operator.index(name_or_enum)
        for t in table.values():
            if t.ggml_type == num:
                return t
        raise UsageError(f"unknown ggml type {name_or_enum}")
    if not isinstance(name_or_enum, str):
        raise UsageError(f"a type is a name such as 'Q4_K' or a ggml enum, not {name_or_enum!r}")
    key = name_or_enum.strip().upper()
    if key in table:
        return table[key]
    raise UsageError(f"unknown quant type '{name_or_enum}' (known: {', '.join(sorted(table))})")


def effective(t: QType, n_per_row: int) -> QType:
    """The type llama-quantize really writes for a row length (tensor_type_fallback), F16 at worst."""
    if t.fits(n_per_row):
        return t
    if t.fallback is None:
        # llama-quantize throws "no tensor type fallback is defined" for these (Q8_K, NVFP4, Q1_0)
        raise PrismError(f"{t.name} does not fit rows of {n_per_row} values and llama-quantize "
                         "has no fallback for it")
    fb = get(t.fallback)
    return fb if fb.fits(n_per_row) else get(F16_ENUM)
