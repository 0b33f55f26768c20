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


def screen(x: np.ndarray, where: str) -> ValueScreen:
    """Check every value of the float32 (rows x ne0) matrix `x`; `where` names the tensor."""
    norms = any_line_norms(x)
    bad = ~np.isfinite(norms.row_sq)
    if bad.any():
        row = int(np.argmax(bad))
        raise FileFormatError(f"{where} has NaN or Inf values (row {row} of {x.shape[0]}); llama-quantize "
                              "cannot quantize it")
    bound = float(np.sqrt(norms.row_sq.max()))
    if bound <= F16_MAX:
        return ValueScreen(norms, bound)
    flat = x.reshape(-1)
    top = max(float(np.abs(flat[i:i + _CHUNK_VALUES]).max()) for i in range(0, flat.size, _CHUNK_VALUES))
    return ValueScreen(norms, top)
