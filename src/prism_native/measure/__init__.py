"""Measure: the structural metrics of one weight matrix and the analysis of a whole model.

Spectral (`spectral`, `eigen`, `hill`): PL-Alpha-Hill, spectral norm and dominance; `structure`: matrix
imbalance; `position`: the cross-layer spectral position prior. `analyze` runs them, with the
quantization errors of the native kernels, over every quantizable tensor of a model.
"""
from __future__ import annotations

from .hill import hill_alpha, tail_size
from .position import SpectralPosition, spectral_position
from .spectral import SpectralConfig, SpectralMethod, SpectralMetrics, spectral_method, spectral_metrics
from .structure import matrix_imbalance

__all__ = [
    "SpectralConfig", "SpectralMethod", "SpectralMetrics", "SpectralPosition", "hill_alpha", "matrix_imbalance",
    "spectral_method", "spectral_metrics", "spectral_position", "tail_size",
]
