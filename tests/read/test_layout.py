"""The validating GGUF reader (gguf/layout.py) and the key rules (read/keys.py): one exact message per
broken rule, naming the file and the key or tensor; the rules llama.cpp's loader relaxes are accepted."""
from __future__ import annotations

import struct
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fuzz import spec
from prism_native.errors import FileFormatError
from prism_native.read.model import Model

ARCH = spec.KV(b"general.architecture", spec.STR, spec.string(b"llama"))
LAYERS = spec.KV(b"llama.block_count", spec.U32, spec.scalar(spec.U32, 1))
A = spec.Tensor(b"blk.0.a.weight", [32, 2], spec.F32, 0)
B = spec.Tensor(b"blk.0.b.weight", [40], spec.F16, 0)     # 80 bytes: the file ends in 16 bytes of padding
BLOBS = [np.arange(64, dtype="<f4").tobytes(), np.ones(40, dtype="<f2").tobytes()]


def gguf_bytes(kvs: list[spec.KV] | None = None, tensors: list[spec.Tensor] | None = None, *, alignment: int = 32,
               version: int = 3, relayout: bool = True) -> bytes:
    g = spec.Gguf(version, [ARCH, LAYERS] if kvs is None else kvs, [A, B] if tensors is None else tensors,
                  alignment, 0, 0, b"")
    return spec.serialize(g, BLOBS[:len(g.tensors)], relayout=relayout)


def error(tmp_path: Path, data: bytes) -> str:
    p = tmp_path / "m.gguf"
    p.write_bytes(data)
    with pytest.raises(FileFormatError) as e:
        Model(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and "\n" not in msg
    return msg[len(str(p)) + 2:]


def patched(data: bytes, pos: int, fmt: str, value: int) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, pos, value)
    return bytes(b)


def test_a_well_formed_file_reads(tmp_path):
    p = tmp_path / "m.gguf"
    p.write_bytes(gguf_bytes())
    m = Model(p)
    assert [(t.name, t.shape, t.n_bytes) for t in m.tensors] == [("blk.0.a.weight", (32, 2), 256),
                                                                 ("blk.0.b.weight", (40,), 80)]
    np.testing.assert_array_equal(m.read("blk.0.a.weight").reshape(-1), np.arange(64, dtype=np.float32))


def test_what_llama_cpp_accepts_is_accepted(tmp_path):
    """Trailing bytes, no padding after the last tensor, version 2, another alignment, an empty name."""
    good = gguf_bytes()
    align64 = spec.KV(b"general.alignment", spec.U32, spec.scalar(spec.U32, 64))
    cases = {"trailing": good + b"\x07" * 100, "unpadded end": good[:-16],
             "version 2": gguf_bytes(version=2), "alignment 64": gguf_bytes([ARCH, LAYERS, align64], alignment=64),
             "empty name": gguf_bytes(tensors=[A, replace(B, name=b"")]),
             "63-byte name": gguf_bytes(tensors=[A, replace(B, name=b"x" * 63)])}
    for what, data in cases.items():
        p = tmp_path / "m.gguf"
        p.write_bytes(data)
        assert len(Model(p).tensors) == 2, what


def test_header_problems(tmp_path):
    good = gguf_bytes()
    assert error(tmp_path, b"") == "empty file, not a GGUF model"
    assert error(tmp_path, b"GGU") == "truncated GGUF file (3 bytes)"
    assert error(tmp_path, b"GGML" + good[4:]) == "not a GGUF file (starts with b'GGML', expected b'GGUF')"
    assert error(tmp_path, good[:20]) == "truncated GGUF file (20 bytes, the header alone needs 24)"
    assert error(tmp_path, patched(good, 4, "<I", 0x03000000)) == "big-endian GGUF files are not supported"
    assert error(tmp_path, patched(good, 4, "<I", 1)) == "GGUF version 1 is no longer supported (versions 2 and 3 are read)"
    assert error(tmp_path, patched(good, 4, "<I", 4)) == "GGUF version 4 is newer than llama.cpp reads (versions 2 and 3 are read)"
    room = len(good) - 24
    assert error(tmp_path, patched(good, 16, "<Q", 1 << 62)) == (
        f"truncated or corrupt GGUF file: the header declares {1 << 62} key/values and 2 tensor infos, more than "
        f"the {room} bytes after it can hold")


def test_key_value_problems(tmp_path):
    def kv(key: bytes, vtype: int, payload: bytes) -> str:
        return error(tmp_path, gguf_bytes([ARCH, LAYERS, spec.KV(key, vtype, payload)]))

    arr = lambda itype, n, body=b"": struct.pack("<IQ", itype, n) + body   # noqa: E731
    assert kv(b"", spec.U8, b"\0") == "key/value 2 has an empty key"
    assert kv(b"general.architecture", spec.U8, b"\0") == "key 'general.architecture' appears twice (key/value 2)"
    assert kv(b"x\xff", spec.U8, b"\0") == "the key of key/value 2 is not valid UTF-8"
    assert kv(b"x", 13, b"") == "key 'x' has unknown value type 13"
    assert kv(b"a\nb", 13, b"") == "key 'a\\nb' has unknown value type 13"      # one line, whatever the key
    assert kv(b"k" * 500, 13, b"") == f"key '{'k' * 80}...' has unknown value type 13"
    assert kv(b"x", spec.ARR, arr(spec.ARR, 1, arr(spec.U8, 1, b"\0"))) == \
        "key 'x' is an array of arrays, which llama.cpp's GGUF loader rejects"
    assert kv(b"x", spec.ARR, arr(77, 0)) == "key 'x' is an array of unknown element type 77"
    assert kv(b"x", spec.ARR, arr(spec.U8, (1 << 30) + 1)) == \
        f"array 'x' declares {(1 << 30) + 1} elements, more than GGUF's limit of {1 << 30}"
    msg = kv(b"x", spec.ARR, arr(spec.STR, 3, spec.string(b"a") + struct.pack("<Q", 1 << 40)))
    assert msg == f"string 1 of array 'x' claims {1 << 40} bytes, more than GGUF's limit of {1 << 30}"
    msg = kv(b"x", spec.ARR, arr(spec.STR, 3, spec.string(b"a") + struct.pack("<Q", 5000)))
    assert msg.startswith("truncated or corrupt GGUF file: string 1 of array 'x' (5000 bytes) needs bytes ")
    assert kv(b"x", spec.STR, struct.pack("<Q", (1 << 30) + 1)) == \
        f"the value of key 'x' claims {(1 << 30) + 1} bytes, more than GGUF's limit of {1 << 30}"


def test_alignment_problems(tmp_path):
    def align(vtype: int, payload: bytes) -> str:
        return error(tmp_path, gguf_bytes([ARCH, LAYERS, spec.KV(b"general.alignment", vtype, payload)]))

    assert align(spec.U64, spec.scalar(spec.U64, 32)) == "key 'general.alignment' must be of type u32 but is u64"
    assert align(spec.U32, spec.scalar(spec.U32, 48)) == "general.alignment 48 is not a power of 2"
    assert align(spec.U32, spec.scalar(spec.U32, 0)) == "general.alignment 0 is not a power of 2"


def test_tensor_info_problems(tmp_path):
    def tensor(t: spec.Tensor) -> str:
        return error(tmp_path, gguf_bytes(tensors=[A, t], relayout=False))

    assert tensor(replace(B, name=b"x" * 64)) == "the name of tensor 1 is 64 bytes long; ggml allows at most 63"
    assert tensor(replace(B, name=b"\xc3")) == "the name of tensor 1 is not valid UTF-8"
    assert tensor(replace(B, name=A.name)) == "tensor 'blk.0.a.weight' appears twice (tensors 0 and 1)"
    assert tensor(replace(B, dims=[1, 1, 1, 1, 40])) == "tensor 'blk.0.b.weight' has 5 dimensions; ggml allows at most 4"
    assert tensor(replace(B, dims=[40, 1 << 63])) == \
        f"tensor 'blk.0.b.weight' has a negative dimension (shape [40, {1 << 63}] read as unsigned)"
    assert tensor(replace(B, dims=[40, 0])) == \
        "tensor 'blk.0.b.weight' has an empty dimension (shape [40, 0]); a model weight never does"
    big = [1 << 32, 1 << 32]
    assert tensor(replace(B, dims=big)) == \
        f"tensor 'blk.0.b.weight' shape {big} has {1 << 64} elements, more than int64 can count"
    assert tensor(replace(B, ttype=4)) == "tensor 'blk.0.b.weight' has unsupported tensor type id 4"
    assert tensor(replace(B, ttype=8)) == "tensor 'blk.0.b.weight' rows of 40 values do not fit type Q8_0 (blocks of 32)"
    assert tensor(replace(B, dims=[48], ttype=12)) == \
        "tensor 'blk.0.b.weight' rows of 48 values do not fit type Q4_K (blocks of 256)"


def test_tensor_placement_problems(tmp_path):
    def placed(offset: int, dims: list[int] | None = None) -> str:
        return error(tmp_path, gguf_bytes(tensors=[A, replace(B, offset=offset, dims=dims or B.dims)], relayout=False))

    assert placed(8) == "tensor 'blk.0.b.weight' data offset 8 is not a multiple of the alignment 32"
    assert placed(224) == "tensor 'blk.0.b.weight' (data bytes 224..304) overlaps tensor 'blk.0.a.weight' (bytes 0..256)"
    assert placed(288) == ("tensor 'blk.0.b.weight' data starts at offset 288, but the tensors before it end at 256; "
                           "llama.cpp needs the tensors back to back in file order")
    msg = placed(256, [1 << 20, 1 << 20])   # a declared 2^40-element tensor: refused, never allocated
    assert msg.startswith("tensor 'blk.0.b.weight' data runs past the end of the file (bytes ")
    assert msg.endswith("); the file is truncated or corrupt")


def test_keys_prism_native_reads_have_llama_cpp_types(tmp_path):
    def key(k: bytes, vtype: int, payload: bytes, extra: tuple[spec.KV, ...] = ()) -> str:
        return error(tmp_path, gguf_bytes([ARCH, LAYERS, spec.KV(k, vtype, payload), *extra]))

    assert key(b"split.count", spec.STR, spec.string(b"2")) == "key 'split.count' has wrong type str but expected type u16"
    assert key(b"split.count", spec.U16, spec.scalar(spec.U16, 2)) == (
        "part of a 2-part split set, but its name does not follow the NAME-00001-of-0000N.gguf pattern; "
        "open it by that name")
    assert key(b"llama.block_count", spec.U32, spec.scalar(spec.U32, 513)) == \
        "key 'llama.block_count' appears twice (key/value 2)"
    assert error(tmp_path, gguf_bytes([ARCH, spec.KV(b"llama.block_count", spec.U32, spec.scalar(spec.U32, 513))])) == \
        "key 'llama.block_count' is 513; llama.cpp needs 1..512"
    assert key(b"llama.embedding_length", spec.I64, spec.scalar(spec.I64, 8)) == \
        "key 'llama.embedding_length' has wrong type i64 but expected type u32"
    heads = struct.pack("<IQ", spec.I32, 2) + struct.pack("<ii", 4, 4)
    assert key(b"llama.attention.head_count", spec.ARR, heads) == \
        "key 'llama.attention.head_count' has wrong array length; expected 1 (one per layer), got 2"
    assert key(b"llama.expert_used_count", spec.U32, spec.scalar(spec.U32, 2)) == \
        "key 'llama.expert_used_count' is 2 with 0 experts; llama.cpp needs 0 without experts"
    assert error(tmp_path, gguf_bytes([LAYERS])) == "no general.architecture key; not a llama.cpp model"
    assert error(tmp_path, gguf_bytes(tensors=[])) == "holds no tensors (a vocabulary-only GGUF?); nothing to quantize"


def test_validation_costs_little_on_a_big_tokenizer(tmp_path):
    """128k tokens and 280k merges (Llama-3's tokenizer) open in about the time the reading alone takes."""
    n = 1 << 17
    tokens = struct.pack("<IQ", spec.STR, n) + b"".join(spec.string(b"tok%06d" % i) for i in range(n))
    data = gguf_bytes([ARCH, LAYERS, spec.KV(b"tokenizer.ggml.tokens", spec.ARR, tokens)])
    p = tmp_path / "m.gguf"
    p.write_bytes(data)
    t0 = time.perf_counter()
    m = Model(p)
    assert len(m.kv("tokenizer.ggml.tokens")) == n
    assert time.perf_counter() - t0 < 5.0   # ~0.15 s unloaded; a generous bound for a loaded CI machine
