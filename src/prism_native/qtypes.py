"""The quant type table: block size, bytes per block, llama-quantize's fallback, and whether prism_native
has a bit-exact quantizer for the type.

Block sizes of every GGML type come from the gguf package's GGML_QUANT_SIZES, completed by the native
table (`_native.type_traits()`, which static_asserts its kernels' block sizes) for the types an older
gguf package does not know (gguf 0.19 lacks Q2_0); the types prism_native quantizes come from the native
table. llama-quantize's fallback lives here only, in FALLBACK.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from functools import lru_cache

import gguf

from ._native import type_traits
from .errors import UsageError

F16_ENUM = int(gguf.GGMLQuantizationType.F16)

# llama-quantize's tensor_type_fallback (src/llama-quant.cpp): the type written instead when a row length
# is not a multiple of the block size. Other quantized types of 32 values or fewer per block fall back to
# F16; larger ones have no fallback (llama-quantize throws). A fallback that does not fit either is F16.
FALLBACK = {
    "IQ1_S": "IQ4_NL", "IQ1_M": "IQ4_NL", "IQ2_XXS": "IQ4_NL", "IQ2_XS": "IQ4_NL", "IQ2_S": "IQ4_NL",
    "IQ3_XXS": "IQ4_NL", "IQ3_S": "IQ4_NL", "IQ4_XS": "IQ4_NL",
    "Q2_0": "Q4_0", "Q2_K": "Q4_0", "Q3_K": "Q4_0", "TQ1_0": "Q4_0", "TQ2_0": "Q4_0",
    "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0",
}
_UNQUANTIZED = frozenset({"F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64"})


@dataclass(frozen=True)
class QType:
    name: str          # llama-quantize spelling, e.g. "Q4_K"
    ggml_type: int     # ggml enum value
    block_size: int    # values per block
    type_size: int     # bytes per block
    fallback: int | None  # ggml enum llama-quantize falls back to when rows do not fit; None: none
    native: bool       # prism_native has a bit-exact quantizer for it
    f16_offsets: tuple[int, ...] = ()   # byte offsets of the block's fp16 scales, d first (the native table's)

    @property
    def bpw(self) -> float:
        return 8.0 * self.type_size / self.block_size

    @property
    def needs_imatrix(self) -> bool:
        """ggml quantizes this type only with importance weights (ggml_quantize_requires_imatrix, the
        native type table's column; llama-quantize's own, wider rule is llama.mix.requires_imatrix)."""
        return self.name in _needs_imatrix()

    @property
    def quantized(self) -> bool:
        """ggml_is_quantized: every type but the plain float and integer ones."""
        return self.name not in _UNQUANTIZED

    def row_bytes(self, n_per_row: int) -> int:
        if n_per_row % self.block_size:
            raise ValueError(f"{self.name}: row length {n_per_row} is not a multiple of {self.block_size}")
        return n_per_row // self.block_size * self.type_size

    def fits(self, n_per_row: int) -> bool:
        return n_per_row % self.block_size == 0


@lru_cache(maxsize=1)
def _needs_imatrix() -> frozenset[str]:
    return frozenset(d["name"] for d in type_traits() if d.get("requires_imatrix"))


@lru_cache(maxsize=1)
def _table() -> dict[str, QType]:
    sizes = {t.name: (int(t), *gguf.GGML_QUANT_SIZES[t]) for t in gguf.GGMLQuantizationType
             if t in gguf.GGML_QUANT_SIZES}
    native = {d["name"]: d for d in type_traits()}
    for name, d in native.items():
        if name not in sizes:
            sizes[name] = (d["ggml_type"], d["block_size"], d["type_size"])
    table: dict[str, QType] = {}
    for name, (enum, bs, ts) in sizes.items():
        if name in native and (native[name]["ggml_type"], native[name]["block_size"],
                               native[name]["type_size"]) != (enum, bs, ts):
            raise RuntimeError(f"native type table disagrees with the gguf package on {name}")
        if name in FALLBACK:
            fb: int | None = sizes[FALLBACK[name]][0]
        elif 1 < bs <= 32 and name not in _UNQUANTIZED:
            fb = F16_ENUM
        else:
            fb = None
        row = native.get(name, {})
        table[name] = QType(name, enum, bs, ts, fb, bool(row.get("implemented", False)),
                            tuple(row.get("f16_offsets", ())))
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
        raise UsageError(f"{t.name} does not fit rows of {n_per_row} values and llama-quantize "
                         "has no fallback for it")
    fb = get(t.fallback)
    return fb if fb.fits(n_per_row) else get(F16_ENUM)
