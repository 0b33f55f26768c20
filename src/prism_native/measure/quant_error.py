"""Quantization errors of one tensor under every candidate type, from the native fused kernel.

OSQE, the one-shot scalar quantization error, is the relative error of quantizing a tensor once with
ggml's own block quantizers (prism_native's bit-exact copies), at the type llama-quantize really
writes for its row length:  sum w (x - q)^2 / sum w x^2,  with w the imatrix column importance or 1.
It is measured at four levels, 2, 3, 4 and 6 bits (Q2_K, Q3_K, Q4_K, Q6_K); the same kernel pass
measures every candidate type of the allocator, the boundary density (share of values within
`delta` bin widths of a rounding boundary, on the 4-bit grid) and hence fragility,
ln(OSQE(2) / OSQE(4)). docs/metrics.md has the definitions and the sampling accuracy.
"""
from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .. import qtypes
from ..errors import FileFormatError, UsageError
from ..quant import quant_errors

OSQE_TYPES = {2: "Q2_K", 3: "Q3_K", 4: "Q4_K", 6: "Q6_K"}   # OSQE bit levels -> ggml's own quantizers
BOUNDARY_TYPE = "Q4_K"                                       # boundary density on the 4-bit grid
# every type a plan may pick: every type prism_native quantizes bit-exactly. The K-quants, IQ4_XS and
# the 32-block types that rows not fitting 256 fall back to come first, in the order the allocator's
# ties have always fallen back on; the others follow in ggml's enum order.
_FIRST = ("Q2_K", "Q3_K", "IQ4_XS", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "IQ4_NL", "Q4_0", "Q4_1", "Q5_0", "Q5_1")
CANDIDATES = tuple(dict.fromkeys(
    [t for t in _FIRST if qtypes.get(t).native]
    + [q.name for q in sorted(qtypes.all_types().values(), key=lambda q: q.ggml_type) if q.native and q.quantized]))


@dataclass(frozen=True)
class ErrorMeasurement:
    # requested type -> {"type": written type, "rel_error": float}, or rel_error None and "reason" for a
    # type llama-quantize cannot write for this tensor
    errors: dict[str, dict[str, Any]]
    osqe: dict[str, float]              # "2", "3", "4", "6" -> relative error (NaN: see errors)
    fragility: float
    boundary: float
    rows_measured: int
    undefined: dict[str, str]           # fragility / boundary -> why it is NaN


def stable_seed(name: str, seed: int) -> int:
    """A per-tensor seed that does not depend on the run (Python's hash() is salted)."""
    return zlib.crc32(name.encode()) ^ (seed * 0x9E3779B1 & 0xFFFFFFFF)


def sample_rows(n_rows: int, ne0: int, budget: int, seed: int) -> np.ndarray | None:
    """A sorted uniform sample of rows holding at most `budget` values; None: every row."""
    if n_rows * ne0 <= budget:
        return None
    k = max(1, budget // ne0)
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=k, replace=False)).astype(np.int64)


@dataclass(frozen=True)
class _Group:
    """Rows [start, stop) measured with one importance slice: the whole tensor, or one expert when each
    expert has its own; `rows` the sampled rows relative to start (None: all)."""
    start: int
    stop: int
    weights: np.ndarray | None
    rows: np.ndarray | None


class ErrorSums:
    """The kernel's statistics over a tensor fed slab by slab (rows in order): the same rows, importance
    slices and kernel calls as one pass over the whole tensor when it is one slab; split slabs only sum
    the same per-call statistics in more pieces."""

    def __init__(self, n_rows: int, ne0: int, *, n_mat: int, candidates: Sequence[str],
                 weights: np.ndarray | None, sample_values: int, seed: int, delta: float, threads: int,
                 refused: Mapping[str, str] | None = None) -> None:
        """A type llama-quantize cannot write for this tensor gets no error but a reason, and is not
        measured: one in `refused` (requested type -> why), one whose rows fit neither it nor a fallback,
        one ggml quantizes only with importance weights when there are none."""
        self.ne0, self.delta, self.threads = ne0, delta, threads
        self.requested = list(dict.fromkeys(list(candidates) + list(OSQE_TYPES.values())))
        self.reasons = dict(refused or {})
        self.written: dict[str, str] = {}
        for r in self.requested:
            if r in self.reasons:
                continue
            try:
                w = qtypes.effective(qtypes.get(r), ne0)
            except UsageError as e:
                self.reasons[r] = str(e)
                continue
            if weights is None and w.needs_imatrix:
                self.reasons[r] = f"ggml quantizes {w.name} only with importance weights, and this tensor has none"
                continue
            self.written[r] = w.name
        self.types = [w for w in dict.fromkeys(self.written.values()) if qtypes.get(w).native]
        per_mat = n_rows // n_mat
        each = weights is not None and n_mat > 1   # each expert with its importance slice

        def rows(n: int) -> np.ndarray | None:
            return sample_rows(n, ne0, max(ne0, sample_values * n // n_rows), seed) if sample_values else None

        spans = [(m * per_mat, (m + 1) * per_mat, m) for m in range(n_mat)] if each else [(0, n_rows, 0)]
        self.groups = [_Group(a, b, None if weights is None else weights[m], rows(b - a)) for a, b, m in spans]
        self.sums: list[list[float]] = [[0.0, 0.0, 0, 0] for _ in self.types]
        self.measured = 0

    def add(self, x: np.ndarray, bf16: bool, start: int) -> None:
        """Measure the sampled rows of the slab x (rows start.. of the tensor; F32/F16/BF16 bits)."""
        stop = start + x.shape[0]
        for g in self.groups:
            a, b = max(g.start, start), min(g.stop, stop)
            if a >= b:
                continue
            if g.rows is None:
                sel = None
            else:
                lo, hi = np.searchsorted(g.rows, [a - g.start, b - g.start])
                if lo == hi:
                    continue
                sel = g.rows[lo:hi] + (g.start - a)
            xm = x[a - start:b - start]
            if sel is not None and a == g.start and b == g.stop:
                sel = g.rows                      # the whole group in this slab: the very same call
            self.measured += xm.shape[0] if sel is None else len(sel)
            stats = quant_errors(xm, self.types, g.weights, rows=sel, delta=self.delta, bf16=bf16,
                                 nthreads=self.threads)
            for acc, st in zip(self.sums, stats):
                acc[0] += st.err
                acc[1] += st.signal
                acc[2] += st.near_boundary
                acc[3] += st.counted

    def result(self, max_abs: float = 0.0) -> ErrorMeasurement:
        """A type whose error is not finite wrote a non-finite float16 block scale (values beyond float16's
        range, up to `max_abs`): llama-quantize rejects that output, so the type gets no error, a reason."""
        stats = dict(zip(self.types, self.sums))
        written = self.written
        overflow = {w for w, s in stats.items() if not math.isfinite(s[0])}

        def entry(r: str) -> dict[str, Any]:
            if r in self.reasons:
                return {"type": r, "rel_error": None, "reason": self.reasons[r]}
            w = written[r]
            if w in overflow:
                return {"type": w, "rel_error": None, "overflow": True,
                        "reason": f"{w}'s float16 block scales overflow on values up to {max_abs:.3g}; "
                                  "llama-quantize rejects the result"}
            s = stats.get(w)   # unquantized fallbacks (F16) count as lossless
            return {"type": w, "rel_error": 0.0 if s is None or s[1] <= 0 else s[0] / s[1]}

        errors = {r: entry(r) for r in self.requested}
        osqe = {str(b): math.nan if errors[r]["rel_error"] is None else errors[r]["rel_error"]
                for b, r in OSQE_TYPES.items()}
        undefined: dict[str, str] = {}
        e2, e4 = osqe["2"], osqe["4"]
        fragility = math.log(e2 / e4) if e2 > 0 and e4 > 0 else math.nan
        if math.isnan(fragility):
            undefined["fragility"] = ("a 2- or 4-bit type cannot hold the values" if math.isnan(e2 + e4)
                                      else "OSQE at 2 or 4 bits is 0 (the values are exactly representable)")
        bt = written.get(BOUNDARY_TYPE, BOUNDARY_TYPE)
        bs = stats.get(bt)
        boundary = bs[2] / bs[3] if bs and bs[3] and bt not in overflow else math.nan
        if math.isnan(boundary):
            undefined["boundary"] = (f"{bt} cannot hold the values" if bt in overflow
                                     else "no value has a quantization bin (zero blocks only)")
        return ErrorMeasurement(errors, osqe, fragility, boundary, self.measured, undefined)


def measure_errors(x: np.ndarray, bf16: bool, *, where: str, n_mat: int, candidates: Sequence[str],
                   weights: np.ndarray | None, sample_values: int, seed: int, delta: float,
                   threads: int, max_abs: float = 0.0, refused: Mapping[str, str] | None = None) -> ErrorMeasurement:
    """Errors of the (rows x ne0) matrix `x` of finite values (n_mat stacked experts; weights of shape
    (n_mat, ne0) or None); `where` names the tensor in error messages. sample_values = 0 measures every
    row; otherwise each matrix is measured on a seeded sample of rows, the budget shared pro rata."""
    acc = ErrorSums(x.shape[0], x.shape[1], n_mat=n_mat, candidates=candidates, weights=weights,
                    sample_values=sample_values, seed=seed, delta=delta, threads=threads, refused=refused)
    add_checked(acc, x, bf16, 0, where)
    return acc.result(max_abs)


def add_checked(acc: ErrorSums, x: np.ndarray, bf16: bool, start: int, where: str) -> None:
    """acc.add, the kernel's refusal of NaN/Inf turned into the user's file error."""
    try:
        acc.add(x, bf16, start)
    except ValueError as e:  # the kernel rejects NaN/Inf: the user's file, not a bug
        raise FileFormatError(f"{where}: {e}") from None
