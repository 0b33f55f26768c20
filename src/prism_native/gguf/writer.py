"""The bytes of a GGUF file as ggml's gguf writer produces them (ggml/src/gguf.cpp).

A key/value is serialised as gguf_writer_base::write(const gguf_kv &) does it, after the c_str() copy
that gguf_set_kv and gguf_set_val_* make (`KV`); gguf_set_val_* removes a key and appends it again
(`set_kv`), so a replaced key moves to the end. `WriteLayout` is what gguf_write_out(only_meta) then
writes: header, key/values, tensor infos, zero padding to the alignment, and where each tensor's data
goes after it. What is read from a file is gguf/layout.py's (ReadLayout, ReadTensor).
"""
from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from ..errors import FileFormatError, RecipeError
from .constants import (DEFAULT_ALIGNMENT, GGUF_HEADER_BYTES, GGUF_MAGIC, GGUF_VERSION, KEY_ALIGNMENT, SCALAR_FORMATS,
                        VT, ggml_n_dims, pad)


def _cstr(b: bytes) -> bytes:
    """A string as it survives a trip through c_str() (std::string(const char *)): cut at the first NUL."""
    nul = b.find(b"\0")
    return b if nul < 0 else b[:nul]


def _string(b: bytes) -> bytes:
    """gguf_writer_base::write(const std::string &): u64 length, then the bytes."""
    return struct.pack("<Q", len(b)) + b


@dataclass(frozen=True)
class KV:
    """One key/value exactly as gguf_writer_base::write(const gguf_kv &) serialises it."""

    key: bytes        # as gguf_find_key compares it (cut at a NUL)
    data: bytes       # the whole record: key, type tag(s), value(s)

    @property
    def name(self) -> str:
        return self.key.decode("utf-8", "replace")

    @property
    def nbytes(self) -> int:
        return len(self.data)

    @classmethod
    def make(cls, key: str | bytes, tag: bytes) -> KV:
        k = _cstr(key.encode() if isinstance(key, str) else key)
        if not k:
            raise RecipeError("empty metadata key (gguf_kv asserts a non-empty key)")
        return cls(k, _string(k) + tag)

    @classmethod
    def scalar(cls, key: str | bytes, vtype: VT, value: Any) -> KV:
        return cls.make(key, struct.pack("<i", int(vtype)) + struct.pack(SCALAR_FORMATS[vtype], value))

    @classmethod
    def u32(cls, key: str | bytes, value: int = 0) -> KV:
        return cls.scalar(key, VT.UINT32, value)

    @classmethod
    def f32(cls, key: str | bytes, value: float) -> KV:
        """A double narrowed to float as C does it (out of range: Inf, where struct.pack would raise)."""
        with np.errstate(over="ignore"):
            f = np.array(value, dtype="<f4")
        return cls.make(key, struct.pack("<i", int(VT.FLOAT32)) + f.tobytes())

    @classmethod
    def bool_(cls, key: str | bytes, value: bool) -> KV:
        return cls.scalar(key, VT.BOOL, 1 if value else 0)

    @classmethod
    def string(cls, key: str | bytes, value: str | bytes, max_bytes: int | None = None) -> KV:
        """gguf_set_val_str; `max_bytes` mirrors a strncpy into a fixed buffer (llama-quantize's 128-byte
        override values keep 127 bytes)."""
        b = value.encode() if isinstance(value, str) else value
        b = _cstr(b if max_bytes is None else b[:max_bytes])
        return cls.make(key, struct.pack("<i", int(VT.STRING)) + _string(b))


def kv_from_field(field: Any) -> KV:
    """A key/value of the input (a gguf ReaderField) after gguf_set_kv copied it into the output context.

    The copy goes through c_str(), so keys and strings are cut at a NUL; gguf's reader turns every bool
    byte into 0 or 1. Nested arrays make gguf_set_kv abort, so they are refused here.
    """
    parts, main = field.parts, VT(int(field.types[0]))
    key = bytes(parts[1])
    if main == VT.STRING:
        return KV.string(key, bytes(parts[field.data[0]]))
    if main != VT.ARRAY:
        value = np.asarray(parts[field.data[0]])
        if main == VT.BOOL:
            value = (value != 0).astype(np.uint8)
        return KV.make(key, struct.pack("<i", int(main)) + value.tobytes())
    sub = VT(int(parts[3][0]))
    count = int(parts[4][0])
    head = struct.pack("<iiQ", int(VT.ARRAY), int(sub), count)
    if sub == VT.ARRAY:
        raise FileFormatError(f"metadata key '{_cstr(key).decode('utf-8', 'replace')}' is an array of arrays, "
                              "which llama-quantize cannot copy (gguf_set_kv aborts)")
    if count == 0:
        return KV.make(key, head)
    if sub == VT.STRING:
        body = b"".join(_string(_cstr(bytes(parts[i]))) for i in field.data)
        return KV.make(key, head + body)
    values = np.concatenate([np.asarray(parts[i]).reshape(-1) for i in field.data])
    if sub == VT.BOOL:
        values = (values != 0).astype(np.uint8)
    return KV.make(key, head + values.tobytes())


def set_kv(kvs: list[KV], kv: KV) -> None:
    """gguf_set_val_*: remove the key if present, then append it."""
    remove_kv(kvs, kv.key)
    kvs.append(kv)


def remove_kv(kvs: list[KV], key: str | bytes) -> None:
    """gguf_remove_key."""
    k = key.encode() if isinstance(key, str) else key
    for i, e in enumerate(kvs):
        if e.key == k:
            del kvs[i]
            return


def check_reserved(kv: KV) -> None:
    """gguf_check_reserved_keys: general.alignment must be a u32 power of two (ggml aborts otherwise)."""
    if kv.key != KEY_ALIGNMENT.encode():
        return
    tag = kv.data[8 + len(kv.key):]
    if struct.unpack_from("<i", tag)[0] != int(VT.UINT32):
        raise FileFormatError(f"{KEY_ALIGNMENT} must be of type u32 (llama-quantize aborts on this file)")
    (value,) = struct.unpack_from("<I", tag, 4)
    if value == 0 or value & (value - 1):
        raise FileFormatError(f"{KEY_ALIGNMENT} = {value} is not a power of two (llama-quantize aborts)")


def tensor_info(name: str, shape: Sequence[int], ggml_type: int, offset: int) -> bytes:
    """gguf_writer_base::write_tensor_meta: name, n_dims (ggml_n_dims), ne[0..n_dims), type, offset."""
    nd = ggml_n_dims(shape)
    ne = list(shape[:nd]) + [1] * (nd - len(shape))
    return _string(_cstr(name.encode())) + struct.pack(f"<I{nd}qiQ", nd, *ne, ggml_type, offset)


@dataclass(frozen=True)
class WriteTensor:
    """A tensor of the output: its name, ggml shape, type and data size (ggml_nbytes)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    nbytes: int


@dataclass(frozen=True)
class WriteLayout:
    """Where everything goes in the output file: metadata, then each tensor's data padded to the alignment
    (gguf_add_tensor / gguf_set_tensor_type keep the offsets this way)."""

    kvs: tuple[KV, ...]
    tensors: tuple[WriteTensor, ...]
    alignment: int = DEFAULT_ALIGNMENT

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        """Each tensor's offset from the start of the data section."""
        out, pos = [], 0
        for t in self.tensors:
            out.append(pos)
            pos += pad(t.nbytes, self.alignment)
        return tuple(out)

    @cached_property
    def meta_nbytes(self) -> int:
        """gguf_get_meta_size."""
        n = GGUF_HEADER_BYTES + sum(kv.nbytes for kv in self.kvs)
        n += sum(len(tensor_info(t.name, t.shape, t.ggml_type, 0)) for t in self.tensors)
        return pad(n, self.alignment)

    @property
    def data_nbytes(self) -> int:
        return sum(pad(t.nbytes, self.alignment) for t in self.tensors)

    @property
    def file_nbytes(self) -> int:
        return self.meta_nbytes + self.data_nbytes

    def meta(self) -> bytes:
        """gguf_get_meta_data: header, key/values, tensor infos, zero padding."""
        out = [GGUF_MAGIC, struct.pack("<Iqq", GGUF_VERSION, len(self.tensors), len(self.kvs))]
        out += [kv.data for kv in self.kvs]
        out += [tensor_info(t.name, t.shape, t.ggml_type, off) for t, off in zip(self.tensors, self.offsets)]
        raw = b"".join(out)
        if len(raw) > self.meta_nbytes or pad(len(raw), self.alignment) != self.meta_nbytes:
            raise AssertionError("metadata size differs from its own estimate")
        return raw + bytes(self.meta_nbytes - len(raw))
