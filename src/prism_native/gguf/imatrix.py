"""llama-imatrix's GGUF format (tools/imatrix/imatrix.cpp save_imatrix): its keys and how it is written.

Keys general.type = "imatrix", imatrix.datasets (array of strings), imatrix.chunk_count and
imatrix.chunk_size (u32), in that order; then, for every entry in name order, `<name>.in_sum2` (F32,
ne = [ne0, n_mat]: raw sums of squared inputs) and `<name>.counts` (F32, ne = [1, n_mat]). The bytes
are laid out by gguf/writer.py (ggml's own serialisation) and written under a temporary name; the
reader is read/imatrix.py.
"""
from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from pathlib import Path

import gguf
import numpy as np

from ..files import AtomicOutput, check_destination, check_space
from .constants import VT, pad
from .writer import KV, WriteLayout, WriteTensor

KV_DATASETS = "imatrix.datasets"
KV_CHUNK_COUNT = "imatrix.chunk_count"
KV_CHUNK_SIZE = "imatrix.chunk_size"

F32 = int(gguf.GGMLQuantizationType.F32)


def _string_array(key: str, values: Iterable[str]) -> KV:
    """gguf_set_arr_str: type ARRAY, element type STRING, u64 count, then each string (u64 length, bytes)."""
    encoded = [v.encode() for v in values]
    body = b"".join(struct.pack("<Q", len(v)) + v for v in encoded)
    return KV.make(key, struct.pack("<iiQ", int(VT.ARRAY), int(VT.STRING), len(encoded)) + body)


def imatrix_layout(entries: Mapping[str, tuple[np.ndarray, np.ndarray]], datasets: Iterable[str],
                   chunk_count: int, chunk_size: int) -> tuple[WriteLayout, list[np.ndarray]]:
    """The file's layout and each tensor's float32 data, in file order. `entries`: name -> (in_sum2 of
    shape (n_mat, ne0), counts of n_mat values)."""
    kvs = (KV.string("general.type", "imatrix"), _string_array(KV_DATASETS, datasets),
           KV.u32(KV_CHUNK_COUNT, chunk_count), KV.u32(KV_CHUNK_SIZE, chunk_size))
    tensors, data = [], []
    for name in sorted(entries):
        in_sum2, counts = entries[name]
        s = np.ascontiguousarray(in_sum2, dtype="<f4")
        s = s.reshape(-1, s.shape[-1])
        c = np.ascontiguousarray(counts, dtype="<f4").reshape(-1)
        for suffix, a, shape in ((".in_sum2", s.reshape(-1), (s.shape[1], s.shape[0])), (".counts", c, (1, c.size))):
            tensors.append(WriteTensor(name + suffix, shape, F32, a.nbytes))
            data.append(a)
    return WriteLayout(kvs, tuple(tensors)), data


def write_imatrix(path: str | Path, entries: Mapping[str, tuple[np.ndarray, np.ndarray]], datasets: Iterable[str],
                  chunk_count: int, chunk_size: int, inputs: Iterable[str | Path] = ()) -> Path:
    """Write an importance matrix to `path` (never over one of `inputs`); the file appears complete or not
    at all."""
    final = check_destination(path, inputs)
    layout, data = imatrix_layout(entries, datasets, chunk_count, chunk_size)
    check_space(final, layout.file_nbytes)
    with AtomicOutput(final) as out:
        out.write(layout.meta())
        for t, a in zip(layout.tensors, data):
            out.write(a)
            out.zeros(pad(t.nbytes, layout.alignment) - t.nbytes)
        out.commit()
    return final
