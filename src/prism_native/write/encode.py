"""One tensor's output bytes, computed as llama-quantize computes them, slab by slab.

llama_model_quantize_impl's main loop, per tensor: a tensor whose type does not change is copied
byte for byte (after ggml_validate_row_data); otherwise its rows are converted to float32
(llama_tensor_dequantize_impl: ggml_fp16_to_fp32_row, ggml_bf16_to_fp32_row or the type's to_float)
and handed to ggml_quantize_chunk (llama_tensor_quantize_impl), which quantizes, or converts to F16
(ggml_fp32_to_fp16_row), BF16 (ggml_fp32_to_bf16_row_ref) or F32 (a copy). Every such step works row
by row, so slabs of whole rows give the same bytes as the whole tensor; slabs never cross an expert
boundary, because each expert has its own importance slice.

Here F16/BF16/F32 rows go to the native quantizers as they are (the native conversion to float32 is
exact); quantized rows are dequantized by the native to_float. Source types without a native
dequantizer, and target types without a native quantizer, are refused rather than approximated.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .. import qtypes
from ..errors import RecipeError
from ..qtypes import QType
from ..quant import (FLOAT_TYPES, Scratch, dequantize, float_view, fp32_to_bf16, fp32_to_fp16, invalid_data, quantize,
                     to_float32)
from ..read.model import TensorInfo
from .source import TensorSource

SLAB_VALUES = 1 << 24   # values per slab: a 64 MiB float32 scratch at most, whatever the tensor size

@dataclass(frozen=True)
class Slab:
    """Rows [row0, row1) of a tensor's (rows x n_per_row) matrix, all of one expert."""

    row0: int
    row1: int
    expert: int


def slabs(t: TensorInfo, slab_values: int | None = None) -> Iterator[Slab]:
    """The tensor's rows in slabs of at most slab_values (default SLAB_VALUES) values, a row at least,
    that never cross an expert (ne[2]) boundary. Rows per expert is ne[1], as
    llama_tensor_quantize_impl counts them."""
    slab_values = SLAB_VALUES if slab_values is None else slab_values
    per_expert = t.shape[1] if len(t.shape) > 1 else 1
    step = max(1, slab_values // max(1, t.n_per_row))
    for r in range(0, t.n_rows, per_expert):
        end = min(r + per_expert, t.n_rows)
        for a in range(r, end, step):
            yield Slab(a, min(a + step, end), r // per_expert)


class TensorEncoder:
    """Turns slabs of one source tensor into the target type's bytes (ggml_quantize_chunk's result)."""

    def __init__(self, source: TensorSource, t: TensorInfo, target: QType, imatrix: np.ndarray | None,
                 nthreads: int, scratch: Scratch) -> None:
        self.source, self.t, self.target, self.nthreads, self.scratch = source, t, target, nthreads, scratch
        self.imatrix = imatrix        # (n_experts, n_per_row) importance, or None
        self.src = t.qtype    # build_job has checked that both conversions exist

    def _source(self, s: Slab) -> tuple[np.ndarray, bool]:
        """(rows x n_per_row array, is bf16 bits): float rows as read, quantized ones dequantized into the
        scratch buffer."""
        t, src = self.t, self.src
        row_bytes = src.row_bytes(t.n_per_row)
        n = s.row1 - s.row0
        raw = self.source.read(t, s.row0 * row_bytes, n * row_bytes)
        if src.name in FLOAT_TYPES:
            return float_view(raw.reshape(n, -1), src.name)
        out = self.scratch.get(n * t.n_per_row)
        return dequantize(raw, src, (n, t.n_per_row), nthreads=self.nthreads, out=out), False

    def _float32(self, x: np.ndarray, bf16: bool) -> np.ndarray:
        if x.dtype == np.float32:
            return x
        return to_float32(x, bf16, nthreads=self.nthreads, out=self.scratch.get(x.size))

    def encode(self, s: Slab) -> np.ndarray:
        """The slab's output bytes, in an array of the caller's own (no buffer reused by the next call)."""
        x, bf16 = self._source(s)
        tgt = self.target
        if tgt.name not in FLOAT_TYPES:
            w = None if self.imatrix is None else self.imatrix[s.expert]
            try:
                return quantize(x, tgt, w, bf16=bf16, nthreads=self.nthreads)
            except ValueError as e:  # NaN/Inf in the input (ggml_validate_row_data refuses it too)
                raise RecipeError(f"tensor '{self.t.name}' has invalid data ({e})") from None
        f = self._float32(x, bf16)
        if invalid_data(f, qtypes.get("F32")):
            raise RecipeError(f"tensor '{self.t.name}' has invalid data (NaN or Inf)")
        if tgt.name == "F16":
            return fp32_to_fp16(f)
        if tgt.name == "BF16":
            return fp32_to_bf16(f)
        return f.copy()           # f may be the scratch buffer
