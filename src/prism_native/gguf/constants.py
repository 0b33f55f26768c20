"""GGUF's numbers and key names as ggml's gguf.cpp and llama.cpp use them, and GGML_PAD."""
from __future__ import annotations

import gguf
import numpy as np

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3                # gguf.h GGUF_VERSION: what gguf_init_empty writes
VERSIONS = (2, 3)               # gguf.cpp: 0 invalid, 1 no longer supported, > GGUF_VERSION (3) too new
GGUF_HEADER_BYTES = 24          # magic, version, tensor count, kv count
DEFAULT_ALIGNMENT = 32          # GGUF_DEFAULT_ALIGNMENT
MAX_STRING_BYTES = 1 << 30      # GGUF_MAX_STRING_LENGTH
MAX_ARRAY_ELEMENTS = 1 << 30    # GGUF_MAX_ARRAY_ELEMENTS
MAX_NAME_BYTES = 63             # GGML_MAX_NAME (64) counts the terminating NUL
MAX_DIMS = 4                    # GGML_MAX_DIMS
INT64_MAX = (1 << 63) - 1
GGML_QNT_VERSION = 2            # ggml.h, written to general.quantization_version

KEY_ALIGNMENT = "general.alignment"
KEY_QUANTIZATION_VERSION = "general.quantization_version"
KEY_FILE_TYPE = "general.file_type"
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")   # gguf-split's, removed by llama-quantize

VT = gguf.GGUFValueType        # a key/value's value type

# the little-endian layout of each scalar value type, as numpy reads it and as struct packs it
SCALAR_DTYPES: dict[int, np.dtype] = {
    int(VT.UINT8): np.dtype("<u1"), int(VT.INT8): np.dtype("<i1"), int(VT.UINT16): np.dtype("<u2"),
    int(VT.INT16): np.dtype("<i2"), int(VT.UINT32): np.dtype("<u4"), int(VT.INT32): np.dtype("<i4"),
    int(VT.FLOAT32): np.dtype("<f4"), int(VT.BOOL): np.dtype("?"), int(VT.UINT64): np.dtype("<u8"),
    int(VT.INT64): np.dtype("<i8"), int(VT.FLOAT64): np.dtype("<f8"),
}
SCALAR_FORMATS: dict[int, str] = {
    int(VT.UINT8): "<B", int(VT.INT8): "<b", int(VT.UINT16): "<H", int(VT.INT16): "<h", int(VT.UINT32): "<I",
    int(VT.INT32): "<i", int(VT.FLOAT32): "<f", int(VT.BOOL): "<B", int(VT.UINT64): "<Q", int(VT.INT64): "<q",
    int(VT.FLOAT64): "<d",
}


def pad(n: int, align: int = DEFAULT_ALIGNMENT) -> int:
    """GGML_PAD: n rounded up to a multiple of align."""
    return (n + align - 1) // align * align


def ggml_n_dims(shape: tuple[int, ...] | list[int]) -> int:
    """ggml_n_dims: trailing dimensions of size 1 do not count (a [576, 1] tensor is 1-D)."""
    for i in range(len(shape) - 1, 0, -1):
        if shape[i] > 1:
            return i + 1
    return 1
