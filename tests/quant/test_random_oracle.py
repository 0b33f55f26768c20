"""Random inputs against ggml's own library, and agreement of the ISA paths with each other.

The oracle tests call ggml_quantize_chunk / to_float of libggml-base through ctypes (tests/ggml_oracle.py);
they run when the library is found ($PRISM_GGML_LIB, e.g. /work/ext/build/bin/libggml-base.so, or an
installed llama-cpp-python) and are skipped otherwise. The ISA-agreement test needs no library. Every
type of the golden sets that prism_native implements is covered (the low-bit ones included), with and
without an imatrix; a type ggml refuses to quantize without one must refuse as well.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable

import numpy as np
import pytest

import prism_native
from prism_native import qtypes
from prism_native.quant import dequantize, quantize
from support.golden import LOW_BIT_TYPES, TYPES

ISAS = prism_native.cpu_features()["usable"]
NATIVE = [t for t in TYPES + LOW_BIT_TYPES if t in qtypes.all_types() and qtypes.get(t).native]

Gen = Callable[[np.random.Generator, int, int], np.ndarray]


def _normal(rng: np.random.Generator, r: int, c: int) -> np.ndarray:
    return rng.normal(0.0, 0.02, (r, c))


def _student_t(rng: np.random.Generator, r: int, c: int) -> np.ndarray:
    return 0.02 * rng.standard_t(2.0, (r, c))


def _mixed_scales(rng: np.random.Generator, r: int, c: int) -> np.ndarray:
    """Magnitudes 1e-8..1e2 varying per 16-value sub-block: fp16 underflow, subnormal and normal scales."""
    sub = 10.0 ** rng.uniform(-8.0, 2.0, (r, c // 16, 1))
    return (rng.normal(size=(r, c // 16, 16)) * sub).reshape(r, c)


def _grid(rng: np.random.Generator, r: int, c: int) -> np.ndarray:
    """Values on a 2^-6 grid with zeros, constant runs and one-signed rows: exact rounding ties."""
    x = rng.integers(-64, 65, (r, c)) / 64.0
    x[:, ::7] = 0.0
    x[0::3] = np.abs(x[0::3])
    x[1::3, :32] = 0.25
    return x


def _signed_zeros(rng: np.random.Generator, r: int, c: int) -> np.ndarray:
    """Zeros of both signs and tied magnitudes: ggml's first-occurrence rule decides the sign of a zero
    min, max or absmax (all-zero, one-signed and +-a tied blocks)."""
    x = rng.choice(np.array([0.0, -0.0, 0.5, -0.5, 1.0, -1.0]), (r, c))
    blocks = x.reshape(r, c // 32, 32)
    blocks[:, 0::4] = rng.choice(np.array([0.0, -0.0]), blocks[:, 0::4].shape)         # all zero
    one = np.abs(blocks[:, 1::4]) * rng.choice([1.0, -1.0], (r, 1, 1))                  # one-signed,
    zeros = rng.random(one.shape) < 0.3                                                  # zeros of both
    one[zeros] = rng.choice(np.array([0.0, -0.0]), zeros.sum())                         # signs anywhere
    one[..., 0] = np.where(rng.random(one.shape[:2]) < 0.5, one[..., 0], 0.75)          # not always first
    blocks[:, 1::4] = one
    return x


def _tiny(rng: np.random.Generator, r: int, c: int) -> np.ndarray:
    """fp32-subnormal and near-subnormal blocks: 1/d overflows to inf (levels from ggml's casts of NaN/inf)."""
    x = rng.normal(size=(r, c)) * 10.0 ** rng.uniform(-45.0, -36.0, (r, c // 32, 1)).repeat(32, axis=1).reshape(r, c)
    x[:, ::5] = 0.0
    return x


def _narrow(rng: np.random.Generator, r: int, c: int) -> np.ndarray:
    """Near-constant sub-blocks (a tiny spread around an offset of either sign): huge inverse scales,
    grids far from the data after a fitted min, so the exact-range shortcuts must step aside."""
    off = rng.choice([-1.0, 1.0], (r, c // 16, 1)) * 10.0 ** rng.uniform(-3, 2, (r, c // 16, 1))
    spread = 10.0 ** rng.uniform(-9, -4, (r, c // 16, 1))
    return (off * (1.0 + spread * rng.normal(size=(r, c // 16, 16)))).reshape(r, c)


def _wide(rng: np.random.Generator, r: int, c: int) -> np.ndarray:
    """Magnitudes 1e-3..1e6 per 16-value sub-block: scales beyond the formats' ranges (NVFP4's UE4M3
    scale saturates at 448, so its blocks of |x| > 2688 take ggml's full scan)."""
    sub = 10.0 ** rng.uniform(-3.0, 6.0, (r, c // 16, 1))
    return (rng.normal(size=(r, c // 16, 16)) * sub).reshape(r, c)


def _pow2_edges(rng: np.random.Generator, r: int, c: int) -> np.ndarray:
    """Block maxima just below and at powers of two (2^k (2 - 2^-n)): where log2f rounds up to the next
    integer (MXFP4's E8M0 exponent) and where scale conversions carry into the exponent."""
    x = rng.normal(0.0, 0.3, (r, c // 16, 16))
    k = rng.integers(-20, 20, (r, c // 16, 1)).astype(np.float64)
    n = rng.integers(1, 25, (r, c // 16, 1)).astype(np.float64)
    top = 2.0 ** k * np.where(rng.random((r, c // 16, 1)) < 0.8, 2.0 - 2.0 ** -n, 1.0)
    x = np.clip(x, -0.9, 0.9) * top
    x[..., 3] = top[..., 0] * rng.choice([1.0, -1.0], (r, c // 16))
    return x.reshape(r, c)


DISTS: dict[str, Gen] = {"wide": _wide, "pow2_edges": _pow2_edges, "tiny": _tiny, "narrow": _narrow, "normal": _normal, "student_t": _student_t, "mixed": _mixed_scales, "grid": _grid,
                         "signed_zeros": _signed_zeros}
SHAPES = [(3, 256), (37, 512), (2, 2048)]  # 37 rows: super-block count not a multiple of 8 or 16


def _data(dist: str, shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = DISTS[dist](rng, *shape).astype(np.float32)
    im = rng.lognormal(0.0, 1.0, shape[1]).astype(np.float32)
    return x, im


def _check_against_ggml(ggml, tname: str, x: np.ndarray, im: np.ndarray, what: str) -> None:
    """Bytes and dequantized bits of x, with and without im, equal ggml's (or both refuse without one)."""
    for imatrix in (None, im):
        if imatrix is None and ggml.requires_imatrix(tname):
            with pytest.raises(ValueError, match="importance"):
                quantize(x, tname, None)
            continue
        want = ggml.quantize(tname, x, imatrix)
        got = quantize(x, tname, imatrix)
        bpb = qtypes.get(tname).type_size
        bad = np.any(got.reshape(-1, bpb) != want.reshape(-1, bpb), axis=1)
        assert not bad.any(), f"{tname} {what} imatrix={imatrix is not None}: {bad.sum()}/{bad.size} blocks differ"
        y = dequantize(got, tname, x.shape)
        assert np.array_equal(y.view(np.uint32), ggml.dequantize(tname, want, x.shape[1]).view(np.uint32)), \
            f"{tname} {what}: dequantized bits differ"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dist", list(DISTS))
@pytest.mark.parametrize("tname", NATIVE)
def test_matches_ggml(ggml, tname: str, dist: str, shape: tuple[int, int]) -> None:
    x, im = _data(dist, shape, seed=zlib.crc32(f"{tname}/{dist}/{shape}".encode()))
    _check_against_ggml(ggml, tname, x, im, dist)


@pytest.mark.parametrize("tname", NATIVE)
def test_random_shapes_match_ggml(ggml, tname: str) -> None:
    """Row counts and row lengths drawn at random (any whole number of blocks), every distribution."""
    rng = np.random.default_rng(zlib.crc32(f"shapes/{tname}".encode()))
    bs = qtypes.get(tname).block_size
    for dist in DISTS:
        shape = (int(rng.integers(1, 41)), bs * int(rng.integers(1, 4096 // bs + 1)))
        x, im = _data(dist, shape, seed=int(rng.integers(2**31)))
        _check_against_ggml(ggml, tname, x, im, f"{dist} {shape}")


@pytest.mark.parametrize("tname", NATIVE)
def test_model_tensors_match_ggml(ggml, smollm2_path, tname: str) -> None:
    """Real weights: rows of SmolLM2's tensors (every 2-D shape it has), with a lognormal imatrix."""
    from prism_native.read.model import Model
    m = Model(smollm2_path)
    rng = np.random.default_rng(zlib.crc32(f"model/{tname}".encode()))
    seen = set()
    for t in m.tensors:
        if len(t.shape) != 2 or t.n_per_row % qtypes.get(tname).block_size or t.shape in seen:
            continue
        seen.add(t.shape)
        rows = np.ascontiguousarray(m.read(t)[:8], dtype=np.float32)
        im = rng.lognormal(0.0, 1.0, t.n_per_row).astype(np.float32)
        _check_against_ggml(ggml, tname, rows, im, t.name)


def test_sparse_imatrix_matches_ggml(ggml) -> None:
    """imatrix with exact zeros and a huge dynamic range (zero weights, degenerate weighted fits)."""
    rng = np.random.default_rng(7)
    x = _normal(rng, 19, 768).astype(np.float32)
    im = (10.0 ** rng.uniform(-6, 3, 768)).astype(np.float32)
    im[rng.random(768) < 0.2] = 0.0
    for tname in NATIVE:
        assert np.array_equal(quantize(x, tname, im), ggml.quantize(tname, x, im)), tname


def test_outliers_without_weight_match_ggml(ggml) -> None:
    """Huge values in columns of zero importance beside small weighted ones: IQ2_XXS's first scale
    estimate ignores them, so id*x reaches 1e3..1e9, beyond ggml's nearest_int range (2^22)."""
    rng = np.random.default_rng(13)
    x = _normal(rng, 16, 512)
    im = rng.lognormal(0.0, 1.0, 512)
    cols = np.arange(5, 512, 32)
    im[cols] = 0.0
    x[:, cols] = rng.choice([-1.0, 1.0], (16, cols.size)) * 10.0 ** rng.uniform(0, 7, (16, cols.size))
    x, im = x.astype(np.float32), im.astype(np.float32)
    for tname in [t for t in NATIVE if t.startswith(("IQ2", "IQ1", "IQ3"))]:
        assert np.array_equal(quantize(x, tname, im), ggml.quantize(tname, x, im)), tname


@pytest.fixture(scope="module")
def smollm2_ffn_down(smollm2_path) -> np.ndarray:
    """96 rows of each of three ffn_down weights of SmolLM2 (the file's Q4_1 dequantized: real magnitudes
    and outliers, many tied values); 1536 columns, the model's only row length that is a multiple of 256."""
    import gguf
    reader = gguf.GGUFReader(smollm2_path)
    rows = []
    for t in reader.tensors:
        if t.name in ("blk.0.ffn_down.weight", "blk.14.ffn_down.weight", "blk.29.ffn_down.weight"):
            w = gguf.quants.dequantize(t.data, t.tensor_type).reshape(-1, int(t.shape[0]))
            rows.append(w[:96])
    return np.ascontiguousarray(np.concatenate(rows), dtype=np.float32)


@pytest.mark.parametrize("tname", [t for t in NATIVE if t in LOW_BIT_TYPES])
def test_real_tensors_match_ggml(ggml, smollm2_ffn_down, tname: str) -> None:
    x = smollm2_ffn_down
    rng = np.random.default_rng(11)
    im = (np.mean(x * x, axis=0) * rng.lognormal(0.0, 0.5, x.shape[1])).astype(np.float32)  # activation-like
    _check_against_ggml(ggml, tname, x, im, "SmolLM2 ffn_down")


@pytest.mark.parametrize("tname", NATIVE)
def test_isas_agree(tname: str) -> None:
    """scalar, avx2 and avx512 builds give the same bytes (also a guard against miscompiled mask code)."""
    for dist in ("student_t", "signed_zeros", "tiny", "narrow"):
        x, im = _data(dist, (23, 512), seed=3)
        for imatrix in (None, im):
            try:
                ref = quantize(x, tname, imatrix, isa="scalar")
            except ValueError:  # a type that needs importance weights
                assert imatrix is None
                continue
            for isa in ISAS:
                assert np.array_equal(quantize(x, tname, imatrix, isa=isa), ref), f"{tname} {dist} {isa}"


@pytest.mark.parametrize("tname", NATIVE)
def test_dequantize_any_bytes_like_ggml(ggml, tname: str) -> None:
    """to_float of arbitrary bytes (a file's, not ours): the same bits as ggml's, NaN and Inf scales included."""
    q = qtypes.get(tname)
    nb = 2048
    raw = np.random.default_rng(zlib.crc32(f"bytes/{tname}".encode())).integers(0, 256, (1, nb * q.type_size),
                                                                                 dtype=np.uint8)
    y = dequantize(raw, tname, (1, nb * q.block_size))
    assert np.array_equal(y.view(np.uint32), ggml.dequantize(tname, raw, nb * q.block_size).view(np.uint32))
