"""An importance matrix written as llama-imatrix writes its GGUF (tools/imatrix/imatrix.cpp save_imatrix).

Keys general.type = "imatrix", imatrix.datasets (array of strings), imatrix.chunk_count and
imatrix.chunk_size (u32), in that order; then, for every entry in name order, `<name>.in_sum2` (F32,
ne = [ne0, n_mat]: raw sums of squared inputs) and `<name>.counts` (F32, ne = [1, n_mat]). The bytes
are laid out by write.gguf_writer (ggml's own serialisation) and written under a temporary name.
"""
from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np

from ..gguf.constants import VT, pad
from ..gguf.writer import KV, WriteLayout, WriteTensor
from ..measure.importance import ImportanceEstimate
from ..read.imatrix import KV_CHUNK_COUNT, KV_CHUNK_SIZE, KV_DATASETS
from .output import AtomicOutput, check_destination, check_space

F32 = int(gguf.GGMLQuantizationType.F32)


def _string_array(key: str, values: list[str]) -> KV:
    """gguf_set_arr_str: type ARRAY, element type STRING, u64 count, then each string (u64 length, bytes)."""
    body = b"".join(struct.pack("<Q", len(v.encode())) + v.encode() for v in values)
    return KV.make(key, struct.pack("<iiQ", int(VT.ARRAY), int(VT.STRING), len(values)) + body)


def imatrix_layout(est: ImportanceEstimate) -> tuple[WriteLayout, list[np.ndarray]]:
    """The file's layout and each tensor's float32 data, in file order."""
    kvs = (KV.string("general.type", "imatrix"), _string_array(KV_DATASETS, [est.method]),
           KV.u32(KV_CHUNK_COUNT, est.chunk_count), KV.u32(KV_CHUNK_SIZE, est.chunk_size))
    tensors, data = [], []
    for name in sorted(est.entries):
        e = est.entries[name]
        n_mat, ne0 = e.in_sum2.shape
        for suffix, arr, shape in ((".in_sum2", e.in_sum2, (ne0, n_mat)), (".counts", e.counts, (1, n_mat))):
            a = np.ascontiguousarray(arr, dtype="<f4").reshape(-1)
            tensors.append(WriteTensor(name + suffix, shape, F32, a.nbytes))
            data.append(a)
    return WriteLayout(kvs, tuple(tensors)), data


def write_imatrix(est: ImportanceEstimate, path: str | Path, inputs: tuple[Path, ...] = ()) -> Path:
    """Write the estimate to `path` (never over one of `inputs`); the file appears complete or not at all."""
    final = check_destination(path, inputs)
    layout, data = imatrix_layout(est)
    check_space(final, layout.file_nbytes)
    with AtomicOutput(final) as out:
        out.write(layout.meta())
        for t, a in zip(layout.tensors, data):
            out.write(a)
            out.zeros(pad(t.nbytes, layout.alignment) - t.nbytes)
        out.commit()
    return final
