"""Structural per-tensor statistics from one streaming pass: row / column norms, Frobenius norm, imbalance.

Convention: W is (rows, n_per_row) as GGUF stores it (gguf's numpy view and `dequantize` give this
shape): a row is one output channel, a column one input feature.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import PrismError

# Rows per chunk target this many bytes of float32 temporaries: bounded memory for 150k x 4k embeddings.
_CHUNK_BYTES = 32 << 20


@dataclass(frozen=True)
class LineNorms:
    """Squared L2 norms of every row and column (float64 accumulation) and their total."""
    row_sq: np.ndarray   # (rows,)
    col_sq: np.ndarray   # (n_per_row,)

    @property
    def frobenius_sq(self) -> float:
        return float(self.row_sq.sum())


def as_matrix(w: np.ndarray) -> np.ndarray:
    """float32 2-D view (copy only when the dtype differs); raise PrismError on anything else."""
    a = np.asarray(w)
    if a.ndim != 2:
        raise PrismError(f"metrics need a 2-D matrix (rows x n_per_row), got shape {a.shape}")
    if a.size == 0:
        raise PrismError(f"metrics need a non-empty matrix, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        raise PrismError(f"metrics need a floating-point matrix, got {a.dtype}")
    return a.astype(np.float32, copy=False)


def line_norms(w: np.ndarray) -> LineNorms:
    """Row and column squared norms in one pass over row chunks; rejects non-finite matrices."""
    w = as_matrix(w)
    rows, n = w.shape
    step = max(1, _CHUNK_BYTES // (4 * n))
    row_sq = np.empty(rows, dtype=np.float64)
    col_sq = np.zeros(n, dtype=np.float64)
    for i in range(0, rows, step):
        sq = np.square(w[i:i + step])
        row_sq[i:i + step] = sq.sum(axis=1, dtype=np.float64)
        col_sq += sq.sum(axis=0, dtype=np.float64)
    if not np.isfinite(row_sq.sum()):
        raise PrismError(f"matrix of shape {w.shape} has non-finite values (or squares overflowing float32)")
    return LineNorms(row_sq, col_sq)


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
