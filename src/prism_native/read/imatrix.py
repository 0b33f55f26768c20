"""Importance matrices written by llama-imatrix, read the way llama-quantize reads them.

Two formats (tools/imatrix/imatrix.cpp writes them, common/imatrix-loader.cpp and
tools/quantize/quantize.cpp:load_imatrix read them):
- GGUF: per weight `<name>.in_sum2` (F32, n_mat x ne0, raw sums of squared activations) and
  `<name>.counts` (F32, n_mat); importance = in_sum2 / float(lround(count)), and 1.0 where count <= 0.
  llama-quantize refuses a GGUF imatrix without imatrix.datasets/chunk_count/chunk_size.
- legacy .dat: int32 n_entries, then per entry int32 len, name, int32 ncall, int32 nval, f32[nval]
  holding mean*ncall; importance = v / float(ncall) (v as stored when ncall <= 0); an optional trailer.
The division is done in float32, as llama-quantize does it, because the quantizers see these floats.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FileFormatError
from ..gguf.constants import GGUF_MAGIC
from ..gguf.imatrix import KV_CHUNK_COUNT, KV_CHUNK_SIZE, KV_DATASETS, write_imatrix
from .bounded import MiB, read_bytes

MAX_DAT_BYTES = 4096 * MiB     # a legacy .dat is read whole
MAX_COUNT = 2.0 ** 62          # a count of calls; float32 counts beyond this are damage


@dataclass
class Imatrix:
    path: Path
    format: str                                   # "gguf" or "dat"
    entries: dict[str, np.ndarray]                # name -> float32 importance, flattened (n_mat * ne0)
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    warnings: list[str] = field(default_factory=list)

    def weights_for(self, tensor_name: str, ne0: int, n_mat: int = 1) -> np.ndarray | None:
        """Importance per column for each matrix of a tensor, shape (n_mat, ne0), or None if absent.

        Like llama-quantize, a size other than ne0*n_mat is an error, except for token_embd which is
        then quantized without importance weights."""
        v = self.entries.get(tensor_name)
        if v is None:
            return None
        if v.size != ne0 * n_mat:
            if "token_embd" in tensor_name:
                return None
            raise FileFormatError(f"{self.path}: imatrix entry {tensor_name} has {v.size} values, "
                             f"the tensor needs {ne0 * n_mat} ({n_mat} x {ne0})")
        return v.reshape(n_mat, ne0)

    def uncovered(self, tensor_names: list[str]) -> list[str]:
        """Tensors llama-quantize will quantize without importance weights."""
        return [n for n in tensor_names if n not in self.entries]

    def identity(self) -> dict[str, object]:
        return {"path": str(self.path), "format": self.format, "entries": len(self.entries),
                "datasets": self.datasets, "chunk_count": self.chunk_count, "chunk_size": self.chunk_size}


def load_imatrix(path: str | Path) -> Imatrix:
    p = Path(path)
    if not p.is_file():
        raise FileFormatError(f"{p}: imatrix file {'is not a regular file' if p.exists() else 'not found'}")
    with open(p, "rb") as f:
        head = f.read(4)
    imat = _load_gguf(p) if head == GGUF_MAGIC else _load_dat(p)
    for name, v in imat.entries.items():
        if not np.all(np.isfinite(v)):
            raise FileFormatError(f"{p}: imatrix entry {name} contains non-finite values")
        if np.any(v < 0):          # sums of squares; the quantizers' weights cannot be negative
            raise FileFormatError(f"{p}: imatrix entry {name} contains negative values")
    if not imat.entries:
        raise FileFormatError(f"{p}: imatrix holds no entries")
    return imat


def _load_dat(p: Path) -> Imatrix:
    data = read_bytes(p, "imatrix file", MAX_DAT_BYTES)
    pos = 0

    def take(fmt: str) -> tuple:
        nonlocal pos
        size = struct.calcsize(fmt)
        if pos + size > len(data):
            raise FileFormatError(f"{p}: not an imatrix file (neither GGUF nor a complete legacy .dat)")
        out = struct.unpack_from(fmt, data, pos)
        pos += size
        return out

    (n_entries,) = take("<i")
    if n_entries < 1 or n_entries > 1_000_000:
        raise FileFormatError(f"{p}: not an imatrix file (bad entry count {n_entries})")
    entries: dict[str, np.ndarray] = {}
    warnings: list[str] = []
    for _ in range(n_entries):
        (ln,) = take("<i")
        if ln < 0 or ln > 4096:
            raise FileFormatError(f"{p}: not an imatrix file (bad name length {ln})")
        (raw,) = take(f"<{ln}s")
        name = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")
        ncall, nval = take("<ii")
        if nval < 1:
            raise FileFormatError(f"{p}: imatrix entry {name} has {nval} values")
        if pos + 4 * nval > len(data):
            raise FileFormatError(f"{p}: imatrix file is truncated (entry {name})")
        v = np.frombuffer(data, dtype="<f4", count=nval, offset=pos).astype(np.float32)
        pos += 4 * nval
        if ncall > 0:
            v = v / np.float32(ncall)
        else:
            warnings.append(f"imatrix entry {name} has ncall={ncall}: values used as stored (as llama-quantize does)")
        entries[name] = v
    chunk_count, datasets = 0, []
    if pos + 4 <= len(data):
        (chunk_count,) = take("<i")
        if pos + 4 <= len(data):
            (ln,) = take("<i")
            if 0 < ln <= len(data) - pos:
                datasets.append(data[pos:pos + ln].decode("utf-8", errors="replace"))
    return Imatrix(p, "dat", entries, datasets, chunk_count, 0, warnings)


def _load_gguf(p: Path) -> Imatrix:
    """llama-imatrix's GGUF output, through the validating reader (layout.read_layout)."""
    import gguf

    from ..gguf.layout import field_type, read_layout

    data = np.memmap(p, mode="r")
    lay = read_layout(p, data)
    fields = lay.fields
    missing = [k for k in (KV_DATASETS, KV_CHUNK_COUNT, KV_CHUNK_SIZE) if k not in fields]
    if missing:
        raise FileFormatError(f"{p}: GGUF imatrix lacks {', '.join(missing)} (llama-quantize refuses it)")
    for key, want in ((KV_DATASETS, "arr[str]"), (KV_CHUNK_COUNT, "u32"), (KV_CHUNK_SIZE, "u32")):
        if field_type(fields[key]) != want:
            raise FileFormatError(f"{p}: key '{key}' has wrong type {field_type(fields[key])} but expected type {want}")
    ds = fields[KV_DATASETS]
    datasets = [bytes(ds.parts[i]).decode("utf-8", errors="replace") for i in ds.data]
    chunk_count = int(fields[KV_CHUNK_COUNT].parts[-1][0])
    chunk_size = int(fields[KV_CHUNK_SIZE].parts[-1][0])
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    for t in lay.tensors:
        for suffix, dest in ((".in_sum2", sums), (".counts", counts)):
            if t.name.endswith(suffix):
                if t.ggml_type != gguf.GGMLQuantizationType.F32:
                    raise FileFormatError(f"{p}: {t.name} must be F32")
                dest[t.name[: -len(suffix)]] = np.asarray(data[t.offset:t.offset + t.n_bytes]).view("<f4").astype(np.float32)
    entries: dict[str, np.ndarray] = {}
    warnings: list[str] = []
    for name in sorted(set(sums) | set(counts)):
        if name not in sums or name not in counts:
            raise FileFormatError(f"{p}: imatrix entry {name} lacks its {'in_sum2' if name not in sums else 'counts'}")
        s, c = sums[name], counts[name]
        if c.size == 0 or s.size % c.size:
            raise FileFormatError(f"{p}: imatrix entry {name}: {s.size} sums do not split into {c.size} matrices")
        ne0 = s.size // c.size
        if not np.all(np.abs(c) < MAX_COUNT):     # NaN too; lround of these is undefined in C
            raise FileFormatError(f"{p}: imatrix entry {name} has a count out of range "
                                  f"({c[~(np.abs(c) < MAX_COUNT)][0]:g})")
        cnt = np.array([float(round_half_away(float(x))) for x in c], dtype=np.float32)
        out = np.empty_like(s)
        for j, cj in enumerate(cnt):
            sl = slice(j * ne0, (j + 1) * ne0)
            if cj > 0:
                out[sl] = s[sl] / cj
            else:
                out[sl] = 1.0
                warnings.append(f"imatrix entry {name} matrix {j} has count {c[j]:g}: weights 1 (as llama-quantize)")
        entries[name] = out
    return Imatrix(p, "gguf", entries, datasets, chunk_count, chunk_size, warnings)


def round_half_away(x: float) -> int:
    """C's lround: nearest integer, halves away from zero."""
    import math

    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


# --- writers (tests, and converting between formats) -------------------------------------------

def write_dat(path: str | Path, entries: dict[str, tuple[np.ndarray, int]], chunk_count: int = 0,
              dataset: str = "") -> None:
    """Legacy format: entries name -> (stored values = mean*ncall, ncall)."""
    out = [struct.pack("<i", len(entries))]
    for name, (v, ncall) in entries.items():
        b = name.encode()
        v = np.ascontiguousarray(v, dtype="<f4").reshape(-1)
        out += [struct.pack("<i", len(b)), b, struct.pack("<ii", ncall, v.size), v.tobytes()]
    out += [struct.pack("<i", chunk_count), struct.pack("<i", len(dataset.encode())), dataset.encode()]
    Path(path).write_bytes(b"".join(out))


def write_gguf(path: str | Path, entries: dict[str, tuple[np.ndarray, np.ndarray]], datasets: list[str],
               chunk_count: int, chunk_size: int) -> None:
    """GGUF format: entries name -> (in_sum2 of shape (n_mat, ne0), counts of shape (n_mat,))."""
    write_imatrix(path, entries, datasets, chunk_count, chunk_size)
