"""Seeded mutation strategies: each turns one well-formed GGUF into a mutant, aiming at a structure.

A strategy takes a seeded Random and the parsed base file (spec.Gguf) and returns the mutant's bytes
and a short description. Byte-level strategies patch fields at the positions spec.parse recorded
(lying counts, lengths, offsets, dimensions, types); structural ones edit the parsed form and
re-serialize it (nested arrays, renamed tensors, another alignment, injected keys); value ones
rewrite a tensor's data (NaN/Inf, subnormal, huge, constant, rank-1, zero rows). Whether a mutant is
valid is not decided here: the oracle judges every mutant on its own.
"""
from __future__ import annotations

import random
import struct
from dataclasses import replace
from typing import Callable

import numpy as np

from . import spec

Mutation = tuple[bytes, str]
Strategy = Callable[[random.Random, spec.Gguf], Mutation]

_EDGE_U64 = (0, 1, 2, 1 << 31, 1 << 32, (1 << 32) + 1, 1 << 40, (1 << 62), (1 << 63) - 1, 1 << 63, (1 << 64) - 1)


def _patch(data: bytes, pos: int, fmt: str, value: int) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, pos, value & ((1 << (8 * struct.calcsize(fmt))) - 1))
    return bytes(b)


def _lie(rng: random.Random, old: int) -> int:
    """A plausible or extreme wrong value for a count, length, offset or dimension."""
    pick = rng.random()
    if pick < 0.45:
        return max(0, old + rng.choice((-1, 1, -2, 2, 8, -8, 32, -32, 255, 4096)))
    if pick < 0.65:
        return rng.choice((old * 2, old // 2, old * 256, old + (1 << 32)))
    return rng.choice(_EDGE_U64)


def _tensor(rng: random.Random, g: spec.Gguf) -> spec.Tensor:
    return rng.choice(g.tensors)


# -- bytes ---------------------------------------------------------------------------------------------

def truncate(rng: random.Random, g: spec.Gguf) -> Mutation:
    points = [rng.randrange(g.size), rng.randrange(min(g.size, 64)), rng.randrange(g.data_start + 1)]
    t = _tensor(rng, g)
    end = g.data_start + t.offset + t.n_bytes
    points += [g.data_start, g.data_start + t.offset, end, end - 1, end + rng.randrange(32)]
    last = g.tensors[-1]
    points.append(g.data_start + last.offset + last.n_bytes)   # only the trailing padding goes: still valid
    cut = min(rng.choice(points), g.size - 1)
    return g.data[:cut], f"cut at {cut} of {g.size}"


def byte_flip(rng: random.Random, g: spec.Gguf) -> Mutation:
    b = bytearray(g.data)
    where = []
    for _ in range(rng.randint(1, 4)):
        pos = rng.randrange(g.data_start if rng.random() < 0.7 else g.size)
        b[pos] = b[pos] ^ (1 << rng.randrange(8)) if rng.random() < 0.5 else rng.randrange(256)
        where.append(pos)
    return bytes(b), f"bytes at {where}"


def lie_count(rng: random.Random, g: spec.Gguf) -> Mutation:
    pos = rng.choice((8, 16))
    old = struct.unpack_from("<Q", g.data, pos)[0]
    new = _lie(rng, old)
    return _patch(g.data, pos, "<Q", new), f"{'tensor' if pos == 8 else 'kv'} count {old} -> {new}"


def lie_length(rng: random.Random, g: spec.Gguf) -> Mutation:
    fields = [p for kv in g.kvs for p in kv.length_fields] + [t.pos for t in g.tensors]
    pos = rng.choice(fields)
    old = struct.unpack_from("<Q", g.data, pos)[0]
    new = _lie(rng, old)
    return _patch(g.data, pos, "<Q", new), f"length at {pos}: {old} -> {new}"


def lie_offset(rng: random.Random, g: spec.Gguf) -> Mutation:
    t = _tensor(rng, g)
    new = rng.choice((t.offset + g.alignment, max(0, t.offset - g.alignment), t.offset + 1,
                      t.offset + rng.randrange(1, g.alignment), 0, g.size, _lie(rng, t.offset)))
    return _patch(g.data, t.offset_pos, "<Q", new), f"{t.name!r} offset {t.offset} -> {new}"


def overlap(rng: random.Random, g: spec.Gguf) -> Mutation:
    i = rng.randrange(1, len(g.tensors))
    t, prev = g.tensors[i], g.tensors[rng.randrange(i)]
    return _patch(g.data, t.offset_pos, "<Q", prev.offset), f"{t.name!r} placed on {prev.name!r}"


def misalign(rng: random.Random, g: spec.Gguf) -> Mutation:
    t = _tensor(rng, g)
    new = t.offset + rng.randrange(1, g.alignment)
    return _patch(g.data, t.offset_pos, "<Q", new), f"{t.name!r} offset {t.offset} -> {new}"


def swap_offsets(rng: random.Random, g: spec.Gguf) -> Mutation:
    a, b = rng.sample(g.tensors, 2)
    data = _patch(g.data, a.offset_pos, "<Q", b.offset)
    return _patch(data, b.offset_pos, "<Q", a.offset), f"offsets of {a.name!r} and {b.name!r} swapped"


def dims(rng: random.Random, g: spec.Gguf) -> Mutation:
    t = _tensor(rng, g)
    if rng.random() < 0.25:
        new = rng.choice((0, 1, 3, 5, 255, 1 << 31))
        return _patch(g.data, t.ndims_pos, "<I", new), f"{t.name!r} n_dims {len(t.dims)} -> {new}"
    k = rng.randrange(len(t.dims))
    old = t.dims[k]
    new = rng.choice((0, 1, 1 << 20, 1 << 40, old * 2, max(1, old // 2), _lie(rng, old)))
    return _patch(g.data, t.dims_pos + 8 * k, "<Q", new), f"{t.name!r} dim {k} {old} -> {new}"


def huge_shape(rng: random.Random, g: spec.Gguf) -> Mutation:
    """A 2^40-element (or larger) tensor declared, consistent dims: must never be allocated."""
    t = next((u for u in g.tensors if len(u.dims) == 2), g.tensors[0])
    e = rng.choice((20, 30, 31, 32))
    data = _patch(g.data, t.dims_pos + 8 * (len(t.dims) - 1), "<Q", 1 << e)
    return data, f"{t.name!r} dim -> 2^{e}"


_SIBLINGS = {0: (26,), 1: (30, 25), 30: (1, 25), 8: (8,), 2: (20,), 20: (2,)}   # same bytes per value


def tensor_type(rng: random.Random, g: spec.Gguf) -> Mutation:
    t = _tensor(rng, g)
    new = rng.choice(_SIBLINGS.get(t.ttype, (t.ttype,))) if rng.random() < 0.4 else \
        rng.choice((4, 5, 31, 36, 42, 43, 99, 1 << 31, (1 << 32) - 1, rng.randrange(44)))
    return _patch(g.data, t.type_pos, "<I", new), f"{t.name!r} type {t.ttype} -> {new}"


def value_type(rng: random.Random, g: spec.Gguf) -> Mutation:
    kv = rng.choice(g.kvs)
    pos = rng.choice(kv.type_fields)
    new = rng.choice((13, 14, 99, 255, (1 << 32) - 1, spec.ARR, spec.STR, spec.U64, spec.I32, spec.BOOL, spec.F64))
    return _patch(g.data, pos, "<I", new), f"type tag of {kv.key!r} -> {new}"


def version(rng: random.Random, g: spec.Gguf) -> Mutation:
    new = rng.choice((0, 1, 2, 4, 0x03000000, 0x00030000, (1 << 32) - 1))
    return _patch(g.data, 4, "<I", new), f"version -> {new:#x}"


def magic(rng: random.Random, g: spec.Gguf) -> Mutation:
    pick = rng.randrange(4)
    if pick == 0:
        return b"", "empty file"
    if pick == 1:
        n = rng.randrange(1, 24)
        return g.data[:n], f"first {n} bytes"
    b = bytearray(g.data)
    b[rng.randrange(4)] ^= 1 << rng.randrange(8)
    return bytes(b), "magic bit flipped"


def trailing(rng: random.Random, g: spec.Gguf) -> Mutation:
    last = g.tensors[-1]
    end = g.data_start + last.offset + last.n_bytes
    pick = rng.randrange(3)
    if pick == 0:
        extra = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        return g.data + extra, f"{len(extra)} bytes appended"
    if pick == 1:
        return g.data[:end], "trailing padding removed"
    return g.data[:end - 1], "last byte of data removed"


# -- structure (edit and re-serialize) ----------------------------------------------------------------

def _kv(key: str, vtype: int, payload: bytes) -> spec.KV:
    return spec.KV(key.encode(), vtype, payload)


def _with_kvs(g: spec.Gguf, add: list[spec.KV], drop: tuple[bytes, ...] = ()) -> spec.Gguf:
    keys = {k.key for k in add} | set(drop)
    return replace(g, kvs=[k for k in g.kvs if k.key not in keys] + add)


def _array(itype: int, values: list[bytes]) -> bytes:
    return struct.pack("<IQ", itype, len(values)) + b"".join(values)


def nested_array(rng: random.Random, g: spec.Gguf) -> Mutation:
    depth = rng.choice((2, 3, 8, 64, 1000, 20000))
    inner = _array(spec.U32, [struct.pack("<I", 7)])
    for _ in range(depth - 1):
        inner = _array(spec.ARR, [inner])
    key = rng.choice(("test.nested", "tokenizer.ggml.scores"))
    return spec.serialize(_with_kvs(g, [_kv(key, spec.ARR, inner)])), f"{key}: arrays nested {depth} deep"


def alignment(rng: random.Random, g: spec.Gguf) -> Mutation:
    pick = rng.randrange(6)
    if pick == 0:
        a = rng.choice((1, 8, 16, 64, 128, 4096))
        ng = replace(_with_kvs(g, [_kv("general.alignment", spec.U32, spec.scalar(spec.U32, a))]), alignment=a)
        return spec.serialize(ng), f"alignment {a}, tensors laid out for it"
    if pick == 1:
        a = rng.choice((16, 64, 128))
        ng = _with_kvs(g, [_kv("general.alignment", spec.U32, spec.scalar(spec.U32, a))])
        return spec.serialize(ng), f"alignment {a}, tensors laid out for {g.alignment}"
    if pick == 2:
        a = rng.choice((0, 3, 24, 48, 100, (1 << 32) - 1))
        return spec.serialize(_with_kvs(g, [_kv("general.alignment", spec.U32, spec.scalar(spec.U32, a))])), \
            f"alignment {a}"
    vtype, payload = rng.choice(((spec.U64, spec.scalar(spec.U64, 32)), (spec.I32, spec.scalar(spec.I32, 32)),
                                 (spec.STR, spec.string(b"32")), (spec.ARR, _array(spec.U32, [spec.scalar(spec.U32, 32)]))))
    return spec.serialize(_with_kvs(g, [_kv("general.alignment", vtype, payload)])), f"alignment of type {vtype}"


def duplicate(rng: random.Random, g: spec.Gguf) -> Mutation:
    if rng.random() < 0.5:
        a, b = rng.sample(range(len(g.tensors)), 2)
        ts = list(g.tensors)
        ts[b] = replace(ts[b], name=ts[a].name)
        return spec.serialize(replace(g, tensors=ts)), f"tensor {b} renamed {ts[a].name!r}"
    a, b = rng.sample(range(len(g.kvs)), 2)
    kvs = list(g.kvs)
    kvs[b] = replace(kvs[b], key=kvs[a].key)
    return spec.serialize(replace(g, kvs=kvs)), f"key {b} renamed {kvs[a].key!r}"


def name_length(rng: random.Random, g: spec.Gguf) -> Mutation:
    i = rng.randrange(len(g.tensors))
    n = rng.choice((0, 1, 62, 63, 64, 65, 200, 5000))
    ts = list(g.tensors)
    ts[i] = replace(ts[i], name=(ts[i].name + b"x" * n)[:n])
    return spec.serialize(replace(g, tensors=ts)), f"tensor {i} name of {n} bytes"


def bad_utf8(rng: random.Random, g: spec.Gguf) -> Mutation:
    pick = rng.randrange(4)
    junk = rng.choice((b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80abc"))
    if pick == 0:
        ts = list(g.tensors)
        i = rng.randrange(len(ts))
        ts[i] = replace(ts[i], name=ts[i].name[:-1] + junk)
        return spec.serialize(replace(g, tensors=ts)), f"tensor {i} name not UTF-8"
    if pick == 1:
        kvs = list(g.kvs)
        i = rng.randrange(len(kvs))
        kvs[i] = replace(kvs[i], key=kvs[i].key + junk)
        return spec.serialize(replace(g, kvs=kvs)), f"key {i} not UTF-8"
    key = "general.architecture" if pick == 2 else "general.name"
    arch = g.kv("general.architecture")
    value = (arch.payload[8:] if arch is not None and pick == 2 else b"synthetic") + junk
    return spec.serialize(_with_kvs(g, [_kv(key, spec.STR, spec.string(value))])), f"{key} value not UTF-8"


def split_keys(rng: random.Random, g: spec.Gguf) -> Mutation:
    key = rng.choice(("split.count", "split.no", "split.tensors.count"))
    vtype, payload = rng.choice((
        (spec.STR, spec.string(b"2")), (spec.U32, spec.scalar(spec.U32, 2)), (spec.U16, spec.scalar(spec.U16, 2)),
        (spec.U16, spec.scalar(spec.U16, 1)), (spec.U16, spec.scalar(spec.U16, 0)),
        (spec.I32, spec.scalar(spec.I32, len(g.tensors))), (spec.F32V, spec.scalar(spec.F32V, 2.0)),
        (spec.ARR, _array(spec.U16, [spec.scalar(spec.U16, 2)]))))
    return spec.serialize(_with_kvs(g, [_kv(key, vtype, payload)])), f"{key} = type {vtype} {payload[:12]!r}"


def hparams(rng: random.Random, g: spec.Gguf) -> Mutation:
    arch_kv = g.kv("general.architecture")
    arch = arch_kv.payload[8:].decode() if arch_kv is not None else "llama"
    block = g.kv(f"{arch}.block_count")
    n_layer = int(block.value()) if block is not None else 0   # type: ignore[arg-type]
    per_layer = lambda itype, n, v: _array(itype, [spec.scalar(itype, v)] * n)   # noqa: E731
    key, vtype, payload = rng.choice((
        ("block_count", spec.STR, spec.string(b"2")), ("block_count", spec.F32V, spec.scalar(spec.F32V, 2.0)),
        ("block_count", spec.U64, spec.scalar(spec.U64, n_layer)), ("block_count", spec.U32, spec.scalar(spec.U32, 0)),
        ("block_count", spec.U32, spec.scalar(spec.U32, 513)), ("block_count", spec.U32, spec.scalar(spec.U32, 1 << 31)),
        ("block_count", spec.U32, spec.scalar(spec.U32, n_layer + 3)),
        ("attention.head_count", spec.ARR, per_layer(spec.I32, n_layer, 4)),
        ("attention.head_count", spec.ARR, per_layer(spec.U32, n_layer + 1, 4)),
        ("attention.head_count", spec.ARR, per_layer(spec.F32V, n_layer, 4.0)),
        ("attention.head_count_kv", spec.STR, spec.string(b"1")),
        ("attention.head_count_kv", spec.U32, spec.scalar(spec.U32, 0)),
        ("expert_count", spec.U32, spec.scalar(spec.U32, 2000)), ("expert_count", spec.U32, spec.scalar(spec.U32, 8)),
        ("expert_count", spec.U32, spec.scalar(spec.U32, 0)), ("expert_used_count", spec.U32, spec.scalar(spec.U32, 2)),
        ("nextn_predict_layers", spec.U32, spec.scalar(spec.U32, n_layer + 1)),
        ("embedding_length", spec.I64, spec.scalar(spec.I64, 256)),
    ))
    return spec.serialize(_with_kvs(g, [_kv(f"{arch}.{key}", vtype, payload)])), f"{key} = type {vtype}"


def no_architecture(rng: random.Random, g: spec.Gguf) -> Mutation:
    if rng.random() < 0.5:
        return spec.serialize(_with_kvs(g, [], drop=(b"general.architecture",))), "general.architecture removed"
    vtype, payload = rng.choice(((spec.U32, spec.scalar(spec.U32, 1)), (spec.STR, spec.string(b"")),
                                 (spec.STR, spec.string(b"qwen99"))))
    return spec.serialize(_with_kvs(g, [_kv("general.architecture", vtype, payload)])), f"architecture {payload!r}"


# -- values (rewrite one tensor's data) ----------------------------------------------------------------

def _encode(x: np.ndarray, ttype: int) -> bytes | None:
    if ttype == spec.F32:
        return x.astype("<f4").tobytes()
    if ttype == spec.F16:
        with np.errstate(over="ignore"):
            return x.astype("<f2").tobytes()
    if ttype == spec.BF16:
        return (x.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
    if ttype == spec.Q8_0:
        blocks = x.astype(np.float32).reshape(-1, 32)
        amax = np.abs(blocks).max(axis=1)
        out = np.empty((blocks.shape[0], 34), np.uint8)
        with np.errstate(all="ignore"):   # NaN/Inf blocks are what the value strategies write
            d = (amax / 127).astype("<f2")
            q = np.where(amax[:, None] > 0, np.round(blocks / np.where(amax > 0, amax / 127, 1)[:, None]), 0)
            out[:, 2:] = np.clip(np.nan_to_num(q), -127, 127).astype(np.int8).view(np.uint8)
        out[:, :2] = d.reshape(-1, 1).view(np.uint8)
        return out.tobytes()
    return None


def _rewrite(g: spec.Gguf, t: spec.Tensor, x: np.ndarray) -> bytes | None:
    raw = _encode(x.reshape(-1), t.ttype)
    if raw is None or len(raw) != t.n_bytes:
        return None
    b = bytearray(g.data)
    a = g.data_start + t.offset
    b[a:a + t.n_bytes] = raw
    return bytes(b)


def _values_of(g: spec.Gguf, t: spec.Tensor) -> np.ndarray:
    from .oracle import tensor_values
    v = tensor_values(g.tensor_bytes(t), t.ttype)
    return np.zeros(t.n_elements) if v is None else v


def _value_mutation(rng: random.Random, g: spec.Gguf, make: Callable[[np.ndarray], tuple[np.ndarray, str]]) -> Mutation:
    for _ in range(8):
        t = _tensor(rng, g)
        x = _values_of(g, t).astype(np.float64).reshape(-1, t.dims[0])
        y, what = make(x.copy())
        out = _rewrite(g, t, y)
        if out is not None:
            return out, f"{t.name!r}: {what}"
    return g.data, "no tensor could be rewritten"


def nonfinite(rng: random.Random, g: spec.Gguf) -> Mutation:
    def make(x: np.ndarray) -> tuple[np.ndarray, str]:
        v = rng.choice((np.nan, np.inf, -np.inf))
        idx = [rng.randrange(x.size) for _ in range(rng.randint(1, 3))]
        x.reshape(-1)[idx] = v
        return x, f"{v} at {idx}"
    return _value_mutation(rng, g, make)


def subnormal(rng: random.Random, g: spec.Gguf) -> Mutation:
    def make(x: np.ndarray) -> tuple[np.ndarray, str]:
        scale = rng.choice((1e-40, 1e-44, 6e-8, 1e-39))
        x = np.sign(x) * scale * (1 + np.arange(x.size).reshape(x.shape) % 7)
        return x, f"subnormal values ~{scale:g}"
    return _value_mutation(rng, g, make)


def huge(rng: random.Random, g: spec.Gguf) -> Mutation:
    def make(x: np.ndarray) -> tuple[np.ndarray, str]:
        big = rng.choice((65504.0, 6e5, 1e7, 1e9, 1e30, 3.4e38))
        if rng.random() < 0.5:
            x.reshape(-1)[rng.randrange(x.size)] = big
            return x, f"one value {big:g}"
        return np.sign(x) * big, f"all values +-{big:g}"
    return _value_mutation(rng, g, make)


def degenerate(rng: random.Random, g: spec.Gguf) -> Mutation:
    def make(x: np.ndarray) -> tuple[np.ndarray, str]:
        pick = rng.randrange(6)
        if pick == 0:
            return np.full_like(x, 0.03), "constant"
        if pick == 1:
            u, v = x[:, :1], x[:1, :]
            return u @ v, "rank 1"
        if pick == 2:
            return np.zeros_like(x), "all zero"
        if pick == 3:
            x[::2] = 0
            return x, "every other row zero"
        if pick == 4:
            y = np.zeros_like(x)
            y.reshape(-1)[rng.randrange(x.size)] = 1.0
            return y, "one nonzero value"
        return np.where(np.arange(x.size).reshape(x.shape) % 2, 0.02, -0.02), "alternating +-0.02"
    return _value_mutation(rng, g, make)


STRATEGIES: dict[str, Strategy] = {
    "truncate": truncate, "byte_flip": byte_flip, "lie_count": lie_count, "lie_length": lie_length,
    "lie_offset": lie_offset, "overlap": overlap, "misalign": misalign, "swap_offsets": swap_offsets,
    "dims": dims, "huge_shape": huge_shape, "tensor_type": tensor_type, "value_type": value_type,
    "version": version, "magic": magic, "trailing": trailing, "nested_array": nested_array,
    "alignment": alignment, "duplicate": duplicate, "name_length": name_length, "bad_utf8": bad_utf8,
    "split_keys": split_keys, "hparams": hparams, "no_architecture": no_architecture,
    "nonfinite": nonfinite, "subnormal": subnormal, "huge": huge, "degenerate": degenerate,
}
VALUE_STRATEGIES = frozenset({"nonfinite", "subnormal", "huge", "degenerate"})
