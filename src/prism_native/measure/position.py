"""Spectral position prior: where a layer sits in the chain of same-class matrices, weighted by their gains.

Given the spectral norms s_0..s_{L-1} of one tensor class (e.g. every ffn_down) in layer order, for layer l
    log_before[l] = sum_{i<l} ln s_i      (log of the product of the norms before l)
    log_after[l]  = sum_{i>l} ln s_i      (log of the product after l: a Lipschitz bound on how much the
                                           same-class maps downstream can amplify an error made at l)
and the normalised depth
    depth[l] = B_l / (B_l + A_l),  B_l = sum_{i<l} g_i,  A_l = sum_{i>l} g_i,  g_i = ln(1 + s_i),
g_i being the log Lipschitz bound of a residual block x + f(x) with ||f|| <= s_i: always >= 0, so depth
is in [0, 1], increasing with l, and equal to l / (L - 1) when all norms are equal. Layers followed by
large-norm layers get a small depth (much downstream gain); 1 - depth is the downstream share.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import UsageError


@dataclass(frozen=True)
class SpectralPosition:
    log_before: np.ndarray   # (L,) sum_{i<l} ln s_i (-inf if an earlier norm is 0)
    log_after: np.ndarray    # (L,) sum_{i>l} ln s_i
    depth: np.ndarray        # (L,) gain-weighted depth in [0, 1]


def _exclusive_sums(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sum_{i<l} v_i, sum_{i>l} v_i) for every l; -inf entries propagate without producing NaN."""
    before = np.concatenate(([0.0], np.cumsum(v)[:-1]))
    after = np.concatenate((np.cumsum(v[::-1])[:-1][::-1], [0.0]))
    return before, after


def spectral_position(norms: Sequence[float] | np.ndarray) -> SpectralPosition:
    """Position prior of every layer of one class from its spectral norms (ordered by layer)."""
    s = np.asarray(norms, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise UsageError("spectral_position needs at least one spectral norm")
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise UsageError("spectral norms must be finite and >= 0 (skip tensors whose norm is undefined)")
    with np.errstate(divide="ignore"):
        log_s = np.log(s)
    log_before, log_after = _exclusive_sums(log_s)
    gb, ga = _exclusive_sums(np.log1p(s))
    total = gb + ga
    linear = np.arange(s.size) / (s.size - 1) if s.size > 1 else np.full(1, 0.5)
    with np.errstate(invalid="ignore", divide="ignore"):
        depth = np.where(total > 0, gb / np.where(total > 0, total, 1.0), linear)
    return SpectralPosition(log_before, log_after, depth)
