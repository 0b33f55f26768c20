"""PL-Alpha-Hill: Hill estimator of the power-law tail exponent of the eigenvalue distribution.

For descending eigenvalues lambda_1 >= ... >= lambda_N and a tail of k eigenvalues above
x_min = lambda_{k+1}:
    alpha = 1 + k / sum_{i=1..k} ln(lambda_i / lambda_{k+1})
(AlphaQuant's form; the density of the tail is ~ lambda^-alpha). The same formula applies to a weighted
discrete measure (a quadrature of the spectrum), which is how the randomised mode uses it.
"""
from __future__ import annotations

import math
from typing import Union

import numpy as np

from ..errors import UsageError

KPolicy = Union[str, int]
K_POLICIES = ("alphaquant", "median")


def tail_size(n: int, policy: KPolicy = "alphaquant") -> int:
    """Tail size k for N = n eigenvalues.

    "alphaquant": k = max(10, floor(0.1 N)) (default; a fixed 10% quantile, comparable across shapes).
    "median":     k = (N - 1) // 2, so x_min is AlphaPruning's median eigenvalue (lambda_asc[N // 2]).
    int:          that k for every tensor.
    """
    if isinstance(policy, (int, np.integer)) and not isinstance(policy, bool):
        if policy < 1:
            raise UsageError(f"tail size k must be >= 1, got {policy}")
        return int(policy)
    if policy == "alphaquant":
        return max(10, int(math.floor(0.1 * n)))
    if policy == "median":
        return (n - 1) // 2
    raise UsageError(f"unknown k policy {policy!r}; use one of {K_POLICIES} or a positive integer")


def hill_alpha(nodes: np.ndarray, weights: np.ndarray | None, k: int, zero_tol: float) -> float:
    """Hill alpha over descending `nodes` with `weights` (eigenvalue counts; None = 1 each).

    x_min is the node at which the mass strictly above reaches k (lambda_{k+1} for unit weights).
    Returns NaN when the tail does not fit (hill_fit says why)."""
    return hill_fit(nodes, weights, k, zero_tol)[0]


def hill_fit(nodes: np.ndarray, weights: np.ndarray | None, k: int, zero_tol: float) -> tuple[float, str | None]:
    """(alpha, None), or (NaN, why the tail does not fit): fewer than k + 1 eigenvalues, x_min <= zero_tol
    (rank <= k), or a flat tail (all k equal to x_min)."""
    nan = float("nan")
    if k < 1:
        return nan, "tail size k < 1"
    w = np.ones(nodes.size) if weights is None else weights
    mass = np.cumsum(w)
    j = int(np.searchsorted(mass, k, side="right"))  # first node with mass[j] > k
    if j >= nodes.size or j == 0:
        return nan, f"fewer than k + 1 = {k + 1} eigenvalues"
    x_min = float(nodes[j])
    if not x_min > zero_tol:
        return nan, f"rank <= k = {k}: the tail reaches the zero eigenvalues"
    s = float(np.dot(w[:j], np.log(nodes[:j] / x_min)))
    return (1.0 + k / s, None) if s > 0 else (nan, "flat tail: the top k eigenvalues are equal")
