"""prism_native: calibration-free mixed-precision quantization planning for llama.cpp GGUF models.

Pipeline: read (gguf) -> classes -> metrics -> score -> allocate -> recipe.
"""
from __future__ import annotations

__version__ = "0.1.0"

from ._native import cpu_features  # noqa: F401  (re-exported: which SIMD kernels are active)

__all__ = ["cpu_features", "__version__"]
