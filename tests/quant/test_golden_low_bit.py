"""Bit-exactness of the low-bit types against ggml (tests/data/golden/low-bit): bytes of
ggml_quantize_chunk, floats of to_float, on every ISA path; the imatrix-only types refuse to quantize
without importance weights, as ggml_quantize_chunk does."""
from __future__ import annotations

import numpy as np
import pytest

import prism_native
from prism_native import qtypes
from prism_native.quant import dequantize, quantize
from support.golden import BYTES_PER_BLOCK, LOW_BIT_DATASETS, LOW_BIT_TYPES, block_mismatches, load, not_produced

ISAS = prism_native.cpu_features()["usable"]
CASES = ["none", "imat"]


def _need(tname: str) -> None:
    if tname not in qtypes.all_types() or not qtypes.get(tname).native:
        pytest.skip(f"{tname} not implemented")


@pytest.fixture(scope="module", params=LOW_BIT_DATASETS)
def dataset(request):
    return request.param, load(request.param, "low-bit")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("tname", LOW_BIT_TYPES)
def test_quantize_bytes(dataset, tname, case, isa):
    name, d = dataset
    _need(tname)
    im = d["imatrix"] if case == "imat" else None
    if f"{tname}__{case}" in not_produced(d):
        with pytest.raises(ValueError, match="importance"):
            quantize(d["x"], tname, im, isa=isa)
        return
    got = quantize(d["x"], tname, im, isa=isa)
    want = d[f"q__{tname}__{case}"]
    assert got.shape == want.shape
    bad = block_mismatches(got, want, BYTES_PER_BLOCK[tname])
    assert bad == 0, f"{name} {tname} {case} [{isa}]: {bad} blocks differ"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("tname", LOW_BIT_TYPES)
def test_dequantize_bits(dataset, tname, case):
    name, d = dataset
    _need(tname)
    key = f"q__{tname}__{case}"
    if key not in d:
        pytest.skip(f"ggml makes no {tname} {case} case")
    y = dequantize(d[key], tname, d["x"].shape)
    want = d[f"y__{tname}__{case}"]
    assert np.array_equal(y.view(np.uint32), want.view(np.uint32)), f"{name} {tname} {case}"
