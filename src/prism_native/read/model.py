"""A GGUF model as llama-quantize sees it: metadata, tensor list, and tensor values one at a time.

Files are opened with the gguf package's memory-mapped reader, never loaded whole. Split sets
(`name-00001-of-00003.gguf`) are opened as one model. Every problem with the input file becomes a
one-line PrismError that names the file (missing, not GGUF, truncated, data past the end, a missing
split part, an unsupported tensor type) instead of a traceback from numpy or gguf.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import gguf
import numpy as np

from .. import qtypes
from ..errors import PrismError
from ..qtypes import QType

GGUF_HEADER_BYTES = 24  # magic, version, tensor count, kv count
DIRECT_TYPES = frozenset({"F32", "F16", "BF16"})  # read without dequantizing
_SPLIT_NAME = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")
_DEQUANT_CHUNK_VALUES = 1 << 22  # rows are dequantized in slabs of ~16 MiB of float32


def ggml_n_dims(shape: Sequence[int]) -> int:
    """ggml_n_dims: trailing dimensions of size 1 do not count (a [576, 1] tensor is 1-D)."""
    for i in range(len(shape) - 1, 0, -1):
        if shape[i] > 1:
            return i + 1
    return 1


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
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

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


class _BoundedReader(gguf.GGUFReader):
    """GGUFReader that reports reads past the end of the file and unknown tensor types precisely, and
    parses long metadata arrays (a tokenizer's 150k strings) in one pass instead of one numpy read
    per element (seconds -> milliseconds). The fields it builds have the reader's usual layout, except
    that a numeric array is one part holding all its elements (contents() and nbytes are unchanged)."""

    tensor_fields: tuple[int, list[Any]] | None = None

    def _get(self, offset: int, dtype: Any, count: int = 1, override_order: Any = None) -> np.ndarray:
        end = int(offset) + np.dtype(dtype).itemsize * int(count)
        if end > self.data.shape[0]:
            raise _PastEnd(int(offset), end)
        return super()._get(offset, dtype, count, override_order)

    def _get_field_parts(self, orig_offs: int, raw_type: int) -> tuple[int, list[Any], list[int], list[Any]]:
        if raw_type != gguf.GGUFValueType.ARRAY or self.byte_order != "I":
            return super()._get_field_parts(orig_offs, raw_type)
        itype = self._get(orig_offs, np.uint32)
        alen = self._get(orig_offs + 4, np.uint64)
        sub = gguf.GGUFValueType(int(itype[0]))
        n, offs = int(alen[0]), orig_offs + 12
        parts: list[Any] = [itype, alen]
        types = [gguf.GGUFValueType.ARRAY] + ([sub] if n else [])
        if sub == gguf.GGUFValueType.STRING:
            flat = self.data.view(np.ndarray)
            buf, size = memoryview(flat), flat.shape[0]
            idxs = []
            for _ in range(n):
                if offs + 8 > size:
                    raise _PastEnd(offs, offs + 8)
                (ln,) = struct.unpack_from("<Q", buf, offs)
                if offs + 8 + ln > size:
                    raise _PastEnd(offs + 8, offs + 8 + ln)
                parts.append(flat[offs:offs + 8].view(np.uint64))
                parts.append(flat[offs + 8:offs + 8 + ln])
                idxs.append(len(parts) - 1)
                offs += 8 + ln
            return offs - orig_offs, parts, idxs, types
        nptype = self.gguf_scalar_to_np.get(sub)
        if nptype is None:  # arrays of arrays: the reader's own element-wise walk
            return super()._get_field_parts(orig_offs, raw_type)
        values = self._get(offs, nptype, n)
        parts.append(values)
        return 12 + int(values.nbytes), parts, [2], types

    def _build_tensors(self, start_offs: int, fields: list[Any]) -> None:
        self.tensor_fields = (start_offs, fields)
        for f in fields:
            name = bytes(f.parts[1]).decode("utf-8", "replace")
            raw = int(f.parts[4][0])
            try:
                t = gguf.GGMLQuantizationType(raw)
            except ValueError:
                raise _BadTensor(name, f"has unsupported tensor type id {raw}") from None
            block = gguf.GGML_QUANT_SIZES[t][0]
            ne0 = int(f.parts[3][0]) if len(f.parts[3]) else 1
            if ne0 % block:
                raise _BadTensor(name, f"rows of {ne0} values do not fit type {t.name} "
                                       f"(blocks of {block})")
        super()._build_tensors(start_offs, fields)


class _PastEnd(Exception):
    def __init__(self, offset: int, end: int) -> None:
        super().__init__(offset, end)
        self.offset, self.end = offset, end


class _BadTensor(Exception):
    def __init__(self, name: str, problem: str) -> None:
        super().__init__(name, problem)
        self.name, self.problem = name, problem


def _open_reader(path: Path) -> _BoundedReader:
    if not path.exists():
        raise PrismError(f"{path}: no such file")
    if not path.is_file():
        raise PrismError(f"{path}: not a regular file")
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise PrismError(f"{path}: cannot read: {e.strerror}") from None
    if size == 0:
        raise PrismError(f"{path}: empty file, not a GGUF model")
    if magic != b"GGUF":
        if len(magic) < 4 and b"GGUF".startswith(magic):
            raise PrismError(f"{path}: truncated GGUF file ({size} bytes)")
        raise PrismError(f"{path}: not a GGUF file (starts with {magic!r}, expected b'GGUF')")
    if size < GGUF_HEADER_BYTES:
        raise PrismError(f"{path}: truncated GGUF file ({size} bytes, the header alone needs "
                         f"{GGUF_HEADER_BYTES})")
    reader = _BoundedReader.__new__(_BoundedReader)
    try:
        reader.__init__(path)  # type: ignore[misc]
    except _PastEnd as e:
        raise PrismError(_past_end_message(path, size, reader, e)) from None
    except _BadTensor as e:
        raise PrismError(f"{path}: tensor '{e.name}' {e.problem}") from None
    except (ValueError, KeyError, IndexError, OverflowError) as e:
        raise PrismError(f"{path}: not a valid GGUF file: {e}") from None
    except OSError as e:
        raise PrismError(f"{path}: cannot read: {e.strerror or e}") from None
    if reader.byte_order != "I":
        raise PrismError(f"{path}: big-endian GGUF files are not supported")
    return reader


def _past_end_message(path: Path, size: int, reader: _BoundedReader, e: _PastEnd) -> str:
    if reader.tensor_fields is None:
        return (f"{path}: truncated GGUF file: the metadata needs byte {e.end} but the file has "
                f"{size} bytes")
    start, fields = reader.tensor_fields
    for f in fields:
        if start + int(f.parts[5][0]) == e.offset:
            name = bytes(f.parts[1]).decode("utf-8", "replace")
            return (f"{path}: tensor '{name}' data runs past the end of the file (bytes "
                    f"{e.offset}..{e.end}, file has {size}); the file is truncated or corrupt")
    return f"{path}: tensor data runs past the end of the file (byte {e.end}, file has {size})"


def split_parts(path: Path) -> list[Path]:
    """All files of a split set given any of its parts; [path] for a single file."""
    m = _SPLIT_NAME.match(path.name)
    if not m:
        return [path]
    count = int(m.group("count"))
    if count < 1 or not 1 <= int(m.group("no")) <= count:
        raise PrismError(f"{path}: bad split file name (part {m.group('no')} of {count})")
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
            raise PrismError(f"{missing[0]}: part {idx} of the {len(self.parts)}-part split set "
                             f"{given.name} is missing")
        self._readers = [_open_reader(p) for p in self.parts]
        self.fields: dict[str, Any] = {k: f for k, f in self._readers[0].fields.items()
                                       if not k.startswith("GGUF.")}
        self._check_split()
        self.tensors: tuple[TensorInfo, ...] = tuple(self._tensor_infos())
        self._by_name = {t.name: t for t in self.tensors}
        if len(self._by_name) != len(self.tensors):
            dup = next(t.name for t in self.tensors if sum(u.name == t.name for u in self.tensors) > 1)
            raise PrismError(f"{self.path}: tensor '{dup}' appears in more than one split part")
        arch = self.kv("general.architecture")
        if not isinstance(arch, str) or not arch:
            raise PrismError(f"{self.path}: no general.architecture key; not a llama.cpp model")
        self.arch: str = arch

    # -- structure ---------------------------------------------------------------------------------
    def _check_split(self) -> None:
        n = len(self.parts)
        declared = self.kv("split.count", 0) or 0
        if n == 1:
            if declared > 1:
                raise PrismError(f"{self.path}: part of a {declared}-part split set, but its name does not "
                                 "follow the NAME-00001-of-0000N.gguf pattern; open it by that name")
            return
        for i, r in enumerate(self._readers):
            f = r.fields.get("split.count")
            count = _field_value(f) if f is not None else None
            if count != n:
                raise PrismError(f"{self.parts[i]}: split.count is {count}, the file names say {n}")
            no = r.fields.get("split.no")
            if no is not None and _field_value(no) != i:
                raise PrismError(f"{self.parts[i]}: split.no is {_field_value(no)}, expected {i}")
        total = self.kv("split.tensors.count")
        have = sum(len(r.tensors) for r in self._readers)
        if total is not None and total != have:
            raise PrismError(f"{self.path}: split set declares {total} tensors but its parts hold {have}")

    def _tensor_infos(self) -> Iterator[TensorInfo]:
        for part, r in enumerate(self._readers):
            for t in r.tensors:
                yield TensorInfo(t.name, tuple(int(d) for d in t.shape), int(t.tensor_type),
                                 int(t.n_bytes), part, int(t.data_offset))

    def kv(self, key: str, default: Any = None) -> Any:
        """Decoded metadata value of the first part (strings, numbers, lists), or default."""
        f = self.fields.get(key)
        if f is None:
            return default
        v = _field_value(f)
        return default if v is None else v

    def arch_kv(self, suffix: str, default: Any = None) -> Any:
        return self.kv(f"{self.arch}.{suffix}", default)

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
            raise PrismError(f"{self.path}: no tensor named '{name}'") from None

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    # -- data --------------------------------------------------------------------------------------
    def raw(self, t: TensorInfo) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view of the memory map (no copy)."""
        return self._readers[t.part].data[t.offset:t.offset + t.n_bytes]

    def read(self, t: TensorInfo | str, out: np.ndarray | None = None) -> np.ndarray:
        """Values as float32, numpy shape (..., ne1, ne0). F32 is a view of the map; other types are
        converted (F16/BF16) or dequantized by the gguf package, in row slabs to bound memory. `out`: a
        reusable 1-D float32 buffer of at least n_elements for the converted values (quant.Scratch)."""
        if isinstance(t, str):
            t = self.tensor(t)
        np_shape = tuple(reversed(t.shape))
        raw = self.raw(t)
        name = t.type_name
        if name == "F32":
            return raw.view("<f4").reshape(np_shape)
        if name in ("F16", "BF16"):  # native exact conversion: numpy's float16 cast is ~10x slower
            from ..quant import to_float32
            rows = raw.view("<f2" if name == "F16" else "<u2").reshape(t.n_rows, t.n_per_row)
            return to_float32(rows, name == "BF16", nthreads=1, out=out).reshape(np_shape)
        return self._dequantize(t, raw, out).reshape(np_shape)

    def _dequantize(self, t: TensorInfo, raw: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        if t.qtype.native and t.qtype.fits(t.n_per_row):  # our bit-exact to_float: ~10x gguf's numpy
            from ..quant import dequantize
            return dequantize(raw, t.qtype, (t.n_rows, t.n_per_row), out=out)
        qt = gguf.GGMLQuantizationType(t.ggml_type)
        if qt not in gguf.quants._type_traits:  # noqa: SLF001  (no public "can dequantize" query)
            raise PrismError(f"{self.parts[t.part]}: tensor '{t.name}' has type {t.type_name}, which the "
                             f"gguf package {_gguf_version()} cannot dequantize")
        rows = raw.reshape(t.n_rows, -1)
        out = np.empty((t.n_rows, t.n_per_row), dtype=np.float32)
        step = max(1, _DEQUANT_CHUNK_VALUES // max(t.n_per_row, 1))
        for a in range(0, t.n_rows, step):
            out[a:a + step] = gguf.quants.dequantize(np.asarray(rows[a:a + step]), qt)
        return out

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
