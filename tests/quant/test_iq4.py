"""IQ4_NL / IQ4_XS beyond the golden files: random inputs against ggml itself (when $PRISM_GGML_LIB
names a libggml-base), and the bin widths the fused error kernel uses for boundary density."""
from __future__ import annotations

import numpy as np
import pytest

import prism_native
from prism_native.quant import dequantize, quant_errors, quantize

KVALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32)
ISAS = prism_native.cpu_features()["usable"]


def _inputs(rng: np.random.Generator) -> list[np.ndarray]:
    shape = (24, 512)
    sparse = rng.normal(0, 1e-3, shape)
    sparse[rng.random(shape) < 0.7] = 0.0
    return [x.astype(np.float32) for x in (
        rng.normal(0, 0.02, shape),
        rng.standard_t(2, shape) * 0.02,
        rng.normal(0, 1, shape) * 10.0 ** rng.uniform(-14, 3, (shape[0], 1)),  # underflowing weights, subnormal d
        np.round(rng.normal(0, 4, shape)) / 4,                               # grid values: index ties
        sparse,
    )]


@pytest.mark.parametrize("tname", ["IQ4_NL", "IQ4_XS"])
def test_random_inputs_match_ggml(tname, ggml):
    g = ggml
    rng = np.random.default_rng(7)
    imats = [None, rng.lognormal(0, 2, 512).astype(np.float32),
             np.where(rng.random(512) < 0.2, 0, rng.lognormal(0, 1, 512)).astype(np.float32)]
    for x in _inputs(rng):
        for im in imats:
            want = g.quantize(tname, x, im)
            for isa in ISAS:
                assert np.array_equal(quantize(x, tname, im, isa=isa), want), (tname, isa, im is not None)


def _indices_and_scales(q: np.ndarray, tname: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Grid index and sub-block scale dl of every element, decoded from the ggml block layout."""
    nrows, n = shape
    if tname == "IQ4_NL":
        b = q.reshape(-1, 18)
        d = b[:, :2].copy().view(np.float16).astype(np.float32)  # (nb, 1)
        qs = b[:, 2:]
        idx = np.concatenate([qs & 15, qs >> 4], axis=1)
        dl = np.repeat(d, 32, axis=1)
    else:
        b = q.reshape(-1, 136)
        d = b[:, :2].copy().view(np.float16).astype(np.float32)
        sh = b[:, 2:4].copy().view(np.uint16).astype(np.int32)
        ib = np.arange(8)
        lo = (b[:, 4 + ib // 2] >> (4 * (ib % 2))) & 15
        ls = lo.astype(np.int32) | (((sh >> (2 * ib)) & 3) << 4)
        qs = b[:, 8:].reshape(-1, 8, 16)
        idx = np.concatenate([qs & 15, qs >> 4], axis=2).reshape(-1, 256)
        dl = np.repeat(d * (ls - 32).astype(np.float32), 32, axis=1)
    return idx.reshape(nrows, n).astype(np.int64), dl.reshape(nrows, n)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("tname", ["IQ4_NL", "IQ4_XS"])
@pytest.mark.parametrize("use_imatrix", [False, True])
def test_boundary_counts_use_the_gap_on_the_side_of_x(tname, use_imatrix, isa):
    rng = np.random.default_rng(3)
    x = (rng.standard_t(3, (32, 512)) * 0.02).astype(np.float32)
    x[3] = 0.0                       # zero scale: no bins, not counted
    x[5, :256] *= 1e-20              # scale underflows in fp16
    im = rng.lognormal(0, 1, 512).astype(np.float32) if use_imatrix else None
    delta = 0.15
    q = quantize(x, tname, im, isa=isa)
    y = dequantize(q, tname, x.shape)
    idx, dl = _indices_and_scales(q, tname, x.shape)
    assert np.array_equal(y.view(np.uint32), (dl * KVALUES[idx]).view(np.uint32))
    up = (x > y) == (dl > 0)        # neighbour index above (grid runs backwards when dl < 0)
    nb = np.where(up, idx + 1, idx - 1)
    outside = (nb < 0) | (nb > 15)  # beyond the outermost grid value: unbounded bin
    gap = np.abs(KVALUES[np.clip(nb, 0, 15)] - KVALUES[idx]) * np.abs(dl)
    has_bin = dl != 0
    dist = 0.5 - np.abs(x.astype(np.float64) - y) / np.where(outside | ~has_bin, np.inf, gap)
    near = has_bin & (dist >= 0) & (dist < delta)
    w = im if im is not None else np.ones(512, np.float32)
    (s,) = quant_errors(x, [tname], im, delta=delta, isa=isa)
    assert s.counted == int(has_bin.sum())
    assert s.near_boundary == int(near.sum())
    assert 0 < s.near_boundary < s.counted
    err = float(np.sum(w * (x.astype(np.float64) - y) ** 2))
    assert s.err == pytest.approx(err, rel=1e-9)
