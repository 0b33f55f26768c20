"""A GGUF reader that validates the file's structure before trusting any of it.

Design: one pass over the read-only memory map, in the order of llama.cpp's own loader
(ggml/src/gguf.cpp, gguf_init_from_reader, called by gguf_init_from_file): header, key/values,
tensor infos, then the data section. Every length, count and offset is checked against the bytes
that remain (Python ints, so nothing wraps) *before* a view of it is made, so a hostile count never
becomes a loop of 2^63 steps or an allocation; the checks are gguf.cpp's, named at each one. The
key/values are built on the way as the gguf package's own `ReaderField` objects (the layout its
GGUFReader gives, except that a numeric array is one part holding all its elements), so that
the GGUF writer (gguf/writer.py) and the model reader keep reading them through `.parts`, `.types`, `.data` and
`.contents()`. A separate validating pre-pass before gguf's reader would have walked the metadata
twice (a 128k-token tokenizer with 280k merges is 400k strings, ~0.5 s per walk); one pass costs
the reading alone plus a few comparisons.

Beyond gguf.cpp, two rules are prism_native's own: names and keys must be UTF-8 (the GGUF spec
says so, and they become Python strings), and a tensor may not have a zero dimension (gguf.cpp
accepts empty tensors; no model has one, and llama-quantize divides by the row length when it
quantizes one). Every problem raises FileFormatError: one line naming the file, the key or tensor,
and what is wrong.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from gguf.gguf_reader import ReaderField

from .. import qtypes
from ..errors import FileFormatError, UsageError, quoted
from .constants import (DEFAULT_ALIGNMENT, GGUF_HEADER_BYTES, GGUF_MAGIC, INT64_MAX, MAX_ARRAY_ELEMENTS, MAX_DIMS,
                        MAX_NAME_BYTES, MAX_STRING_BYTES, SCALAR_DTYPES, VERSIONS, VT, pad)

# smallest encodings, to bound the declared counts by the file size before looping over them:
# a key/value is a key length, a one-byte key, a type and a one-byte value; a tensor info is a name
# length, an empty name, n_dims = 0, a type and an offset
_MIN_KV_BYTES = 8 + 1 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8

_U32, _U64 = np.dtype("<u4"), np.dtype("<u8")


def type_name(vtype: int) -> str:
    """gguf_type_name's spelling of a value type (u32, str, arr, ...)."""
    names = {VT.UINT8: "u8", VT.INT8: "i8", VT.UINT16: "u16", VT.INT16: "i16", VT.UINT32: "u32",
             VT.INT32: "i32", VT.FLOAT32: "f32", VT.BOOL: "bool", VT.STRING: "str", VT.ARRAY: "arr",
             VT.UINT64: "u64", VT.INT64: "i64", VT.FLOAT64: "f64"}
    return names.get(vtype, f"type {vtype}")  # type: ignore[call-overload]


def field_type(field: ReaderField) -> str:
    """'u32', 'str', 'arr[i32]': a key/value's type as llama.cpp's messages write it."""
    main = field.types[0]
    if main != VT.ARRAY:
        return type_name(main)
    return f"arr[{type_name(int(field.parts[3][0]))}]"


@dataclass(frozen=True)
class ReadTensor:
    """One tensor info, checked: shape in ggml order (ne0 first), absolute data offset, exact size."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int     # absolute byte offset of the data in the file (while parsing: from the data section)
    n_bytes: int    # ggml_nbytes


@dataclass(frozen=True)
class ReadLayout:
    """A GGUF file whose every structure was checked: key/values, tensors, where the data starts."""

    path: Path
    version: int
    alignment: int
    fields: dict[str, ReaderField]
    tensors: tuple[ReadTensor, ...]
    data_offset: int   # absolute offset of the data section (padded end of the tensor infos)
    file_size: int


class _Cursor:
    """Reads little-endian values from the map, each one checked against the end of the file first."""

    def __init__(self, path: Path, data: np.ndarray) -> None:
        # a plain ndarray view: slices of an np.memmap are memmaps, ~20x slower to make
        self.path, self.data, self.size = path, data.view(np.ndarray), int(data.shape[0])
        self.buf = memoryview(self.data)
        self.pos = 0

    def fail(self, problem: str) -> FileFormatError:
        return FileFormatError(f"{self.path}: {problem}")

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self.fail(f"truncated or corrupt GGUF file: {what} needs bytes {self.pos}..{self.pos + n} "
                            f"but the file has {self.size}")

    def array(self, dtype: np.dtype, count: int, what: str) -> np.ndarray:
        n = dtype.itemsize * count
        self.need(n, what)
        out = self.data[self.pos:self.pos + n].view(dtype)
        self.pos += n
        return out

    def scalar(self, fmt: str, what: str) -> int:
        n = struct.calcsize(fmt)
        self.need(n, what)
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += n
        return int(v)

    def string(self, what: str) -> tuple[np.ndarray, np.ndarray]:
        """(length part, bytes part) of a GGUF string (gguf_reader::read(std::string))."""
        length = self.array(_U64, 1, f"the length of {what}")
        n = int(length[0])
        if n > MAX_STRING_BYTES:
            raise self.fail(f"{what} claims {n} bytes, more than GGUF's limit of {MAX_STRING_BYTES}")
        return length, self.array(np.dtype("u1"), n, f"{what} ({n} bytes)")

    def text(self, raw: np.ndarray, what: str) -> str:
        try:
            return raw.tobytes().decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8") from None


def read_layout(path: Path, data: np.ndarray) -> ReadLayout:
    """Check and read the whole structure of the GGUF file mapped as `data` (read-only uint8)."""
    cur = _Cursor(path, data)
    version, n_tensors, n_kv = _header(cur)
    fields = _key_values(cur, n_kv)
    alignment = _alignment(cur, fields)
    infos = _tensor_infos(cur, n_tensors)
    data_offset = pad(cur.pos, alignment)
    if n_tensors and data_offset > cur.size:
        # gguf.cpp: "failed to seek to beginning of data section"
        raise cur.fail(f"truncated GGUF file: the tensor data starts at byte {data_offset} but the file has "
                       f"{cur.size} bytes")
    tensors = _place_tensors(cur, infos, data_offset, alignment)
    return ReadLayout(path, version, alignment, fields, tensors, data_offset, cur.size)


def _header(cur: _Cursor) -> tuple[int, int, int]:
    """Magic, version and the two counts (gguf_init_from_reader's header block)."""
    if cur.size == 0:
        raise cur.fail("empty file, not a GGUF model")
    magic = bytes(cur.buf[:4])
    if magic != GGUF_MAGIC:
        if len(magic) < 4 and GGUF_MAGIC.startswith(magic):
            raise cur.fail(f"truncated GGUF file ({cur.size} bytes)")
        raise cur.fail(f"not a GGUF file (starts with {magic!r}, expected b'GGUF')")
    if cur.size < GGUF_HEADER_BYTES:
        raise cur.fail(f"truncated GGUF file ({cur.size} bytes, the header alone needs {GGUF_HEADER_BYTES})")
    cur.pos = 4
    version = cur.scalar("<I", "the version")
    if version & 0xFFFF == 0:
        raise cur.fail("big-endian GGUF files are not supported")
    if version not in VERSIONS:
        why = "no longer supported" if version == 1 else "invalid" if version == 0 else "newer than llama.cpp reads"
        raise cur.fail(f"GGUF version {version} is {why} (versions 2 and 3 are read)")
    n_tensors = cur.scalar("<Q", "the tensor count")
    n_kv = cur.scalar("<Q", "the key/value count")
    room = cur.size - cur.pos
    if n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES > room:
        # gguf.cpp bounds the counts by SIZE_MAX / sizeof(...); the file size is the sharper bound
        raise cur.fail(f"truncated or corrupt GGUF file: the header declares {n_kv} key/values and {n_tensors} "
                       f"tensor infos, more than the {room} bytes after it can hold")
    return version, n_tensors, n_kv


def _key_values(cur: _Cursor, n_kv: int) -> dict[str, ReaderField]:
    """Every key/value as a ReaderField (gguf_init_from_reader's KV loop and gguf_read_emplace_helper)."""
    fields: dict[str, ReaderField] = {}
    for i in range(n_kv):
        start = cur.pos
        klen, kdata = cur.string(f"the key of key/value {i}")
        key = cur.text(kdata, f"the key of key/value {i}")
        label = quoted(key)
        if not key:
            raise cur.fail(f"key/value {i} has an empty key")
        if key in fields:
            raise cur.fail(f"key {label} appears twice (key/value {i})")
        vtype_part = cur.array(_U32, 1, f"the type of key {label}")
        parts, data, types = _value(cur, label, int(vtype_part[0]))
        fields[key] = ReaderField(start, key, [klen, kdata, vtype_part, *parts], [d + 3 for d in data], types)
    return fields


def _value(cur: _Cursor, label: str, vtype: int) -> tuple[list[np.ndarray], list[int], list[Any]]:
    """(parts, data indices, types) of one value, indices relative to the value's first part."""
    if vtype == VT.STRING:
        return list(cur.string(f"the value of key {label}")), [1], [VT.STRING]
    if vtype in SCALAR_DTYPES:
        return [cur.array(SCALAR_DTYPES[vtype], 1, f"the value of key {label}")], [0], [VT(vtype)]
    if vtype != VT.ARRAY:
        raise cur.fail(f"key {label} has unknown value type {vtype}")
    itype_part = cur.array(_U32, 1, f"the element type of array {label}")
    alen = cur.array(_U64, 1, f"the length of array {label}")
    itype, n = int(itype_part[0]), int(alen[0])
    if itype == VT.ARRAY:
        raise cur.fail(f"key {label} is an array of arrays, which llama.cpp's GGUF loader rejects")
    if itype != VT.STRING and itype not in SCALAR_DTYPES:
        raise cur.fail(f"key {label} is an array of unknown element type {itype}")
    if n > MAX_ARRAY_ELEMENTS:
        raise cur.fail(f"array {label} declares {n} elements, more than GGUF's limit of {MAX_ARRAY_ELEMENTS}")
    types: list[Any] = [VT.ARRAY] + ([VT(itype)] if n else [])
    head = [itype_part, alen]
    if itype != VT.STRING:
        dt = SCALAR_DTYPES[itype]
        return head + [cur.array(dt, n, f"the {n} elements of array {label}")], [2], types
    cur.need(8 * n, f"the {n} strings of array {label}")   # each has at least its length
    return head + _strings(cur, label, n), list(range(3, 2 + 2 * n + 1, 2)), types


def _strings(cur: _Cursor, label: str, n: int) -> list[np.ndarray]:
    """(length, bytes) parts of n consecutive strings: cur.string's checks, inlined, because a
    tokenizer holds hundreds of thousands of them."""
    flat, buf, size, offs = cur.data, cur.buf, cur.size, cur.pos
    unpack = struct.Struct("<Q").unpack_from
    # the length parts are 1-element slices of one of eight u64 views of the map, shifted by 0..7
    # bytes: half the cost of viewing a fresh byte slice as u64 for each string
    shifted = [flat[k:k + (size - k) // 8 * 8].view(_U64) for k in range(8)]
    parts: list[np.ndarray] = []
    for j in range(n):
        if offs + 8 > size:
            cur.pos = offs
            cur.need(8, f"the length of string {j} of array {label}")
        (ln,) = unpack(buf, offs)
        end = offs + 8 + ln
        if ln > MAX_STRING_BYTES or end > size:
            cur.pos = offs + 8
            if ln > MAX_STRING_BYTES:
                raise cur.fail(f"string {j} of array {label} claims {ln} bytes, more than GGUF's limit of "
                               f"{MAX_STRING_BYTES}")
            cur.need(ln, f"string {j} of array {label} ({ln} bytes)")
        k = offs & 7
        i = offs >> 3
        parts.append(shifted[k][i:i + 1])
        parts.append(flat[offs + 8:end])
        offs = end
    cur.pos = offs
    return parts


def _alignment(cur: _Cursor, fields: dict[str, ReaderField]) -> int:
    """general.alignment: a u32 power of two, else the default 32 (gguf_init_from_reader)."""
    f = fields.get("general.alignment")
    if f is None:
        return DEFAULT_ALIGNMENT
    if f.types != [VT.UINT32]:
        raise cur.fail(f"key 'general.alignment' must be of type u32 but is {field_type(f)}")
    align = int(f.parts[-1][0])
    if align == 0 or align & (align - 1):
        raise cur.fail(f"general.alignment {align} is not a power of 2")
    return align


def _tensor_infos(cur: _Cursor, n_tensors: int) -> list[ReadTensor]:
    """Name, shape, type and offset (still relative to the data section) of every tensor
    (gguf_init_from_reader's tensor info loop)."""
    infos: list[ReadTensor] = []
    seen: dict[str, int] = {}
    for i in range(n_tensors):
        _, raw = cur.string(f"the name of tensor {i}")
        if raw.size > MAX_NAME_BYTES:
            raise cur.fail(f"the name of tensor {i} is {raw.size} bytes long; ggml allows at most {MAX_NAME_BYTES}")
        name = cur.text(raw, f"the name of tensor {i}")
        if name in seen:
            raise cur.fail(f"tensor {quoted(name)} appears twice (tensors {seen[name]} and {i})")
        seen[name] = i
        n_dims = cur.scalar("<I", f"the dimension count of tensor {quoted(name)}")
        if n_dims > MAX_DIMS:
            raise cur.fail(f"tensor {quoted(name)} has {n_dims} dimensions; ggml allows at most {MAX_DIMS}")
        shape = tuple(cur.scalar("<Q", f"the shape of tensor {quoted(name)}") for _ in range(n_dims))
        ggml_type = cur.scalar("<I", f"the type of tensor {quoted(name)}")
        rel_offset = cur.scalar("<Q", f"the data offset of tensor {quoted(name)}")
        infos.append(ReadTensor(name, shape, ggml_type, rel_offset, _tensor_bytes(cur, name, shape, ggml_type)))
    return infos


def _tensor_bytes(cur: _Cursor, name: str, shape: tuple[int, ...], ggml_type: int) -> int:
    """ggml_nbytes after gguf.cpp's shape and type checks (and the zero-dimension rule)."""
    if any(d > INT64_MAX for d in shape):   # gguf.cpp reads int64 dims and rejects negative ones
        raise cur.fail(f"tensor {quoted(name)} has a negative dimension (shape {list(shape)} read as unsigned)")
    if 0 in shape:
        raise cur.fail(f"tensor {quoted(name)} has an empty dimension (shape {list(shape)}); a model weight never does")
    n = 1
    for d in shape:
        n *= d
    if n > INT64_MAX:
        raise cur.fail(f"tensor {quoted(name)} shape {list(shape)} has {n} elements, more than int64 can count")
    try:
        qt = qtypes.get(ggml_type)
    except UsageError:
        raise cur.fail(f"tensor {quoted(name)} has unsupported tensor type id {ggml_type}") from None
    ne0 = shape[0] if shape else 1
    if ne0 % qt.block_size:
        raise cur.fail(f"tensor {quoted(name)} rows of {ne0} values do not fit type {qt.name} "
                       f"(blocks of {qt.block_size})")
    return n // qt.block_size * qt.type_size


def _place_tensors(cur: _Cursor, infos: list[ReadTensor], data_offset: int, alignment: int) -> tuple[ReadTensor, ...]:
    """The tensors at their absolute offsets. gguf.cpp wants every tensor where the padded tensors
    before it end (offset == ctx->size), which rules out misaligned, overlapping and scattered data;
    llama_model_loader then wants each tensor's bytes inside the file. Each violation is named as what
    it is."""
    out: list[ReadTensor] = []
    expected = 0
    for t in infos:
        rel = t.offset
        if rel % alignment:
            raise cur.fail(f"tensor {quoted(t.name)} data offset {rel} is not a multiple of the alignment {alignment}")
        if rel < expected:
            other = next(u for u in out if u.offset + u.n_bytes > data_offset + rel)
            a = other.offset - data_offset
            raise cur.fail(f"tensor {quoted(t.name)} (data bytes {rel}..{rel + t.n_bytes}) overlaps "
                           f"tensor {quoted(other.name)} (bytes {a}..{a + other.n_bytes})")
        if rel > expected:
            raise cur.fail(f"tensor {quoted(t.name)} data starts at offset {rel}, but the tensors before it end "
                           f"at {expected}; llama.cpp needs the tensors back to back in file order")
        start = data_offset + rel
        if start + t.n_bytes > cur.size:
            raise cur.fail(f"tensor {quoted(t.name)} data runs past the end of the file (bytes {start}..{start + t.n_bytes}, "
                           f"file has {cur.size}); the file is truncated or corrupt")
        out.append(replace(t, offset=start))
        expected = rel + pad(t.n_bytes, alignment)
    return tuple(out)
