"""Bit-exactness against ggml: bytes of ggml_quantize_chunk, floats of to_float, on every ISA path."""
from __future__ import annotations

import numpy as np
import pytest

import prism_native
from prism_native import qtypes
from prism_native.quant import dequantize, quantize
from support.golden import DATASETS, MANIFEST, TYPES, block_mismatches, load

ISAS = prism_native.cpu_features()["usable"]
CASES = ["none", "imat"]


def _implemented(name: str) -> bool:
    return qtypes.get(name).native


@pytest.fixture(scope="module", params=DATASETS)
def dataset(request):
    return request.param, load(request.param)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("tname", TYPES)
def test_quantize_bytes(dataset, tname, case, isa):
    name, d = dataset
    if not _implemented(tname):
        pytest.skip(f"{tname} not implemented")
    key = f"q__{tname}__{case}"
    x = d["x"]
    im = d["imatrix"] if case == "imat" else None
    got = quantize(x, tname, im, isa=isa)
    want = d[key]
    assert got.shape == want.shape
    bad = block_mismatches(got, want, MANIFEST["types"][tname]["bytes_per_block"])
    assert bad == 0, f"{name} {tname} {case} [{isa}]: {bad} blocks differ"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("tname", TYPES)
def test_dequantize_bits(dataset, tname, case):
    name, d = dataset
    if not _implemented(tname):
        pytest.skip(f"{tname} not implemented")
    q = d[f"q__{tname}__{case}"]
    y = dequantize(q, tname, d["x"].shape)
    want = d[f"y__{tname}__{case}"]
    assert np.array_equal(y.view(np.uint32), want.view(np.uint32)), f"{name} {tname} {case}"


@pytest.mark.parametrize("tname", TYPES)
def test_f16_and_bf16_inputs_match_f32(tname):
    if not _implemented(tname):
        pytest.skip(f"{tname} not implemented")
    d = load("gauss")
    x16 = d["x"].astype(np.float16)
    assert np.array_equal(quantize(x16, tname), quantize(x16.astype(np.float32), tname))
    bf = (d["x"].view(np.uint32) >> 16).astype(np.uint16)
    xb = (bf.astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(quantize(bf, tname, bf16=True), quantize(xb, tname))
