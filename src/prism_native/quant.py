"""Python face of the native quantizers: bit-exact ggml bytes, dequantization and the fused error kernel."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np

from ._native import dequantize as _dequantize, quant_errors as _quant_errors, quantize as _quantize
from ._native import to_float32 as _to_float32
from .errors import UsageError
from .qtypes import QType, all_types, get


TypeName = Union[str, int, QType]


def _type(t: TypeName) -> QType:
    if not isinstance(t, (str, int, QType)) or isinstance(t, bool):
        raise UsageError(f"qtype must be a type name such as 'Q4_K', got {t!r}")
    q = t if isinstance(t, QType) else get(t)
    if not q.native:
        natives = ", ".join(n for n, d in all_types().items() if d.native)
        raise UsageError(f"prism_native has no quantizer for {q.name} (it has {natives})")
    return q


def _matrix(x: np.ndarray, bf16: bool) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise UsageError(f"x must be a numpy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise UsageError(f"x must be 2-D (rows x n_per_row), got shape {x.shape}")
    if x.size == 0:
        raise UsageError("x is empty")
    ok = (x.dtype == np.float32 or x.dtype == np.float16 or (bf16 and x.dtype == np.uint16))
    if not ok:
        raise UsageError(f"x must be float32 or float16 (or uint16 bfloat16 bits with bf16=True), got {x.dtype}")
    return np.ascontiguousarray(x)


def _imatrix(imatrix: np.ndarray | None, n: int, qs: Sequence[QType] = ()) -> np.ndarray | None:
    if imatrix is None:
        needs = next((q for q in qs if q.needs_imatrix), None)
        if needs is not None:
            raise UsageError(f"ggml quantizes {needs.name} only with importance weights (an imatrix)")
        return None
    w = np.ascontiguousarray(imatrix, dtype=np.float32).reshape(-1)
    if w.shape[0] != n:
        raise UsageError(f"imatrix has {w.shape[0]} values, rows have {n}")
    return w


def quantize(x: np.ndarray, qtype: TypeName, imatrix: np.ndarray | None = None, *,
             bf16: bool = False, nthreads: int = 0, isa: str = "") -> np.ndarray:
    """ggml bytes of x, bit for bit what ggml_quantize_chunk writes (GIL released, multi-threaded).

    x: float32 or float16 values, 2-D (rows x n_per_row); bf16=True reads uint16 arrays as bfloat16 bits. qtype: a type name ("Q4_K", any case), ggml enum or QType; n_per_row must
    be a multiple of its block size. imatrix: n_per_row importance weights (llama-imatrix's, one
    expert's slice) or None. nthreads: 0 for all cores; the bytes never depend on it.
    Returns uint8 (rows, row bytes). Bad arguments, and NaN or Inf in x, raise ValueError.
    """
    q = _type(qtype)
    m = _matrix(x, bf16)
    if m.shape[1] % q.block_size:
        raise UsageError(f"row length {m.shape[1]} is not a multiple of {q.name}'s block size {q.block_size}")
    return _quantize(m, q.ggml_type, _imatrix(imatrix, m.shape[1], [q]), bf16, nthreads, isa)


def dequantize(data: np.ndarray | bytes, qtype: TypeName, shape: Sequence[int], *,
               nthreads: int = 0, isa: str = "", out: np.ndarray | None = None) -> np.ndarray:
    """float32 values of ggml bytes, as the type's to_float computes them.

    shape: the values' numpy shape (..., n_per_row), e.g. (rows, n_per_row); `data` must hold exactly
    that many values of qtype. `out`: a reusable 1-D float32 buffer (see `Scratch`) to write into.
    Bad arguments raise ValueError.
    """
    q = _type(qtype)
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise UsageError(f"shape must be a sequence of ints, got {shape!r}") from None
    if not dims or any(d <= 0 for d in dims):
        raise UsageError(f"shape must have positive dimensions, got {dims}")
    n = dims[-1]
    nrows = int(np.prod(dims[:-1], dtype=np.int64)) if len(dims) > 1 else 1
    if n % q.block_size:
        raise UsageError(f"row length {n} is not a multiple of {q.name}'s block size {q.block_size}")
    if isinstance(data, (bytes, bytearray, memoryview)):
        buf = np.frombuffer(data, dtype=np.uint8)
    elif isinstance(data, np.ndarray):
        buf = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    else:
        raise UsageError(f"data must be bytes or a numpy array, got {type(data).__name__}")
    need = nrows * q.row_bytes(n)
    if buf.size != need:
        raise UsageError(f"{q.name} data for shape {dims} is {need} bytes, got {buf.size}")
    y = _dequantize(buf.reshape(-1), q.ggml_type, nrows, n, nthreads, isa, out)
    y = y if out is None else out[:nrows * n]
    return y.reshape(dims)


def to_float32(x: np.ndarray, bf16: bool = False, *, nthreads: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """Exact float32 copy of a 2-D float16 array (uint16 bfloat16 bits with bf16=True); into the start of
    `out` when given."""
    y = _to_float32(x, bf16, nthreads, out)
    return y if out is None else out[:x.size].reshape(x.shape)


FLOAT_TYPES = ("F32", "F16", "BF16")
_FLOAT_VIEWS = {"F32": "<f4", "F16": "<f2", "BF16": "<u2"}


def float_view(raw: np.ndarray, type_name: str) -> tuple[np.ndarray, bool]:
    """Raw F32/F16/BF16 bytes (rows x row bytes, or flat) as the array the native kernels take (float32,
    float16, or bfloat16 bits as uint16), and whether it holds bfloat16 bits (their `bf16=`)."""
    return np.asarray(raw).view(_FLOAT_VIEWS[type_name]), type_name == "BF16"


def float32_rows(raw: np.ndarray, type_name: str, *, nthreads: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """float32 values of raw F32/F16/BF16 rows (rows x row bytes): a view for F32, else the native exact
    conversion (numpy's float16 cast is ~10x slower), into the start of `out` when given."""
    x, bf16 = float_view(raw, type_name)
    return x if x.dtype == np.float32 else to_float32(x, bf16, nthreads=nthreads, out=out)


def invalid_data(raw: np.ndarray, qt: QType) -> bool:
    """ggml_validate_row_data: an Inf or NaN value (float types) or fp16 block scale (the quantized types
    whose scale offsets the native type table lists). Types whose blocks it checks differently (MXFP4, the
    IQ1-3 and TQ families) are not checked here."""
    if qt.name == "F32":
        return bool(((raw.view("<u4") & 0x7F800000) == 0x7F800000).any())
    if qt.name == "F16":
        return bool(((raw.view("<u2") & 0x7C00) == 0x7C00).any())
    if qt.name == "BF16":
        return bool(((raw.view("<u2") & 0x7F80) == 0x7F80).any())
    offsets = qt.f16_offsets
    if not offsets:
        return False
    blocks = raw.reshape(-1, qt.type_size)
    return any(bool(((blocks[:, o:o + 2].copy().view("<u2") & 0x7C00) == 0x7C00).any()) for o in offsets)


def fp32_to_fp16(x: np.ndarray) -> np.ndarray:
    """ggml_fp32_to_fp16_row: round to nearest even, overflow to Inf (inputs are finite: validated)."""
    with np.errstate(over="ignore"):
        return x.astype("<f2")


def fp32_to_bf16(x: np.ndarray) -> np.ndarray:
    """ggml_fp32_to_bf16_row_ref (ggml_compute_fp32_to_bf16): round to nearest even on the top 16 bits;
    NaN made quiet."""
    u = np.ascontiguousarray(x, dtype="<f4").view("<u4")
    out = ((u + (0x7FFF + ((u >> 16) & 1))) >> 16).astype("<u2")
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    if nan.any():
        out[nan] = ((u[nan] >> 16) | 64).astype("<u2")
    return out


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
    res = _quant_errors(x, [q.ggml_type for q in qs], _imatrix(imatrix, x.shape[1], qs), r, float(delta),
                               bf16, nthreads, isa)
    return [ErrorStats(q.name, *t) for q, t in zip(qs, res)]
