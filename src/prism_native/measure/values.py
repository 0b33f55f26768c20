"""A tensor's values checked before they are measured: finite, and within float16's range or not.

llama-quantize cannot quantize NaN or Inf (its output fails ggml_validate_row_data, "quantized data
validation failed"), so such a tensor is refused, naming it and the first bad row. Finite values
beyond float16's range are measured, but they can overflow a type's float16 block scales; below
that range no type's scale can (every scale is at most the largest |value|), so sampled rows are
enough there, and beyond it every row is measured to find the types llama-quantize would reject.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FileFormatError
from .structure import LineNorms, any_line_norms

F16_MAX = 65504.0
_CHUNK_VALUES = 1 << 22   # the exact maximum is taken in slabs of ~16 MiB


@dataclass(frozen=True)
class ValueScreen:
    norms: LineNorms      # of the (rows x ne0) matrix of every value
    max_abs: float        # exact when above F16_MAX, else an upper bound (the largest row norm)

    @property
    def beyond_f16(self) -> bool:
        return self.max_abs > F16_MAX


class Screen:
    """screen() of a matrix fed slab by slab (rows in order): the same checks and results as one pass."""

    def __init__(self, where: str, n_rows: int) -> None:
        self.where, self.n_rows = where, n_rows
        self.row_sq: list[np.ndarray] = []
        self.col_sq: np.ndarray | None = None
        self.bound = 0.0      # largest row norm
        self.top = 0.0        # exact largest |value| of the slabs whose bound exceeds F16_MAX

    def add(self, x: np.ndarray, start: int) -> None:
        """Check the float32 slab x, rows start.. of the matrix."""
        norms = any_line_norms(x)
        bad = ~np.isfinite(norms.row_sq)
        if bad.any():
            row = start + int(np.argmax(bad))
            raise FileFormatError(f"{self.where} has NaN or Inf values (row {row} of {self.n_rows}); "
                                  "llama-quantize cannot quantize it")
        self.row_sq.append(norms.row_sq)
        self.col_sq = norms.col_sq if self.col_sq is None else self.col_sq + norms.col_sq
        bound = float(np.sqrt(norms.row_sq.max()))
        self.bound = max(self.bound, bound)
        if bound > F16_MAX:   # a value may exceed it: only such slabs can hold the exact maximum above it
            flat = x.reshape(-1)
            self.top = max([self.top] + [float(np.abs(flat[i:i + _CHUNK_VALUES]).max())
                                         for i in range(0, flat.size, _CHUNK_VALUES)])

    def result(self) -> ValueScreen:
        assert self.col_sq is not None, "no slab was screened"
        row_sq = self.row_sq[0] if len(self.row_sq) == 1 else np.concatenate(self.row_sq)
        return ValueScreen(LineNorms(row_sq, self.col_sq), self.bound if self.bound <= F16_MAX else self.top)


def screen(x: np.ndarray, where: str) -> ValueScreen:
    """Check every value of the float32 (rows x ne0) matrix `x`; `where` names the tensor."""
    s = Screen(where, x.shape[0])
    s.add(x, 0)
    return s.result()
