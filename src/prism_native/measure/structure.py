"""Structural per-tensor statistics from one streaming pass: row / column norms, Frobenius norm, imbalance.

Convention: W is (rows, n_per_row) as GGUF stores it (gguf's numpy view and `dequantize` give this
shape): a row is one output channel, a column one input feature.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError


@dataclass(frozen=True)
class LineNorms:
    """Squared L2 norms of every row and column (float64 accumulation) and their total."""
    row_sq: np.ndarray   # (rows,)
    col_sq: np.ndarray   # (n_per_row,)

    @property
    def frobenius_sq(self) -> float:
        return float(self.row_sq.sum())


def as_matrix(w: np.ndarray) -> np.ndarray:
    """float32 2-D view (copy only when the dtype differs); raise UsageError on anything else."""
    a = np.asarray(w)
    if a.ndim != 2:
        raise UsageError(f"metrics need a 2-D matrix (rows x n_per_row), got shape {a.shape}")
    if a.size == 0:
        raise UsageError(f"metrics need a non-empty matrix, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise UsageError(f"metrics need a floating-point matrix, got {a.dtype}")
    return a.astype(np.float32, copy=False)


def any_line_norms(w: np.ndarray) -> LineNorms:
    """Row and column squared norms in one native pass (squares and sums in double: 0.03 s on 14336x4096
    against 0.12 s for numpy's chunked float32 squares); NaN/Inf values give non-finite norms."""
    from .._native import line_norms as native_line_norms
    w = as_matrix(w)
    if w.flags.c_contiguous:
        row_sq, col_sq = native_line_norms(w)
    elif w.T.flags.c_contiguous:   # a transposed view: the same pass with rows and columns swapped
        col_sq, row_sq = native_line_norms(w.T)
    else:
        row_sq, col_sq = native_line_norms(np.ascontiguousarray(w))
    return LineNorms(row_sq, col_sq)


def line_norms(w: np.ndarray) -> LineNorms:
    """any_line_norms of a finite matrix; UsageError for NaN/Inf (a float32 square never overflows double)."""
    norms = any_line_norms(w)
    if not np.isfinite(norms.row_sq.sum()):
        raise UsageError(f"matrix of shape {np.shape(w)} has non-finite values")
    return norms


def coefficient_of_variation(norms: np.ndarray) -> float:
    """std / mean (population std); 0 for a single norm, NaN when the mean is 0."""
    mean = float(norms.mean())
    return float(norms.std() / mean) if mean > 0 else float("nan")


@dataclass(frozen=True)
class Imbalance:
    row_cv: float
    col_cv: float

    @property
    def value(self) -> float:
        """max(row CV, column CV); NaN for a zero matrix."""
        return max(self.row_cv, self.col_cv) if not np.isnan(self.row_cv + self.col_cv) else float("nan")


def imbalance_from_norms(norms: LineNorms) -> Imbalance:
    return Imbalance(coefficient_of_variation(np.sqrt(norms.row_sq)),
                     coefficient_of_variation(np.sqrt(norms.col_sq)))


def matrix_imbalance(w: np.ndarray) -> float:
    """Matrix imbalance: max of the coefficients of variation of the row L2 norms and column L2 norms."""
    return imbalance_from_norms(line_norms(w)).value
