"""Bad input to the native quantizers is a ValueError with a clear message; the fused kernel's results
do not depend on the thread count and honour row subsets."""
from __future__ import annotations

import numpy as np
import pytest

import prism_native
from prism_native.quant import dequantize, quant_errors, quantize

X = (np.random.default_rng(1).standard_normal((8, 512)) * 0.02).astype(np.float32)


@pytest.mark.parametrize("bad,match", [
    (np.array([[np.nan] * 256], np.float32), "NaN or Inf"),
    (np.array([[np.inf] * 256], np.float32), "NaN or Inf"),
    (np.zeros((0, 256), np.float32), "empty"),
    (np.zeros((2, 100), np.float32), "multiple"),
    (np.zeros(256, np.float32), "2-D"),
    (np.zeros((2, 256), np.float64), "float32"),
    (np.zeros((2, 256), np.int32), "float32"),
])
def test_bad_input_is_value_error(bad, match):
    with pytest.raises(ValueError, match=match):
        quantize(bad, "Q4_K")


@pytest.mark.parametrize("tname", ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL", "Q2_K", "Q3_K", "Q4_K",
                                   "Q5_K", "Q6_K", "IQ4_XS"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_one_nonfinite_value_anywhere_is_rejected(tname, value):
    """One bad value in an otherwise normal tensor, in the first, a middle and the last block, and in a
    partial last group of blocks (the one-pass row-form kernels check inside the kernel)."""
    for pos in (0, 7 * 512 + 300, 9 * 512 - 1):  # x has 9 rows
        x = np.vstack([X, X[:1]]).copy()
        x.reshape(-1)[pos] = value
        for imatrix in (None, np.ones(512, np.float32)):
            with pytest.raises(ValueError, match="NaN or Inf"):
                quantize(x, tname, imatrix, nthreads=2)
        with pytest.raises(ValueError, match="NaN or Inf"):
            quantize(x.astype(np.float16), tname)


def test_bad_imatrix_and_sizes():
    with pytest.raises(ValueError, match="imatrix"):
        quantize(X, "Q4_K", np.ones(100, np.float32))
    with pytest.raises(ValueError, match="imatrix"):
        quantize(X, "Q4_K", -np.ones(512, np.float32))
    with pytest.raises(ValueError, match="bytes"):
        dequantize(np.zeros(10, np.uint8), "Q4_K", (8, 512))
    with pytest.raises(ValueError, match="no quantizer|unknown"):
        quantize(X, "Q8_1")
    with pytest.raises(ValueError, match="importance"):  # ggml_quantize_requires_imatrix
        quantize(X, "IQ2_XXS")
    with pytest.raises(ValueError, match="out of range"):
        quant_errors(X, ["Q4_K"], rows=np.array([0, 99]))


def test_fused_kernel_threads_and_rows():
    big = np.repeat(X, 64, axis=0)
    one = quant_errors(big, ["Q2_K", "Q4_K", "IQ4_XS"], nthreads=1)
    two = quant_errors(big, ["Q2_K", "Q4_K", "IQ4_XS"], nthreads=2)
    assert one == two
    rows = np.array([1, 3, 5])
    sub = quant_errors(X, ["Q4_K"], rows=rows)[0]
    ref = quant_errors(np.ascontiguousarray(X[rows]), ["Q4_K"])[0]
    assert sub == ref


@pytest.mark.parametrize("isa", prism_native.cpu_features()["usable"])
def test_to_float32_is_exact_for_every_half_and_bfloat(isa, monkeypatch):
    """Every ISA's conversion (the table's half_to_float; $PRISM_ISA picks the table)."""
    from prism_native import _native

    monkeypatch.setenv("PRISM_ISA", isa)
    bits = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    want = bits.view(np.float16).astype(np.float32)
    got = _native.to_float32(bits.view(np.float16), False, 2)
    finite = ~np.isnan(want)
    assert np.array_equal(got.view(np.uint32)[finite], want.view(np.uint32)[finite])
    assert np.isnan(got[~finite]).all()
    assert np.array_equal(_native.to_float32(bits, True, 1).view(np.uint32), bits.astype(np.uint32) << 16)
    odd = bits.reshape(-1)[:7 * 37].reshape(7, 37)  # rows not a multiple of the vector width: the tails
    assert np.array_equal(_native.to_float32(odd, True, 1).view(np.uint32), odd.astype(np.uint32) << 16)


def test_out_buffers_give_the_same_values():
    """to_float32 / dequantize into a caller's reusable buffer (quant.Scratch), larger than needed."""
    from prism_native.quant import Scratch, to_float32

    half = X.astype(np.float16)
    scratch = Scratch()
    buf = scratch.get(X.size + 100)
    assert scratch.get(10) is buf  # reused while large enough
    assert np.array_equal(to_float32(half, out=buf), to_float32(half))
    q = quantize(X, "Q4_K")
    assert np.array_equal(dequantize(q, "Q4_K", X.shape, out=buf), dequantize(q, "Q4_K", X.shape))
    with pytest.raises(ValueError, match="too small"):
        to_float32(half, out=np.empty(10, np.float32))
