"""Python face of the native quantizers: bit-exact ggml bytes, dequantization and the fused error kernel."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from . import _native
from .qtypes import QType, get


def _type(t: str | int | QType) -> QType:
    q = t if isinstance(t, QType) else get(t)
    if not q.native:
        raise ValueError(f"prism_native has no quantizer for {q.name}")
    return q


def _matrix(x: np.ndarray, bf16: bool) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise ValueError("x must be a numpy array")
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D (rows x n_per_row), got shape {x.shape}")
    if x.size == 0:
        raise ValueError("x is empty")
    ok = (x.dtype == np.float32 or x.dtype == np.float16 or (bf16 and x.dtype == np.uint16))
    if not ok:
        raise ValueError(f"x must be float32 or float16 (or uint16 bfloat16 bits with bf16=True), got {x.dtype}")
    return np.ascontiguousarray(x)


def _imatrix(imatrix: np.ndarray | None, n: int) -> np.ndarray | None:
    if imatrix is None:
        return None
    w = np.ascontiguousarray(imatrix, dtype=np.float32).reshape(-1)
    if w.shape[0] != n:
        raise ValueError(f"imatrix has {w.shape[0]} values, rows have {n}")
    return w


def quantize(x: np.ndarray, qtype: str | int | QType, imatrix: np.ndarray | None = None, *,
             bf16: bool = False, nthreads: int = 0, isa: str = "") -> np.ndarray:
    """Quantize a 2-D matrix as ggml_quantize_chunk does; returns uint8 (rows, row_size) ggml bytes."""
    q = _type(qtype)
    x = _matrix(x, bf16)
    return _native.quantize(x, q.ggml_type, _imatrix(imatrix, x.shape[1]), bf16, nthreads, isa)


def dequantize(data: np.ndarray | bytes, qtype: str | int | QType, shape: tuple[int, int], *,
               nthreads: int = 0, isa: str = "", out: np.ndarray | None = None) -> np.ndarray:
    """ggml's to_float: float32 (rows, n_per_row) from ggml bytes; written into the start of `out`
    (a reusable 1-D float32 buffer, see `scratch`) when given."""
    q = _type(qtype)
    buf = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else np.ascontiguousarray(data, dtype=np.uint8)
    nrows, n = int(shape[0]), int(shape[1])
    y = _native.dequantize(buf.reshape(-1), q.ggml_type, nrows, n, nthreads, isa, out)
    return y if out is None else out[:nrows * n].reshape(nrows, n)


def to_float32(x: np.ndarray, bf16: bool = False, *, nthreads: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """Exact float32 copy of a 2-D float16 array (uint16 bfloat16 bits with bf16=True); into the start of
    `out` when given."""
    y = _native.to_float32(x, bf16, nthreads, out)
    return y if out is None else out[:x.size].reshape(x.shape)


class Scratch:
    """One growing float32 buffer per thread, for tensor-sized temporaries that would otherwise be
    allocated per tensor: a fresh 100-500 MB buffer cost 0.1-0.7 s of page faults (and huge-page
    compaction) per tensor; reused, its pages are already mapped."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self, n: int) -> np.ndarray:
        buf = getattr(self._local, "buf", None)
        if buf is None or buf.size < n:
            del buf
            self._local.buf = None  # drop the smaller one before allocating the larger
            self._local.buf = np.empty(n, dtype=np.float32)
        return self._local.buf


@dataclass(frozen=True)
class ErrorStats:
    qtype: str
    err: float            # sum w (x - q)^2
    signal: float         # sum w x^2
    near_boundary: int    # values within `delta` bin widths of a bin boundary
    counted: int          # values that have a bin (non-zero scale)

    @property
    def rel_error(self) -> float:
        return self.err / self.signal if self.signal > 0 else 0.0

    @property
    def boundary_density(self) -> float:
        return self.near_boundary / self.counted if self.counted else 0.0


def quant_errors(x: np.ndarray, qtypes: Sequence[str | int | QType], imatrix: np.ndarray | None = None, *,
                 rows: np.ndarray | None = None, delta: float = 0.1, bf16: bool = False,
                 nthreads: int = 0, isa: str = "") -> list[ErrorStats]:
    """Fused kernel: one pass over (the selected rows of) x, per type the weighted error, signal and
    boundary counts; independent of nthreads."""
    qs = [_type(t) for t in qtypes]
    x = _matrix(x, bf16)
    r = None if rows is None else np.ascontiguousarray(rows, dtype=np.int64)
    res = _native.quant_errors(x, [q.ggml_type for q in qs], _imatrix(imatrix, x.shape[1]), r, float(delta),
                               bf16, nthreads, isa)
    return [ErrorStats(q.name, *t) for q, t in zip(qs, res)]
