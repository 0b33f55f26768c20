"""Per-tensor metrics of prism_native (docs/metrics.md): pure functions of a 2-D float matrix W stored
(rows, n_per_row) as in GGUF.

Spectral / structural (this package so far): PL-Alpha-Hill, spectral norm, spectral dominance, matrix
imbalance (`spectral_metrics`), and the cross-layer spectral position prior (`spectral_position`).
"""
from __future__ import annotations

from .hill import hill_alpha, tail_size
from .position import SpectralPosition, spectral_position
from .spectral import Plan, SpectralConfig, SpectralMetrics, plan, spectral_metrics
from .structure import matrix_imbalance

__all__ = [
    "Plan", "SpectralConfig", "SpectralMetrics", "SpectralPosition", "hill_alpha", "matrix_imbalance",
    "plan", "spectral_metrics", "spectral_position", "tail_size",
]
