"""A GGUF model as llama-quantize sees it: metadata, tensor list, and tensor values one at a time.

Files are memory-mapped read-only, never loaded whole, and their structure is checked by `layout`
(counts, offsets, types, alignment, overlaps) and the keys prism_native reads by `keys` before
anything else looks at them. Split sets (`name-00001-of-00003.gguf`) are opened as one model. Every
problem with the input file becomes a one-line FileFormatError that names the file and the key or
tensor, instead of a traceback from numpy or gguf.
"""
from __future__ import annotations

import errno
import math
import mmap
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import gguf
import numpy as np

from .. import qtypes
from ..errors import FileFormatError, PrismError, quoted
from ..gguf.constants import ggml_n_dims
from ..gguf.layout import ReadLayout, read_layout
from ..qtypes import QType
from .keys import check_keys

DIRECT_TYPES = frozenset({"F32", "F16", "BF16"})  # read without dequantizing
_SPLIT_NAME = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
_DEQUANT_CHUNK_VALUES = 1 << 22  # rows are dequantized in slabs of ~16 MiB of float32


def trimmed_shape(shape: Sequence[int]) -> list[int]:
    """ggml shape without trailing 1s, as llama.cpp prints it (ne0 first)."""
    dims = list(shape)
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    return dims


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the model. `shape` is in ggml order: shape[0] (ne0) is the row length."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    n_bytes: int
    part: int    # index of the split file holding the data
    offset: int  # absolute byte offset of the data in that file

    @property
    def qtype(self) -> QType:
        return qtypes.get(self.ggml_type)

    @property
    def type_name(self) -> str:
        return self.qtype.name

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def n_per_row(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def n_rows(self) -> int:
        return self.n_elements // max(self.n_per_row, 1)

    @property
    def n_dims(self) -> int:
        return ggml_n_dims(self.shape)

    @property
    def requantized(self) -> bool:
        """Values come from dequantizing (llama-quantize then needs --allow-requantize)."""
        return self.type_name not in DIRECT_TYPES


@dataclass(frozen=True)
class Hparams:
    """The hyper-parameters llama-quantize's type rules look at (llama_model::load_hparams)."""

    arch: str
    n_layer_all: int        # {arch}.block_count, nextn/MTP layers included
    n_layer_nextn: int = 0  # {arch}.nextn_predict_layers
    n_expert: int = 0       # {arch}.expert_count
    n_head: int = 0         # {arch}.attention.head_count (first layer when per-layer)
    n_head_kv: int = 0      # {arch}.attention.head_count_kv, defaults to n_head
    n_embd: int = 0

    @property
    def n_layer(self) -> int:
        return self.n_layer_all - self.n_layer_nextn

    @property
    def n_gqa(self) -> int:
        return self.n_head // self.n_head_kv if self.n_head_kv else 0


@dataclass(frozen=True)
class _Part:
    """One opened file of the model: its checked structure and its read-only memory map."""

    layout: ReadLayout
    data: np.ndarray


def _open_part(path: Path) -> _Part:
    if not path.exists():
        raise FileFormatError(f"{path}: no such file")
    if not path.is_file():
        raise FileFormatError(f"{path}: not a regular file")
    try:
        if path.stat().st_size == 0:  # numpy cannot map an empty file
            raise FileFormatError(f"{path}: empty file, not a GGUF model")
        data = np.memmap(path, mode="r")
    except OSError as e:
        if e.errno == errno.ENOMEM:   # mmap: the file does not fit the address space left (ulimit -v)
            raise FileFormatError(f"{path}: {path.stat().st_size:,} bytes do not fit in this process's address "
                                  "space (mmap failed; raise ulimit -v or use a 64-bit system)") from None
        raise FileFormatError(f"{path}: cannot read: {e.strerror or e}") from None
    return _Part(read_layout(path, data), data)


def split_parts(path: Path) -> list[Path]:
    """All files of a split set given any of its parts; [path] for a single file."""
    m = _SPLIT_NAME.match(path.name)
    if not m:
        return [path]
    count = int(m.group("count"))
    if count < 1 or not 1 <= int(m.group("no")) <= count:
        raise FileFormatError(f"{path}: bad split file name (part {m.group('no')} of {count})")
    return [path.with_name(f"{m.group('prefix')}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def _field_value(field: Any) -> Any:
    try:
        v = field.contents()
    except (UnicodeDecodeError, ValueError):
        return None
    return v.item() if isinstance(v, np.generic) else v


class Model:
    """An opened GGUF model (single file or split set). Tensors keep the file order."""

    def __init__(self, path: str | Path) -> None:
        given = Path(path)
        self.parts: tuple[Path, ...] = tuple(split_parts(given))
        self.path = self.parts[0]
        missing = [p for p in self.parts if not p.exists()]
        if missing and len(self.parts) > 1:
            idx = self.parts.index(missing[0]) + 1
            raise FileFormatError(f"{missing[0]}: part {idx} of the {len(self.parts)}-part split set "
                             f"{given.name} is missing")
        self._parts = [_open_part(p) for p in self.parts]
        for part in self._parts:
            check_keys(part.layout.path, part.layout.fields)
        self.fields: dict[str, Any] = dict(self._parts[0].layout.fields)
        self._check_split()
        self.tensors: tuple[TensorInfo, ...] = tuple(self._tensor_infos())
        if not self.tensors:
            raise FileFormatError(f"{self.path}: holds no tensors (a vocabulary-only GGUF?); nothing to quantize")
        self._by_name = {t.name: t for t in self.tensors}
        if len(self._by_name) != len(self.tensors):
            dup = next(t.name for t in self.tensors if sum(u.name == t.name for u in self.tensors) > 1)
            raise FileFormatError(f"{self.path}: tensor {quoted(dup)} appears in more than one split part")
        arch = self.kv("general.architecture")
        if not isinstance(arch, str) or not arch:
            raise FileFormatError(f"{self.path}: no general.architecture key; not a llama.cpp model")
        self.arch: str = arch

    # -- structure ---------------------------------------------------------------------------------
    def _check_split(self) -> None:
        n = len(self.parts)
        declared = self.kv("split.count", 0) or 0
        if n == 1:
            if declared > 1:
                raise FileFormatError(f"{self.path}: part of a {declared}-part split set, but its name does "
                                      "not follow the NAME-00001-of-0000N.gguf pattern; open it by that name")
            return
        for i, part in enumerate(self._parts):
            f = part.layout.fields.get("split.count")
            count = _field_value(f) if f is not None else None
            if count != n:
                raise FileFormatError(f"{self.parts[i]}: split.count is {count}, the file names say {n}")
            no = part.layout.fields.get("split.no")
            if no is not None and _field_value(no) != i:
                raise FileFormatError(f"{self.parts[i]}: split.no is {_field_value(no)}, expected {i}")
            f = part.layout.fields.get("split.tensors.count")
            if i and f is not None and _field_value(f) != self.kv("split.tensors.count"):
                raise FileFormatError(f"{self.parts[i]}: part of another split set (split.tensors.count "
                                      f"{_field_value(f)}, part 1 says {self.kv('split.tensors.count')})")
        total = self.kv("split.tensors.count")
        have = sum(len(p.layout.tensors) for p in self._parts)
        if total is not None and total != have:
            raise FileFormatError(f"{self.path}: split set declares {total} tensors but its parts hold {have}")

    def _tensor_infos(self) -> Iterator[TensorInfo]:
        for i, part in enumerate(self._parts):
            for t in part.layout.tensors:
                yield TensorInfo(t.name, t.shape, t.ggml_type, t.n_bytes, i, t.offset)

    def kv(self, key: str, default: Any = None) -> Any:
        """Decoded metadata value of the first part (strings, numbers, lists), or default."""
        f = self.fields.get(key)
        if f is None:
            return default
        v = _field_value(f)
        return default if v is None else v

    def arch_kv(self, suffix: str, default: Any = None) -> Any:
        return self.kv(f"{self.arch}.{suffix}", default)

    def layer_kv(self, suffix: str, layer: int) -> int:
        """An integer hyper-parameter ({arch}.suffix) of one layer, whether stored per layer (an array) or
        once; 0 when absent or not a non-negative integer."""
        v = self.arch_kv(suffix)
        if isinstance(v, list):
            v = v[layer] if 0 <= layer < len(v) else None
        ok = isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0
        return int(v) if ok else 0

    @cached_property
    def hparams(self) -> Hparams:
        def first(v: Any) -> int:
            if isinstance(v, list):
                return int(v[0]) if v else 0
            return int(v or 0)

        n_head = first(self.arch_kv("attention.head_count", 0))
        n_head_kv = self.arch_kv("attention.head_count_kv")
        return Hparams(
            arch=self.arch,
            n_layer_all=first(self.arch_kv("block_count", 0)),
            n_layer_nextn=first(self.arch_kv("nextn_predict_layers", 0)),
            n_expert=first(self.arch_kv("expert_count", 0)),
            n_head=n_head,
            n_head_kv=n_head if n_head_kv is None else first(n_head_kv),
            n_embd=first(self.arch_kv("embedding_length", 0)),
        )

    @property
    def n_params(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def file_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.parts)

    @property
    def name(self) -> str:
        return str(self.kv("general.name") or self.path.name)

    def tensor(self, name: str) -> TensorInfo:
        try:
            return self._by_name[name]
        except KeyError:
            raise PrismError(f"{self.path}: no tensor named {quoted(name)}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    # -- data --------------------------------------------------------------------------------------
    def raw(self, t: TensorInfo) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view of the memory map (no copy)."""
        return self._parts[t.part].data[t.offset:t.offset + t.n_bytes]

    def read(self, t: TensorInfo | str, out: np.ndarray | None = None) -> np.ndarray:
        """Values as float32, numpy shape (..., ne1, ne0). F32 is a view of the map; other types are
        converted (F16/BF16) or dequantized by the gguf package, in row slabs to bound memory. `out`: a
        reusable 1-D float32 buffer of at least n_elements for the converted values (quant.Scratch)."""
        if isinstance(t, str):
            t = self.tensor(t)
        return self.read_rows(t, 0, t.n_rows, out).reshape(tuple(reversed(t.shape)))

    def raw_rows(self, t: TensorInfo, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of the tensor's bytes, (rows x row bytes) uint8 view of the map."""
        row = t.n_bytes // max(t.n_rows, 1)
        return self.raw(t)[start * row:stop * row].reshape(stop - start, row)

    def read_rows(self, t: TensorInfo, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows [start, stop) as a float32 (rows x ne0) matrix (a view of the map for F32; else into `out`
        when given): a slab of a tensor too large to convert whole."""
        from ..quant import FLOAT_TYPES, float32_rows
        raw = self.raw_rows(t, start, stop)
        if t.type_name in FLOAT_TYPES:
            return float32_rows(raw, t.type_name, nthreads=1, out=out)
        return self._dequantize(t, raw, out)

    def release(self, t: TensorInfo, start: int = 0, stop: int | None = None) -> None:
        """Unmap the pages of rows [start, stop) from this process (they stay in the page cache): pages
        read through the map otherwise stay resident until the model is closed, and a model read whole
        would end with its whole size resident. Pages shared with a neighbour fault back in if needed."""
        row = t.n_bytes // max(t.n_rows, 1)
        stop = t.n_rows if stop is None else stop
        a = (t.offset + start * row) // mmap.PAGESIZE * mmap.PAGESIZE
        b = t.offset + stop * row
        mm = getattr(self._parts[t.part].data, "_mmap", None)
        if mm is not None and b > a and hasattr(mm, "madvise"):
            mm.madvise(mmap.MADV_DONTNEED, a, min(b - a, len(mm) - a))

    def _dequantize(self, t: TensorInfo, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """float32 (rows x ne0) of (rows x row bytes) quantized data."""
        n_rows = rows.shape[0]
        if t.qtype.native and t.qtype.fits(t.n_per_row):  # our bit-exact to_float: ~10x gguf's numpy
            from ..quant import dequantize
            return dequantize(rows, t.qtype, (n_rows, t.n_per_row), out=out)
        qt = gguf.GGMLQuantizationType(t.ggml_type)
        if qt not in gguf.quants._type_traits:  # noqa: SLF001  (no public "can dequantize" query)
            raise FileFormatError(f"{self.parts[t.part]}: tensor {quoted(t.name)} has type {t.type_name}, which the "
                             f"gguf package {_gguf_version()} cannot dequantize")
        res = (np.empty((n_rows, t.n_per_row), dtype=np.float32) if out is None
               else out[:n_rows * t.n_per_row].reshape(n_rows, t.n_per_row))
        step = max(1, _DEQUANT_CHUNK_VALUES // max(t.n_per_row, 1))
        # corrupt scales make numpy warn of overflow; the NaN/Inf they give is reported by whoever
        # measures the values (measure.values.screen), in one line
        with np.errstate(all="ignore"):
            for a in range(0, n_rows, step):
                res[a:a + step] = gguf.quants.dequantize(np.asarray(rows[a:a + step]), qt)
        return res

    def iter_float32(self, names: Iterable[str] | None = None) -> Iterator[tuple[TensorInfo, np.ndarray]]:
        """(tensor, float32 values) one tensor at a time; only one converted tensor is alive at once."""
        chosen: Sequence[TensorInfo] = (self.tensors if names is None
                                        else [self.tensor(n) for n in names])
        for t in chosen:
            yield t, self.read(t)


def _gguf_version() -> str:
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:  # noqa: BLE001  (metadata may be missing in odd installs)
        return "(unknown version)"


def open_model(path: str | Path) -> Model:
    return Model(path)
