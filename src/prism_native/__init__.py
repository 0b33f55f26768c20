"""prism_native: calibration-free mixed-precision quantization of llama.cpp GGUF models.

Pipeline: read (gguf) -> classes -> metrics -> score -> allocate -> recipe -> write.

Public API (imported on first use, so that `import prism_native` stays cheap):
    quantize(x, "Q4_K", imatrix=None)            ggml bytes of a matrix, bit-exact (ggml_quantize_chunk)
    dequantize(data, "Q4_K", shape)              float32 values of ggml bytes (the type's to_float)
    quantize_model(src, dst, plan_or_types, imatrix=None, threads=0, progress=True)
                                                 the quantized GGUF, byte for byte llama-quantize's
    estimate_imatrix(src)                        a data-free importance matrix (.save(path): llama-imatrix's GGUF;
                                                 .to_imatrix(): for quantize_model's imatrix=)
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._native import cpu_features  # noqa: F401  (re-exported: which SIMD kernels are active)
from ._version import __version__

_LAZY = {"quantize": "prism_native.quant", "dequantize": "prism_native.quant",
         "quantize_model": "prism_native.write.quantize", "QuantizeResult": "prism_native.write.quantize",
         "estimate_imatrix": "prism_native.measure.importance"}

if TYPE_CHECKING:
    from .quant import dequantize, quantize
    from .measure.importance import estimate_imatrix
    from .write.quantize import QuantizeResult, quantize_model

__all__ = ["cpu_features", "dequantize", "estimate_imatrix", "quantize", "quantize_model", "QuantizeResult",
           "__version__"]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'prism_native' has no attribute '{name}'")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
