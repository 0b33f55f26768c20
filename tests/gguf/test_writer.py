"""The metadata serialiser (gguf/writer.py): gguf_set_kv + gguf_write_out, and llama-quantize's key edits
(llama/sizes.output_kvs) on top of it."""
from __future__ import annotations

import struct
from dataclasses import replace

import gguf
import numpy as np
import pytest
from support import synth

from prism_native.errors import FileFormatError
from prism_native.gguf import writer as gw
from prism_native.llama import sizes
from prism_native.progress import Progress
from prism_native.quant import fp32_to_bf16, fp32_to_fp16
from prism_native.read.model import Model
from prism_native.write.kv_override import atof, atol, parse_kv_override


def _raw_field(path, field) -> bytes:
    size = sum(int(np.asarray(p).nbytes) for p in field.parts)
    with open(path, "rb") as f:
        f.seek(field.offset)
        return f.read(size)


def test_fields_serialise_to_their_input_bytes(tmp_path, smollm2_path):
    """Without NULs in strings or odd bool bytes, a copied key/value is written exactly as it was read."""
    src = tmp_path / "m.gguf"
    synth.write(src, replace(synth.VARIANTS["dense"], n_layer=1, byte_tokenizer=True, n_vocab=512,
                             kv={"x.f": 0.5, "x.s": "text"}))
    for path in (src, smollm2_path):
        r = gguf.GGUFReader(path)
        for k, f in r.fields.items():
            if k.startswith("GGUF."):
                continue
            assert gw.kv_from_field(f).data == _raw_field(path, f), k
            assert gw.kv_from_field(f).nbytes == len(_raw_field(path, f))


def test_nul_and_bool_as_ggml_copies_them(tmp_path):
    path = tmp_path / "k.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_string("s.nul", "ab\0cd")
    w.add_array("a.nul", ["x\0y", "z"])
    w.add_bool("b.true", True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    f = gguf.GGUFReader(path).fields
    assert gw.kv_from_field(f["s.nul"]).data.endswith(struct.pack("<iQ", 8, 2) + b"ab")
    assert gw.kv_from_field(f["a.nul"]).data.endswith(struct.pack("<iiQ", 9, 8, 2) + struct.pack("<Q", 1) + b"x"
                                                       + struct.pack("<Q", 1) + b"z")
    assert gw.kv_from_field(f["b.true"]).data.endswith(struct.pack("<iB", 7, 1))


def test_set_moves_a_key_to_the_end():
    """gguf_set_val_*: remove, then append. Overrides come after the split keys are removed, so an
    override of split.count stays (as in llama_model_quantize_impl)."""
    merged: list[gw.KV] = []
    for kv in [gw.KV.u32("a", 1), gw.KV.u32("general.file_type", 7), gw.KV.u32("b", 2), gw.KV.u32("a", 9)]:
        gw.set_kv(merged, kv)
    assert [k.name for k in merged] == ["general.file_type", "b", "a"]
    final = sizes.output_kvs([], 15, [*merged, gw.KV.u32("split.count", 3)])
    assert [k.name for k in final] == ["general.quantization_version", "general.file_type", "b", "a", "split.count"]
    assert final[1].data.endswith(struct.pack("<iI", 4, 7))      # the override of general.file_type wins


def test_output_kvs_of_a_model(tmp_path):
    src = tmp_path / "m.gguf"
    synth.write(src, replace(synth.VARIANTS["dense"], n_layer=1,
                             kv={"general.file_type": 1, "general.quantization_version": 2, "z.last": 1}))
    m = Model(src)
    names = [kv.name for kv in sizes.output_kvs(m.fields.values(), 15, [gw.KV.string("general.name", "x")])]
    assert names[-3:] == ["general.quantization_version", "general.file_type", "general.name"]
    assert names.index("z.last") < names.index("general.quantization_version")


def test_bad_alignment_key_is_refused():
    with pytest.raises(FileFormatError, match="power of two"):
        sizes.output_kvs([], 1, [gw.KV.u32("general.alignment", 48)])
    with pytest.raises(FileFormatError, match="u32"):
        sizes.output_kvs([], 1, [gw.KV.string("general.alignment", "32")])


def test_layout_matches_the_size_estimate(tmp_path):
    src = tmp_path / "m.gguf"
    synth.write(src, synth.VARIANTS["moe"])
    m = Model(src)
    types = {t.name: "Q4_K" for t in m.tensors if t.n_dims >= 2 and "gate_inp" not in t.name}
    extra = sizes.imatrix_kv("im.gguf", "d", True, entries=3, chunks=4)
    lay = sizes.output_layout(m, types, extra_kv=extra)
    est = sizes.estimate(m, types, extra_kv=extra)
    assert lay.file_nbytes == est.file_bytes and lay.meta_nbytes == est.meta_bytes
    assert len(lay.meta()) == lay.meta_nbytes and lay.offsets[0] == 0
    assert all(o % 32 == 0 for o in lay.offsets)


def test_tensor_info_counts_dims_as_ggml():
    assert gw.tensor_info("a.weight", (576, 1), 0, 64) == (struct.pack("<Q", 8) + b"a.weight"
                                                           + struct.pack("<IqiQ", 1, 576, 0, 64))


def test_kv_overrides_as_llama_quantize_writes_them():
    assert parse_kv_override("k=int:-7").data.endswith(struct.pack("<iI", 4, 7))
    assert parse_kv_override("k=int:12abc").data.endswith(struct.pack("<iI", 4, 12))
    assert parse_kv_override("k=float:0.1").data.endswith(struct.pack("<i", 6) + np.float32(0.1).tobytes())
    assert parse_kv_override("k=float:1e300").data.endswith(struct.pack("<i", 6) + np.float32(np.inf).tobytes())
    assert parse_kv_override("k=bool:false").data.endswith(struct.pack("<iB", 7, 0))
    assert parse_kv_override("k=str:hi").data.endswith(struct.pack("<iQ", 8, 2) + b"hi")
    assert atol("  +42x") == 42 and atol("x") == 0 and atof("0x1p3") == 8.0 and atof("-inf") == -np.inf
    assert atof("1e") == 1.0 and atof(".5e-1z") == 0.05


def test_fp16_and_bf16_conversions_against_ggml(ggml):
    """ggml_fp32_to_fp16_row / ggml_fp32_to_bf16_row_ref on edge values, every rounding tie and its
    neighbours, and random bit patterns."""
    import ctypes

    lib = ggml.lib
    rng = np.random.default_rng(0)
    special = np.array([0.0, -0.0, 1.0, 65504.0, 65519.99, 65520.0, 1e-8, 5.96e-8, 2.98e-8, 6.1e-5, 3.4e38,
                        -3.4e38, np.inf, -np.inf], np.float32)
    bits = rng.integers(0, 2**32, 200000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    bits = bits[np.isfinite(bits)]
    k = np.arange(0x7BFF, dtype=np.uint16)                     # every finite positive half but the largest
    lo, hi = k.view(np.float16).astype(np.float64), (k + 1).view(np.float16).astype(np.float64)
    mids = ((lo + hi) / 2).astype(np.float32)                  # exact ties: round to even
    near = np.concatenate([np.nextafter(mids, np.float32(0)), np.nextafter(mids, np.float32(np.inf))])
    x = np.concatenate([special, bits, mids, near])
    x = np.ascontiguousarray(np.concatenate([x, -x]), np.float32)
    ref16 = np.empty(x.size, np.uint16)
    lib.ggml_fp32_to_fp16_row(x.ctypes.data_as(ctypes.c_void_p), ref16.ctypes.data_as(ctypes.c_void_p),
                              ctypes.c_int64(x.size))
    np.testing.assert_array_equal(fp32_to_fp16(x).view(np.uint16), ref16)
    xb = np.concatenate([x, np.array([np.nan], np.float32), np.array([0x7F800001], np.uint32).view(np.float32)])
    refb = np.empty(xb.size, np.uint16)
    lib.ggml_fp32_to_bf16_row_ref(xb.ctypes.data_as(ctypes.c_void_p), refb.ctypes.data_as(ctypes.c_void_p),
                                  ctypes.c_int64(xb.size))
    np.testing.assert_array_equal(fp32_to_bf16(xb), refb)


def test_progress_shows_rate_and_item():
    import io

    s = io.StringIO()
    p = Progress(2e6, "quantize", stream=s, enabled=True, rate_unit="MB/s", rate_scale=1e-6)
    p.update(1e6, "blk.0.attn_q.weight F16->Q4_K")
    p.close()
    out = s.getvalue()
    assert "MB/s" in out and "blk.0.attn_q.weight F16->Q4_K" in out and "left" in out
