"""The GGUF format as the fuzzer's oracle reads and writes it, written apart from prism_native's reader.

`parse` walks a file's bytes per the GGUF spec and records where every field sits (the mutation
strategies aim at those positions) or raises Reject with the first rule the file breaks; `serialize`
writes a `Gguf` back, so that structural mutations (a nested array, a renamed tensor, another
alignment) are made on the parsed form. The rules are llama.cpp's (ggml/src/gguf.cpp,
gguf_init_from_reader) plus the two prism_native adds (UTF-8 names and keys, no empty dimension);
the reference for the tensor types is ggml.h's table, restricted to the types the gguf package knows.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace

# ggml type id -> (values per block, bytes per block); ggml.h, minus the removed ids (4, 5, 31-33, 36-38)
BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 40),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110),
    22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18),
    42: (64, 18),
}
F32, F16, Q8_0, BF16 = 0, 1, 8, 30

# value types: id -> struct format of a scalar ("" for string, None for array)
U8, I8, U16, I16, U32, I32, F32V, BOOL, STR, ARR, U64, I64, F64 = range(13)
SCALAR_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32V: "<f", BOOL: "<B",
              U64: "<Q", I64: "<q", F64: "<d"}
MAX_STRING = 1 << 30
MAX_ARRAY = 1 << 30
MAX_NAME = 63
INT64_MAX = (1 << 63) - 1


class Reject(Exception):
    """The file breaks a rule; the message says which."""


@dataclass
class KV:
    key: bytes
    vtype: int
    payload: bytes          # the encoded value after the type tag
    pos: int = 0            # where the key length sits
    value_pos: int = 0      # where the payload starts
    length_fields: list[int] = field(default_factory=list)   # positions of string/array length fields
    type_fields: list[int] = field(default_factory=list)     # positions of type tags (value, element)

    def value(self) -> object:
        """The decoded scalar, str (bytes) or list of scalars; None for anything else."""
        if self.vtype in SCALAR_FMT:
            return struct.unpack_from(SCALAR_FMT[self.vtype], self.payload)[0]
        if self.vtype == STR:
            return self.payload[8:]
        if self.vtype == ARR:
            itype, n = struct.unpack_from("<IQ", self.payload)
            if itype in SCALAR_FMT:
                size = struct.calcsize(SCALAR_FMT[itype])
                return [struct.unpack_from(SCALAR_FMT[itype], self.payload, 12 + i * size)[0] for i in range(n)]
        return None

    def array_type(self) -> int | None:
        return struct.unpack_from("<I", self.payload)[0] if self.vtype == ARR else None


@dataclass
class Tensor:
    name: bytes
    dims: list[int]
    ttype: int
    offset: int             # relative to the data section
    pos: int = 0            # where its info starts
    ndims_pos: int = 0
    dims_pos: int = 0
    type_pos: int = 0
    offset_pos: int = 0

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.dims:
            n *= d
        return n

    @property
    def n_bytes(self) -> int:
        block, size = BLOCKS[self.ttype]
        return self.n_elements // block * size


@dataclass
class Gguf:
    version: int
    kvs: list[KV]
    tensors: list[Tensor]
    alignment: int
    data_start: int
    size: int
    data: bytes             # the whole file
    count_pos: int = 8      # tensor count at 8, kv count at 16

    def kv(self, key: str) -> KV | None:
        return next((k for k in self.kvs if k.key == key.encode()), None)

    def tensor_bytes(self, t: Tensor) -> bytes:
        a = self.data_start + t.offset
        return self.data[a:a + t.n_bytes]


class _Bytes:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise Reject(f"{what} runs past the end")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return struct.unpack("<Q", self.take(8, what))[0]

    def string(self, what: str) -> bytes:
        n = self.u64(what + " length")
        if n > MAX_STRING:
            raise Reject(f"{what} longer than GGUF's limit")
        return self.take(n, what)


def parse(data: bytes) -> Gguf:
    """The parsed file, or Reject naming the first structural rule it breaks."""
    r = _Bytes(data)
    if len(data) < 4 or data[:4] != b"GGUF":
        raise Reject("not a GGUF file")
    r.pos = 4
    version = r.u32("version")
    if version & 0xFFFF == 0 or version not in (2, 3):
        raise Reject(f"version {version}")
    n_tensors, n_kv = r.u64("tensor count"), r.u64("kv count")
    if n_tensors > INT64_MAX or n_kv > INT64_MAX:
        raise Reject("negative count")
    kvs = [_kv(r) for _ in _bounded(n_kv, r, 14)]
    keys = [k.key for k in kvs]
    if len(set(keys)) != len(keys):
        raise Reject("duplicate key")
    alignment = _alignment(kvs)
    tensors = [_tensor_info(r) for _ in _bounded(n_tensors, r, 24)]
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise Reject("duplicate tensor name")
    data_start = -(-r.pos // alignment) * alignment
    if tensors and data_start > len(data):
        raise Reject("data section past the end")
    expected = 0
    for t in tensors:   # back to back, in order, each padded (gguf.cpp: offset == ctx->size)
        if t.offset != expected:
            raise Reject(f"tensor {t.name!r} at offset {t.offset}, expected {expected}")
        if data_start + t.offset + t.n_bytes > len(data):
            raise Reject(f"tensor {t.name!r} data past the end")
        expected += -(-t.n_bytes // alignment) * alignment
    return Gguf(version, kvs, tensors, alignment, data_start, len(data), data)


def _bounded(n: int, r: _Bytes, min_size: int) -> range:
    if n * min_size > len(r.data) - r.pos:
        raise Reject("counts larger than the file")
    return range(n)


def _kv(r: _Bytes) -> KV:
    pos = r.pos
    lengths = [pos]
    key = r.string("key")
    if not key:
        raise Reject("empty key")
    _utf8(key, "key")
    types = [r.pos]
    vtype = r.u32("value type")
    start = r.pos
    _skip_value(r, vtype, lengths, types)
    return KV(key, vtype, r.data[start:r.pos], pos, start, lengths, types)


def _skip_value(r: _Bytes, vtype: int, lengths: list[int], types: list[int]) -> None:
    if vtype in SCALAR_FMT:
        r.take(struct.calcsize(SCALAR_FMT[vtype]), "value")
    elif vtype == STR:
        lengths.append(r.pos)
        r.string("string value")
    elif vtype == ARR:
        types.append(r.pos)
        itype = r.u32("element type")
        lengths.append(r.pos)
        n = r.u64("array length")
        if itype == ARR or (itype != STR and itype not in SCALAR_FMT):
            raise Reject(f"array element type {itype}")
        if n > MAX_ARRAY:
            raise Reject("array longer than GGUF's limit")
        if itype == STR:
            if 8 * n > len(r.data) - r.pos:
                raise Reject("array past the end")
            for _ in range(n):
                lengths.append(r.pos)
                r.string("array string")
        else:
            r.take(n * struct.calcsize(SCALAR_FMT[itype]), "array")
    else:
        raise Reject(f"value type {vtype}")


def _utf8(b: bytes, what: str) -> None:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        raise Reject(f"{what} not UTF-8") from None


def _alignment(kvs: list[KV]) -> int:
    kv = next((k for k in kvs if k.key == b"general.alignment"), None)
    if kv is None:
        return 32
    if kv.vtype != U32:
        raise Reject("general.alignment not u32")
    a = kv.value()
    assert isinstance(a, int)
    if a == 0 or a & (a - 1):
        raise Reject("alignment not a power of 2")
    return a


def _tensor_info(r: _Bytes) -> Tensor:
    pos = r.pos
    name = r.string("tensor name")
    if len(name) > MAX_NAME:
        raise Reject("tensor name too long")
    _utf8(name, "tensor name")
    ndims_pos = r.pos
    n_dims = r.u32("n_dims")
    if n_dims > 4:
        raise Reject("more than 4 dims")
    dims_pos = r.pos
    dims = [r.u64("dim") for _ in range(n_dims)]
    type_pos = r.pos
    ttype = r.u32("tensor type")
    offset_pos = r.pos
    offset = r.u64("tensor offset")
    if any(d > INT64_MAX for d in dims):
        raise Reject("negative dim")
    if 0 in dims:
        raise Reject("zero dim")
    t = Tensor(name, dims, ttype, offset, pos, ndims_pos, dims_pos, type_pos, offset_pos)
    if t.n_elements > INT64_MAX:
        raise Reject("element count overflows int64")
    if ttype not in BLOCKS:
        raise Reject(f"tensor type {ttype}")
    if (dims[0] if dims else 1) % BLOCKS[ttype][0]:
        raise Reject("row not a multiple of the block")
    return t


# -- writing ---------------------------------------------------------------------------------------

def string(b: bytes) -> bytes:
    return struct.pack("<Q", len(b)) + b


def scalar(vtype: int, v: object) -> bytes:
    return struct.pack(SCALAR_FMT[vtype], v)


def serialize(g: Gguf, blobs: list[bytes] | None = None, *, relayout: bool = True) -> bytes:
    """The file for `g`: its key/values and tensor infos, then the tensor data (`blobs`, default the
    data `g` was parsed from), placed back to back (relayout) or at the offsets the infos give."""
    blobs = blobs if blobs is not None else [g.tensor_bytes(t) for t in g.tensors]
    align = g.alignment
    tensors = g.tensors
    if relayout:
        off, placed = 0, []
        for t, b in zip(tensors, blobs):
            placed.append(replace(t, offset=off))
            off += -(-len(b) // align) * align
        tensors = placed
    head = [b"GGUF", struct.pack("<IQQ", g.version, len(tensors), len(g.kvs))]
    head += [string(k.key) + struct.pack("<I", k.vtype) + k.payload for k in g.kvs]
    for t in tensors:
        head.append(string(t.name) + struct.pack("<I", len(t.dims)) + b"".join(struct.pack("<Q", d) for d in t.dims)
                    + struct.pack("<IQ", t.ttype, t.offset))
    meta = b"".join(head)
    out = bytearray(meta + b"\0" * (-len(meta) % align))
    start = len(out)
    for t, b in zip(tensors, blobs):
        end = start + t.offset + len(b)
        if len(out) < end:
            out.extend(b"\0" * (end - len(out)))
        out[start + t.offset:end] = b
        out.extend(b"\0" * (-len(out) % align))
    return bytes(out)
